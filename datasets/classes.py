"""Built-in class lists and the ``classes.txt`` file format (its one reader and writer).

``classes.txt`` holds one class name per line, in label-index order. Every preparation script
writes one next to its JSON splits and train.py writes one into its save_dir, so that
training, evaluation and prediction agree on the class order. Format rules
(:func:`read_class_file`):

* UTF-8 (a byte-order mark is ignored); spaces around a name are removed, spaces inside a
  name are kept (``traffic light``);
* a line whose first non-space character is ``#`` is a comment and is ignored;
* blank lines are allowed only at the end of the file: every other line is one class, so a
  blank line before or between names is refused (it would shift the label indices);
* names are unique.

Which class list a script uses is decided by ``datasets.config.resolve_classes``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from utils.errors import UserError

#: PASCAL VOC 2007/2012, in the standard (alphabetical) order.
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

#: MS-COCO 2014/2017 instances, in ascending category-id order (ids 1..90 with gaps).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)

#: WIDER Attribute, in the order of the dataset's ``attribute_id_map``. The dataset and the
#: reference code spell the fifth attribute "Tshiirt"; this project uses "Tshirt". Only the
#: name differs: index 4 is the same attribute.
WIDER_ATTRIBUTES: tuple[str, ...] = (
    "Male", "longHair", "sunglass", "Hat", "Tshirt", "longSleeve", "formal", "shorts",
    "jeans", "longPants", "skirt", "faceMask", "logo", "stripe",
)

#: Spellings found in the original WIDER files, mapped to the names used here.
WIDER_ALIASES: dict[str, str] = {"Tshiirt": "Tshirt"}

#: Class lists by dataset name (the ``--dataset`` values used across the project).
BUILTIN_CLASSES: dict[str, tuple[str, ...]] = {
    "voc07": VOC_CLASSES,
    "coco": COCO_CLASSES,
    "wider": WIDER_ATTRIBUTES,
}


def read_class_file(path: str | os.PathLike[str]) -> list[str]:
    """Read a ``classes.txt`` file (the format rules are in the module docstring).

    Args:
        path: the class file.
    Returns:
        the C class names, in label-index order.
    Raises:
        UserError: the file is missing, unreadable, not UTF-8 or holds no name, has a blank
            line before or between names, or lists a name twice (the message names the file
            and the line).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise UserError(f"class file {p} does not exist; give an existing classes.txt "
                        "(one class name per line)") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"class file {p} is not UTF-8 text; save it as UTF-8, one class "
                        "name per line") from exc
    except OSError as exc:
        raise UserError(f"cannot read class file {p}: {exc.strerror or exc}") from exc

    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, name in enumerate(lines, start=1):
        if name.startswith("#"):
            continue
        if not name:
            raise UserError(f"class file {p}, line {lineno}: blank line before or between class names; "
                            "remove it (every line is one class, in label order)")
        if name in seen:
            raise UserError(f"class file {p}, line {lineno}: class '{name}' is already listed "
                            f"on line {seen[name]}; class names must be unique")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise UserError(f"class file {p} is empty; write one class name per line")
    return names


def write_class_file(path: str | os.PathLike[str], names: Sequence[str]) -> Path:
    """Write ``names`` to a class file, one per line, in the given order.

    Args:
        path: destination file (its folder must exist).
        names: class names; must be non-empty, unique, and contain no line breaks.
    Returns:
        the destination as a ``Path``.
    Raises:
        UserError: if the names cannot be stored in the one-per-line format.
    """
    p = Path(path)
    if not names:
        raise UserError(f"refusing to write {p}: the class list is empty")
    seen: set[str] = set()
    for name in names:
        if not name or name != name.strip() or "\n" in name or "\r" in name or name.startswith("#"):
            raise UserError(f"class name {name!r} cannot be stored in {p}: names must be "
                            "non-empty, on one line, without surrounding spaces, and not start "
                            "with '#' (a comment in classes.txt)")
        if name in seen:
            raise UserError(f"class name '{name}' appears twice; cannot write {p}")
        seen.add(name)
    p.write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
    return p
