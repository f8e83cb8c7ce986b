"""The one reader of prepared split JSON files (training, validation and ``evaluation.evaluate``).

A prepared split is a JSON list of ``{"target": [C numbers], "img_path": "...", optional
"bbox": [x, y, w, h]}`` entries (see the spec, section 3), written by the
``datasets.prepare`` scripts. Targets are returned as stored: VOC test keeps 1 / -1 / 0
(0 = difficult), WIDER test keeps 99 (unspecified); the loss and the metrics decide what
those values mean.

Rules (every split that reaches training, val.py or ``python -m evaluation.evaluate`` is
checked by :func:`read_split`, with one message naming the file and the entry):

* the file is UTF-8 JSON holding a non-empty list;
* every entry is an object with ``img_path`` (a non-empty string) and ``target`` (a list of
  finite numbers, booleans refused), all targets of one length C (or of the given class
  count), C >= 1;
* ``bbox``, when present, is 4 finite numbers;
* other keys are ignored.

This module does not import Paddle.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.fileio import read_json

_NUMBER_TYPES = (int, float)  # compared with type(): bool is rejected
_HINT = "regenerate it with the datasets.prepare_* scripts or fix that entry"


def _is_number(v: Any) -> bool:
    """True for a finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _read_json(p: Path) -> Any:
    """Decode the split file ``p``; UserError naming it when missing, unreadable or invalid."""
    return read_json(p, "annotation file", "create it with the datasets.prepare_* scripts, or give the split's .json file")


def read_split(json_path: str | os.PathLike[str], num_classes: int | None = None,
               classes_source: str = "") -> tuple[list[dict[str, Any]], np.ndarray]:
    """Read and validate a prepared split JSON (the rules are in the module docstring).

    Args:
        json_path: the JSON file (a list of entries).
        num_classes: expected target length C; None takes the first entry's length and
            requires all entries to agree.
        classes_source: where ``num_classes`` came from (e.g. ``"class list classes.txt"``),
            for the error message.
    Returns:
        (entries, targets): ``entries`` are N dicts with ``img_path`` (str, as written) and,
        when present, ``bbox`` (list of 4 floats); ``targets`` is a float32 array [N, C] of
        the raw label values.
    Raises:
        UserError: unreadable or invalid JSON, not a non-empty list, an entry that is not
            an object, a missing / wrongly typed ``img_path`` or ``target``, a target of the
            wrong length, a non-numeric or non-finite target value, a bad ``bbox``. The
            message names the file and the entry index.
    """
    p = Path(json_path)
    data = _read_json(p)
    if not isinstance(data, list):
        raise UserError(
            f"{p} must hold a JSON list of {{\"target\": [...], \"img_path\": \"...\"}} "
            f"entries, found a {type(data).__name__}; {_HINT}"
        )
    if not data:
        raise UserError(f"{p} holds an empty list: the split has no images; {_HINT}")

    expected = num_classes
    source = classes_source or "the first entry"
    entries: list[dict[str, Any]] = []
    rows: list[list[float]] = []
    for i, item in enumerate(data):
        where = f"{p}: entry {i}"
        if not isinstance(item, dict):
            raise UserError(f"{where} is a {type(item).__name__}, expected an object; {_HINT}")
        for key in ("target", "img_path"):
            if key not in item:
                raise UserError(f"{where} has no {key!r} key (keys: {sorted(item)}); {_HINT}")
        img_path = item["img_path"]
        if not isinstance(img_path, str) or not img_path.strip():
            raise UserError(f"{where}: 'img_path' must be a non-empty string, got {img_path!r}; {_HINT}")
        target = item["target"]
        if not isinstance(target, list):
            raise UserError(f"{where}: 'target' must be a list of numbers, got {target!r}; {_HINT}")
        if expected is None:
            expected = len(target)
            if expected == 0:
                raise UserError(f"{where}: 'target' is empty; {_HINT}")
        if len(target) != expected:
            raise UserError(
                f"{where}: 'target' has {len(target)} values but {source} gives "
                f"{expected} classes; use the class list the JSON was prepared with, or {_HINT}"
            )
        if not all(type(v) in _NUMBER_TYPES for v in target):  # fast path for big splits
            j, v = next((j, v) for j, v in enumerate(target) if type(v) not in _NUMBER_TYPES)
            raise UserError(
                f"{where}: target value {j} is {v!r}, expected a number "
                f"(e.g. 1, 0, -1 or 99); {_HINT}"
            )
        entry: dict[str, Any] = {"img_path": img_path}
        if "bbox" in item:
            bbox = item["bbox"]
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(_is_number(v) for v in bbox)):
                raise UserError(f"{where}: 'bbox' must be [x, y, w, h] (4 numbers), got {bbox!r}; {_HINT}")
            entry["bbox"] = [float(v) for v in bbox]
        entries.append(entry)
        rows.append(target)
    targets = np.asarray(rows, dtype=np.float32).reshape(len(rows), expected)
    bad = ~np.isfinite(targets)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise UserError(
            f"{p}: entry {i}: target value {j} is {rows[i][j]!r}, expected a finite number; {_HINT}"
        )
    return entries, targets
