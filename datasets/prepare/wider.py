"""Prepare WIDER Attribute for training: one JSON entry per person, plus classes.txt.

Usage (from the repository root):
    python -m datasets.prepare.wider --data_path /data/WIDER --out_dir data/wider
"""
from __future__ import annotations

import argparse
import sys
from numbers import Real
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from datasets.classes import WIDER_ALIASES, WIDER_ATTRIBUTES, write_class_file
from datasets.prepare.common import (ensure_out_dir, format_img_path, read_json,
                               require_dir, require_file, write_json_list)
from utils.errors import UserError, run_cli
from utils.logger import get_logger

log = get_logger("prepare")

WIDER_LAYOUT_HINT = ("<data_path>/Annotations/wider_attribute_{trainval,test}.json and the "
                     "images under <data_path>/Image/<file_name>")

#: Value stored for an unspecified attribute in the test split (ignored by evaluation).
IGNORE_LABEL = 99

EPILOG = f"""\
output (in --out_dir):
  trainval_wider.json, test_wider.json  one entry per annotated person:
      {{"target": [14 labels], "img_path": ..., "bbox": [x, y, w, h]}}
      labels: 1 -> 1, -1 -> 0, 0 (unspecified) -> 0 in trainval and {IGNORE_LABEL} in test
  classes.txt  the 14 attribute names (the dataset's "Tshiirt" is written "Tshirt")

errors (exit status 2, nothing written):
  missing Annotations/*.json or Image/ folder; invalid JSON (file, line, column); an image
  without file_name; a person whose attribute list does not have 14 values in -1/0/1 or
  whose bbox is not 4 numbers; an image file that does not exist.
warnings (processing continues):
  images with no annotated person (count logged); attribute names in attribute_id_map that
  differ from the standard ones; missing image files, with --skip_missing.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this script."""
    parser = argparse.ArgumentParser(
        prog="prepare_wider.py",
        description="Turn WIDER Attribute annotations into the project's JSON splits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True,
                        help="WIDER Attribute root holding Annotations/ and Image/")
    parser.add_argument("--out_dir", required=True, help="output folder, created if needed")
    parser.add_argument("--absolute", action="store_true", help="store absolute image paths")
    parser.add_argument("--skip_missing", action="store_true",
                        help="leave out images whose file is missing (warn once) instead of "
                             "failing")
    return parser


def encode_wider_attributes(values: Sequence[int], test: bool) -> list[int]:
    """Map raw WIDER attribute values to training/evaluation labels.

    Args:
        values: raw values, 1 (present), -1 (absent) or 0 (unspecified).
        test: True for the test split, where unspecified becomes ``IGNORE_LABEL`` (99).
    Returns:
        the labels: 1 stays 1, -1 becomes 0, 0 becomes 0 (trainval) or 99 (test).
    """
    unspecified = IGNORE_LABEL if test else 0
    return [1 if v == 1 else (unspecified if v == 0 else 0) for v in values]


def build_wider_split(data: dict[str, Any], ann_path: Path, image_dir: Path, *, test: bool,
                      absolute: bool = False, skip_missing: bool = False) -> list[dict[str, Any]]:
    """Build one prepared WIDER split, one entry per person.

    Args:
        data: the decoded ``wider_attribute_<split>.json``.
        ann_path: the file it came from, for messages.
        image_dir: the ``Image`` folder (built from the user's path).
        test: True for the test split (unspecified -> 99).
        absolute: store absolute image paths.
        skip_missing: leave out images whose file is missing instead of raising.
    Returns:
        ``[{"target": [...14], "img_path": ..., "bbox": [x, y, w, h]}, ...]``.
    Raises:
        UserError: for malformed records or (unless ``skip_missing``) missing images.
    """
    images = data.get("images")
    if not isinstance(images, list):
        raise UserError(f"{ann_path}: no 'images' list; is this a WIDER Attribute file?")
    n_attr = len(WIDER_ATTRIBUTES)
    entries: list[dict[str, Any]] = []
    missing: list[str] = []
    empty = 0
    for i, image in enumerate(tqdm(images, desc=ann_path.stem, unit="img", disable=None)):
        name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(name, str) or not name:
            raise UserError(f"{ann_path}: image #{i} has no 'file_name'")
        targets = image.get("targets") or []
        if not targets:
            empty += 1
            continue
        img_path = image_dir / name
        if not img_path.is_file():
            missing.append(name)
            continue
        for k, person in enumerate(targets):
            where = f"{ann_path}: image {name}, person #{k}"
            attrs = person.get("attribute") if isinstance(person, dict) else None
            if (not isinstance(attrs, list) or len(attrs) != n_attr
                    or any(v not in (-1, 0, 1) or isinstance(v, bool) for v in attrs)):
                raise UserError(f"{where}: 'attribute' must be {n_attr} values in -1/0/1, "
                                f"got {attrs!r}")
            bbox = person.get("bbox")
            if (not isinstance(bbox, list) or len(bbox) != 4
                    or not all(isinstance(v, Real) and not isinstance(v, bool) for v in bbox)):
                raise UserError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}")
            entries.append({"target": encode_wider_attributes(attrs, test),
                            "img_path": format_img_path(img_path, absolute),
                            "bbox": list(bbox)})
    if empty:
        log.info("%s: %d images have no annotated person and are left out", ann_path.name, empty)
    if missing:
        if not skip_missing:
            more = f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else ""
            raise UserError(f"image {image_dir / missing[0]} listed in {ann_path} does not "
                            f"exist{more}; download the images or pass --skip_missing")
        log.warning("%s: skipping %d images whose file is missing (first: %s)",
                    ann_path.name, len(missing), image_dir / missing[0])
    return entries


def check_attribute_names(data: dict[str, Any], ann_path: Path) -> None:
    """Warn if the file's ``attribute_id_map`` differs from ``WIDER_ATTRIBUTES``.

    Args:
        data: the decoded annotation file.
        ann_path: the file, for messages.
    """
    id_map = data.get("attribute_id_map")
    if not isinstance(id_map, dict):
        return
    try:
        names = [WIDER_ALIASES.get(str(v), str(v))
                 for _, v in sorted(id_map.items(), key=lambda kv: int(kv[0]))]
    except ValueError:
        log.warning("%s: attribute_id_map keys are not integers; not checked", ann_path)
        return
    if names != list(WIDER_ATTRIBUTES):
        log.warning("%s: attribute_id_map %s differs from the standard order %s; labels keep "
                    "the file's order", ann_path, names, list(WIDER_ATTRIBUTES))


def prepare_wider(data_path: str, out_dir: str, *, absolute: bool = False,
                  skip_missing: bool = False) -> dict[str, Path]:
    """Write ``trainval_wider.json``, ``test_wider.json`` and ``classes.txt``.

    Args:
        data_path: the WIDER Attribute root folder.
        out_dir: output folder, created if needed.
        absolute: store absolute image paths.
        skip_missing: leave out images whose file is missing instead of raising.
    Returns:
        ``{"trainval": path, "test": path, "classes": path}``.
    Raises:
        UserError: for a missing layout, malformed annotations or missing images.
    """
    root = require_dir(data_path, WIDER_LAYOUT_HINT)
    image_dir = require_dir(root / "Image", WIDER_LAYOUT_HINT)
    ann_paths = {split: require_file(root / "Annotations" / f"wider_attribute_{split}.json",
                                     WIDER_LAYOUT_HINT) for split in ("trainval", "test")}
    loaded: dict[str, dict[str, Any]] = {}
    for split, ann_path in ann_paths.items():  # read both first: fail before any work
        data = read_json(ann_path)
        if not isinstance(data, dict):
            raise UserError(f"{ann_path}: expected a JSON object with an 'images' list")
        loaded[split] = data
    results: dict[str, list[dict[str, Any]]] = {}
    for split, data in loaded.items():
        ann_path = ann_paths[split]
        check_attribute_names(data, ann_path)
        results[split] = build_wider_split(data, ann_path, image_dir, test=split == "test",
                                           absolute=absolute, skip_missing=skip_missing)
        if not results[split]:
            raise UserError(f"{ann_path}: no annotated person found; check the file")

    out = ensure_out_dir(out_dir)
    written: dict[str, Path] = {}
    for split, entries in results.items():
        written[split] = write_json_list(out / f"{split}_wider.json", entries)
        log.info("wrote %s (%d persons)", written[split], len(entries))
    written["classes"] = write_class_file(out / "classes.txt", WIDER_ATTRIBUTES)
    log.info("wrote %s (%d attributes)", written["classes"], len(WIDER_ATTRIBUTES))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors raise ``UserError``)."""
    args = build_parser().parse_args(argv)
    prepare_wider(args.data_path, args.out_dir, absolute=args.absolute,
                  skip_missing=args.skip_missing)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
