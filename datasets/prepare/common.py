"""Small file helpers shared by the dataset preparation scripts.

Everything here either succeeds or raises ``UserError`` with one message that names the
offending file and says what to do about it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from datasets.image_io import IMAGE_EXTENSIONS  # noqa: F401 - the one list of image endings, re-exported
from utils.errors import UserError
from utils.fileio import read_json  # noqa: F401 - the one JSON reader, used by the prepare scripts


def ensure_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder (with parents) if needed.

    Args:
        path: the folder the prepared files go to.
    Returns:
        the folder as a ``Path``.
    Raises:
        UserError: if the path exists and is not a folder, or cannot be created.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out_dir {out} exists and is not a folder; choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    return out


def require_dir(path: str | os.PathLike[str], layout_hint: str) -> Path:
    """Check that ``path`` is an existing folder.

    Args:
        path: the folder that must exist.
        layout_hint: one sentence describing the expected layout, appended to the message.
    Returns:
        the folder as a ``Path``.
    Raises:
        UserError: naming the missing folder and the expected layout.
    """
    p = Path(path)
    if not p.is_dir():
        what = "is not a folder" if p.exists() else "does not exist"
        raise UserError(f"{p} {what}. Expected layout: {layout_hint}")
    return p


def require_file(path: str | os.PathLike[str], layout_hint: str) -> Path:
    """Check that ``path`` is an existing regular file.

    Args:
        path: the file that must exist.
        layout_hint: one sentence describing the expected layout, appended to the message.
    Returns:
        the file as a ``Path``.
    Raises:
        UserError: naming the missing file and the expected layout.
    """
    p = Path(path)
    if not p.is_file():
        what = "is not a file" if p.exists() else "does not exist"
        raise UserError(f"{p} {what}. Expected layout: {layout_hint}")
    return p


def write_json_list(path: str | os.PathLike[str], entries: Sequence[dict[str, Any]]) -> Path:
    """Write a prepared split (a JSON list of entries) atomically.

    The file is written to ``<path>.tmp`` first and renamed, so an interrupted run never
    leaves a truncated split behind.

    Args:
        path: destination ``.json`` file; its folder must exist.
        entries: the split, e.g. ``[{"target": [1, 0], "img_path": "a.jpg"}, ...]``.
    Returns:
        the destination as a ``Path``.
    """
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(list(entries), fh, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, p)
    return p


def format_img_path(path: str | os.PathLike[str], absolute: bool) -> str:
    """Turn an image path into the string stored in a split.

    Args:
        path: the path as built from the user's ``--data_path`` (relative or absolute).
        absolute: make it absolute (resolved against the current folder).
    Returns:
        the path as a string, with forward slashes on every platform.
    """
    s = os.path.abspath(path) if absolute else os.fspath(path)
    return s.replace(os.sep, "/") if os.sep != "/" else s

