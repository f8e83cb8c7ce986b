"""Evaluate saved predictions against a prepared dataset JSON.

Usage::

    python -m evaluation.evaluate --pred scores.json --ann data/voc07/test_voc07.json --dataset voc07
        [--threshold 0.5] [--classes classes.txt] [--json_out metrics.json]

``--pred`` is a JSON list of ``{"img_path": str, "scores": [C floats]}`` (sigmoid
probabilities); ``--ann`` is the prepared dataset JSON, a list of ``{"target": [C],
"img_path": str, optional "bbox": [x, y, w, h]}``, read and checked by
``datasets.splits.read_split`` (the reader training and val.py use).

Predictions are matched to annotations by image path (``os.path.normpath`` on both
sides), not by position, so the prediction file may be in any order. When *every* entry of
both files carries a ``"bbox"`` (WIDER Attribute: one entry per person), the key is
``(path, bbox)``. Otherwise the key is the path alone, and entries sharing a path are
paired in order of appearance (the k-th prediction for a path goes with the k-th
annotation for that path). The output rows follow the annotation order.

Prints the reference's three lines (``mAP``, ``CP/CR/CF1``, ``OP/OR/OF1``) and then a
per-class AP table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, Hashable, Sequence

if __package__ in (None, ""):  # run as a file (python evaluation/evaluate.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import atomic_write_text, read_json  # noqa: E402
from utils.logger import get_logger  # noqa: E402
from evaluation.metrics import (  # noqa: E402
    NO_POSITIVE_CHOICES,
    POLICIES,
    LabelEncodingError,
    evaluate,
    format_class_table,
    format_reference_lines,
)

log = get_logger("evaluate")

_SHOW = 5  # how many example paths an error message lists


def load_json_list(path: str | os.PathLike[str], what: str) -> list[dict[str, Any]]:
    """Read a JSON file that must hold a list of objects.

    Args:
        path: file to read.
        what: what the file is, for messages (e.g. ``"prediction file"``).
    Returns:
        the list of dicts.
    Raises:
        UserError: missing/unreadable file, invalid JSON, or not a list of objects.
    """
    p = Path(path)
    data = read_json(p, what, "check the path, regenerate the file or fix it")
    if not isinstance(data, list):
        raise UserError(f"{what} {p} must hold a JSON list of objects, found a {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise UserError(f"{what} {p}: entry {i} is a {type(entry).__name__}, expected an object")
    return data


def _numbers(entry: dict[str, Any], key: str, index: int, source: str) -> list[float]:
    values = entry.get(key)
    if not isinstance(values, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        raise UserError(f"{source}: entry {index} needs \"{key}\" as a list of numbers")
    return values


def _path(entry: dict[str, Any], index: int, source: str) -> str:
    p = entry.get("img_path")
    if not isinstance(p, str) or not p:
        raise UserError(f"{source}: entry {index} has no \"img_path\" string")
    return os.path.normpath(p)


def _bbox(entry: dict[str, Any]) -> tuple[float, ...]:
    return tuple(float(v) for v in entry["bbox"])


def _first(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (", ..." if len(items) > _SHOW else "")


def match_predictions(
    pred_entries: Sequence[dict[str, Any]],
    ann_entries: Sequence[dict[str, Any]],
    pred_name: str = "predictions",
    ann_name: str = "annotations",
) -> tuple[np.ndarray, np.ndarray]:
    """Pair prediction entries with annotation entries by image path.

    Keys are ``os.path.normpath(img_path)``, or ``(path, bbox)`` when every entry on both
    sides has a ``"bbox"``; entries with equal keys are paired in order of appearance.

    Args:
        pred_entries: N dicts ``{"img_path": str, "scores": [C floats]}``.
        ann_entries: N dicts ``{"img_path": str, "target": [C numbers], ...}``.
        pred_name: name of the prediction source, used in error messages.
        ann_name: name of the annotation source, used in error messages.
    Returns:
        ``(scores [N, C] float64, targets [N, C] float64)`` in annotation order.
    Raises:
        UserError: malformed entries, inconsistent class counts, missing or extra images.
    """
    if not ann_entries:
        raise UserError(f"{ann_name} holds no entries; nothing to evaluate")
    targets = [_numbers(e, "target", i, ann_name) for i, e in enumerate(ann_entries)]
    n_classes = len(targets[0])
    for i, t in enumerate(targets):
        if len(t) != n_classes:
            raise UserError(
                f"{ann_name}: entry {i} has {len(t)} targets but entry 0 has {n_classes}; "
                "every entry needs one target per class"
            )
    use_bbox = all("bbox" in e for e in ann_entries) and all("bbox" in e for e in pred_entries)

    def key_of(entry: dict[str, Any], index: int, source: str) -> Hashable:
        path = _path(entry, index, source)
        if not use_bbox:
            return path
        try:
            return (path, _bbox(entry))
        except (TypeError, ValueError):
            raise UserError(f"{source}: entry {index} has a \"bbox\" that is not a list of numbers") from None

    def describe(key: Hashable) -> str:
        return f"{key[0]} bbox={list(key[1])}" if isinstance(key, tuple) else str(key)

    slots: dict[Hashable, deque[int]] = defaultdict(deque)
    for i, entry in enumerate(ann_entries):
        slots[key_of(entry, i, ann_name)].append(i)

    scores = np.empty((len(ann_entries), n_classes), dtype=np.float64)
    filled = np.zeros(len(ann_entries), dtype=bool)
    extra: list[str] = []
    for j, entry in enumerate(pred_entries):
        key = key_of(entry, j, pred_name)
        row = _numbers(entry, "scores", j, pred_name)
        queue = slots.get(key)
        if not queue:
            extra.append(describe(key))
            continue
        i = queue.popleft()
        if len(row) != n_classes:
            raise UserError(
                f"{pred_name}: entry {j} ({describe(key)}) has {len(row)} scores but {ann_name} has "
                f"{n_classes} targets per image; predictions and annotations must use the same classes"
            )
        scores[i] = row
        filled[i] = True

    missing = [describe(key_of(ann_entries[i], i, ann_name)) for i in np.flatnonzero(~filled)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} annotated image(s) have no prediction (first: {_first(missing)})")
    if extra:
        problems.append(f"{len(extra)} prediction(s) match no annotated image (first: {_first(extra)})")
    if problems:
        raise UserError(
            f"{pred_name} does not match {ann_name}: " + "; ".join(problems)
            + ". Predict on the same split, and keep img_path as written in the annotation file"
        )
    if not np.isfinite(scores).all():
        raise UserError(f"{pred_name} contains NaN or infinite scores")
    return scores, np.asarray(targets, dtype=np.float64)


def resolve_class_names(
    n_classes: int, dataset: str, classes_file: str | None, ann_path: str | os.PathLike[str]
) -> list[str]:
    """Class names for the report, found by ``datasets.config.resolve_classes`` (``--classes``,
    else ``classes.txt`` beside the annotations, else the built-in list of ``dataset``), else
    ``class_<i>``.

    Args:
        n_classes: C, the number of classes in the targets.
        dataset: the ``--dataset`` label policy; its built-in list is used when it is also a
            dataset name (voc07, coco, wider).
        classes_file: explicit names file (one name per line) or None.
        ann_path: annotation JSON path (its folder is searched for ``classes.txt``).
    Returns:
        C names.
    Raises:
        UserError: the explicit ``classes_file`` (or a ``classes.txt`` found) is unreadable, or
            the explicit file has the wrong length.
    """
    from datasets.config import DATASETS, resolve_classes  # the one class-name rule

    names, source = resolve_classes(dataset if dataset in DATASETS else None, classes_file, ann_path, required=False)
    if not names:  # no names anywhere: numbered
        return [f"class_{i}" for i in range(n_classes)]
    if len(names) == n_classes:
        return names
    if classes_file:
        raise UserError(
            f"class names file {classes_file} lists {len(names)} names but the targets have "
            f"{n_classes} classes; give one name per line, in class order"
        )
    log.warning("ignoring the class names of %s: %d names for %d classes", source, len(names), n_classes)
    return [f"class_{i}" for i in range(n_classes)]


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of ``python -m evaluation.evaluate``."""
    ap = argparse.ArgumentParser(
        prog="python -m evaluation.evaluate",
        description="Compute mAP, CP/CR/CF1 and OP/OR/OF1 of saved predictions, matched to the "
        "annotations by image path.",
    )
    ap.add_argument("--pred", type=Path, required=True, help="prediction JSON: list of {img_path, scores}")
    ap.add_argument("--ann", type=Path, required=True, help="prepared dataset JSON: list of {img_path, target}")
    ap.add_argument(
        "--dataset",
        choices=sorted(POLICIES),
        default="binary",
        help="label encoding: voc07 (1/-1/0, 0 = difficult, ignored), wider (0/1/99, 99 ignored "
        "for AP), coco/custom/binary (0/1). Default: binary",
    )
    ap.add_argument("--threshold", type=float, default=0.5, help="score >= threshold is a positive (default 0.5)")
    ap.add_argument("--classes", type=str, default=None, help="class names file, one per line")
    ap.add_argument(
        "--no_positive",
        choices=NO_POSITIVE_CHOICES,
        default="exclude",
        help="classes without positives: left out of the means (exclude, default) or counted as 0",
    )
    ap.add_argument("--json_out", type=Path, default=None, help="also write all metrics to this JSON file")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; see the module docstring. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if not math.isfinite(args.threshold):
        raise UserError(f"--threshold must be a finite number, got {args.threshold}")
    preds = load_json_list(args.pred, "prediction file")
    from datasets.splits import read_split  # the one split reader

    entries, targets = read_split(args.ann)
    anns = [{**entry, "target": row} for entry, row in zip(entries, targets.tolist())]
    scores, targets = match_predictions(
        preds, anns, pred_name=f"prediction file {args.pred}", ann_name=f"annotation file {args.ann}"
    )
    names = resolve_class_names(scores.shape[1], args.dataset, args.classes, args.ann)
    log.info("evaluating %d images x %d classes (%s labels)", scores.shape[0], scores.shape[1], args.dataset)
    try:
        result = evaluate(
            scores, targets, policy=args.dataset, threshold=args.threshold, class_names=names,
            no_positive=args.no_positive,
        )
    except LabelEncodingError as exc:
        raise UserError(f"annotation file {args.ann}: {exc}") from None
    print(format_reference_lines(result))
    print(format_class_table(result))
    if args.json_out is not None:
        try:
            atomic_write_text(args.json_out, json.dumps(result.to_dict(), indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"cannot write metrics to {args.json_out}: {exc}") from None
        log.info("metrics written to %s", args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
