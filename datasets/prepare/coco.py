"""Prepare MS-COCO 2014 / 2017 for multi-label training: JSON splits plus classes.txt.

Usage (from the repository root):
    python -m datasets.prepare.coco --data_path /data/coco --out_dir data/coco
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from datasets.classes import COCO_CLASSES, write_class_file
from datasets.prepare.common import (ensure_out_dir, format_img_path, read_json,
                               require_dir, require_file, write_json_list)
from utils.errors import UserError, run_cli
from utils.logger import get_logger

log = get_logger("prepare")

COCO_LAYOUT_HINT = ("<data_path>/annotations/instances_{train,val}<year>.json and the images "
                    "under <data_path>/train<year>/ and <data_path>/val<year>/")

EPILOG = """\
output (in --out_dir):
  train_cocoYYYY.json, val_cocoYYYY.json  lists of {"target": [80 x 0/1], "img_path": ...};
      label index = position of the category in ascending category-id order
  classes.txt  the category names in that order (from the annotation file)

errors (exit status 2, nothing written):
  missing annotations/instances_*.json or image folder; invalid JSON (file, line, column);
  missing images/annotations/categories keys; duplicate image ids; an annotation whose
  category_id is not among the categories; train and val with different categories;
  an annotated image whose file is missing from the image folder.
warnings (processing continues):
  images without any annotation are left out (count logged); annotations that point to
  an unknown image id are ignored; category names that differ from the standard 80;
  missing image files, with --skip_missing.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this script."""
    parser = argparse.ArgumentParser(
        prog="prepare_coco.py",
        description="Turn MS-COCO instance annotations into the project's JSON splits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True,
                        help="COCO root holding annotations/, train<year>/ and val<year>/")
    parser.add_argument("--out_dir", required=True, help="output folder, created if needed")
    parser.add_argument("--year", type=int, choices=(2014, 2017), default=2014,
                        help="COCO edition (default: 2014, as in the paper)")
    parser.add_argument("--absolute", action="store_true", help="store absolute image paths")
    parser.add_argument("--skip_missing", action="store_true",
                        help="leave out annotated images whose file is missing (warn once) "
                             "instead of failing")
    return parser


def coco_categories(data: dict[str, Any], path: Path) -> tuple[list[int], list[str]]:
    """Return the category ids and names of a COCO instances file, sorted by id.

    Args:
        data: the decoded instances JSON.
        path: its file, for messages.
    Returns:
        ``(ids, names)`` in ascending id order; label index i is category ``ids[i]``.
    Raises:
        UserError: if ``categories`` is missing, empty or malformed, or ids repeat.
    """
    cats = data.get("categories")
    if not isinstance(cats, list) or not cats:
        raise UserError(f"{path}: no 'categories' list; is this a COCO instances file?")
    try:
        pairs = sorted((int(c["id"]), str(c["name"])) for c in cats)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: every category needs an integer 'id' and a 'name'") from exc
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: category ids are not unique")
    return ids, [n for _, n in pairs]


def coco_label_matrix(data: dict[str, Any], cat_ids: Sequence[int],
                      path: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Compute the binary label matrix of a COCO split (vectorised over annotations).

    Args:
        data: the decoded instances JSON (``images`` and ``annotations`` lists).
        cat_ids: category ids in label order (from ``coco_categories``).
        path: the file, for messages.
    Returns:
        ``(images, labels)``: the image records in file order and a ``uint8`` array of shape
        ``[len(images), len(cat_ids)]`` with 1 where the image has at least one annotation of
        the class (crowd annotations included).
    Raises:
        UserError: for missing keys, duplicate image ids or unknown category ids.
    """
    images, anns = data.get("images"), data.get("annotations")
    if not isinstance(images, list) or not isinstance(anns, list):
        raise UserError(f"{path}: expected 'images' and 'annotations' lists; "
                        "is this a COCO instances file?")
    try:
        img_ids = np.fromiter((im["id"] for im in images), dtype=np.int64, count=len(images))
        ann_img = np.fromiter((a["image_id"] for a in anns), dtype=np.int64, count=len(anns))
        ann_cat = np.fromiter((a["category_id"] for a in anns), dtype=np.int64, count=len(anns))
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: every image needs an 'id' and every annotation an "
                        f"'image_id' and a 'category_id' (problem: {exc!r})") from exc

    order = np.argsort(img_ids, kind="stable")
    sorted_ids = img_ids[order]
    if sorted_ids.size > 1 and np.any(sorted_ids[1:] == sorted_ids[:-1]):
        dup = int(sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0])
        raise UserError(f"{path}: image id {dup} appears more than once in 'images'")

    cats = np.asarray(cat_ids, dtype=np.int64)
    col = np.searchsorted(cats, ann_cat)
    col_ok = (col < cats.size) & (cats[np.minimum(col, cats.size - 1)] == ann_cat)
    if not col_ok.all():
        bad = int(ann_cat[~col_ok][0])
        raise UserError(f"{path}: {int((~col_ok).sum())} annotations use category_id {bad} "
                        "(or others) missing from 'categories'; the file is inconsistent")

    labels = np.zeros((len(images), cats.size), dtype=np.uint8)
    if sorted_ids.size:
        pos = np.searchsorted(sorted_ids, ann_img)
        row_ok = (pos < sorted_ids.size) & (sorted_ids[np.minimum(pos, sorted_ids.size - 1)]
                                             == ann_img)
        labels[order[pos[row_ok]], col[row_ok]] = 1
    else:
        row_ok = np.zeros(len(anns), dtype=bool)
    if not row_ok.all():
        log.warning("%s: ignoring %d annotations whose image_id is not in 'images'",
                    path, int((~row_ok).sum()))
    return images, labels


def build_coco_split(data: dict[str, Any], ann_path: Path, image_dir: Path,
                     cat_ids: Sequence[int], *, absolute: bool = False,
                     skip_missing: bool = False) -> list[dict[str, Any]]:
    """Build one prepared COCO split.

    Args:
        data: the decoded instances JSON of the split.
        ann_path: the file it was read from, for messages.
        image_dir: the folder holding the split's images (built from the user's path).
        cat_ids: category ids in label order.
        absolute: store absolute image paths.
        skip_missing: leave out annotated images whose file is missing instead of raising.
    Returns:
        ``[{"target": [0/1 x C], "img_path": ...}, ...]`` in the file's image order, without
        the images that have no annotation.
    Raises:
        UserError: for malformed records or (unless ``skip_missing``) a missing image file.
    """
    images, labels = coco_label_matrix(data, cat_ids, ann_path)
    keep = np.flatnonzero(labels.any(axis=1))
    if keep.size < len(images):
        log.info("%s: leaving out %d of %d images that have no annotation",
                 ann_path.name, len(images) - keep.size, len(images))

    present = set(os.listdir(image_dir))
    entries: list[dict[str, Any]] = []
    missing: list[str] = []
    for i in tqdm(keep.tolist(), desc=ann_path.stem, unit="img", disable=None):
        name = images[i].get("file_name")
        if not isinstance(name, str) or not name:
            raise UserError(f"{ann_path}: image id {images[i].get('id')} has no 'file_name'")
        if name not in present and not (image_dir / name).is_file():
            missing.append(name)
            continue
        entries.append({"target": labels[i].tolist(),
                        "img_path": format_img_path(image_dir / name, absolute)})
    if missing:
        if not skip_missing:
            more = f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else ""
            raise UserError(f"image {image_dir / missing[0]} listed in {ann_path} does not "
                            f"exist{more}; download the images or pass --skip_missing")
        log.warning("%s: skipping %d annotated images whose file is missing (first: %s)",
                    ann_path.name, len(missing), image_dir / missing[0])
    return entries


def prepare_coco(data_path: str, out_dir: str, *, year: int = 2014, absolute: bool = False,
                 skip_missing: bool = False) -> dict[str, Path]:
    """Write ``train_coco<year>.json``, ``val_coco<year>.json`` and ``classes.txt``.

    Args:
        data_path: the COCO root folder.
        out_dir: output folder, created if needed.
        year: 2014 or 2017.
        absolute: store absolute image paths.
        skip_missing: leave out annotated images whose file is missing instead of raising.
    Returns:
        ``{"train": path, "val": path, "classes": path}``.
    Raises:
        UserError: for a missing layout, malformed annotations or missing images.
    """
    root = require_dir(data_path, COCO_LAYOUT_HINT)
    splits = ("train", "val")
    ann_paths = {s: require_file(root / "annotations" / f"instances_{s}{year}.json",
                                 COCO_LAYOUT_HINT) for s in splits}
    img_dirs = {s: require_dir(root / f"{s}{year}", COCO_LAYOUT_HINT) for s in splits}

    names: list[str] | None = None
    cat_ids: list[int] | None = None
    results: dict[str, list[dict[str, Any]]] = {}
    for split in splits:
        log.info("reading %s", ann_paths[split])
        data = read_json(ann_paths[split])
        if not isinstance(data, dict):
            raise UserError(f"{ann_paths[split]}: expected a JSON object with "
                            "images/annotations/categories")
        ids, split_names = coco_categories(data, ann_paths[split])
        if cat_ids is None:
            cat_ids, names = ids, split_names
            _check_coco_names(split_names, ann_paths[split])
        elif ids != cat_ids or split_names != names:
            raise UserError(f"{ann_paths[split]} has different categories from "
                            f"{ann_paths[splits[0]]}; use annotation files of one COCO release")
        results[split] = build_coco_split(data, ann_paths[split], img_dirs[split], cat_ids,
                                          absolute=absolute, skip_missing=skip_missing)
        del data
        if not results[split]:
            raise UserError(f"{ann_paths[split]}: no annotated image left; check the file")
    assert names is not None

    out = ensure_out_dir(out_dir)
    written: dict[str, Path] = {}
    for split in splits:
        written[split] = write_json_list(out / f"{split}_coco{year}.json", results[split])
        log.info("wrote %s (%d images)", written[split], len(results[split]))
    written["classes"] = write_class_file(out / "classes.txt", names)
    log.info("wrote %s (%d classes)", written["classes"], len(names))
    return written


def _check_coco_names(names: Sequence[str], path: Path) -> None:
    """Warn if the categories differ from the standard 80 COCO classes."""
    if list(names) == list(COCO_CLASSES):
        return
    if len(names) != len(COCO_CLASSES):
        log.warning("%s has %d categories, not the standard %d; labels follow the file",
                    path, len(names), len(COCO_CLASSES))
        return
    i = next(k for k, (a, b) in enumerate(zip(names, COCO_CLASSES)) if a != b)
    log.warning("%s: category %d is '%s' where standard COCO has '%s'; labels and "
                "classes.txt follow the file", path, i, names[i], COCO_CLASSES[i])


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors raise ``UserError``)."""
    args = build_parser().parse_args(argv)
    prepare_coco(args.data_path, args.out_dir, year=args.year, absolute=args.absolute,
                 skip_missing=args.skip_missing)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
