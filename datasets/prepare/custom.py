"""Prepare your own multi-label data: a VOC-layout folder or a CSV/TSV list of images.

Usage (from the repository root):
    python -m datasets.prepare.custom --voc_dir /data/mydata --out_dir data/mydata
    python -m datasets.prepare.custom --csv /data/labels.csv --out_dir data/mydata
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

from datasets.classes import read_class_file, write_class_file
from datasets.prepare.common import (IMAGE_EXTENSIONS, ensure_out_dir, format_img_path,
                               require_dir, write_json_list)
from datasets.prepare.voc_annotations import (build_voc_split, discover_voc_classes, locate_voc_files,
                          read_id_list)
from utils.errors import UserError, run_cli
from utils.logger import get_logger

log = get_logger("prepare")

CUSTOM_VOC_HINT = ("<voc_dir>/Annotations/<id>.xml and <voc_dir>/JPEGImages/<id>.<jpg|png|...>, "
                   "optionally <voc_dir>/ImageSets/Main/{train,val,test}.txt")
#: First-cell values recognised as a CSV header when --header is not given.
HEADER_NAMES = frozenset({"image", "images", "image_path", "img", "img_path", "path", "file",
                          "filename", "file_name", "image_id", "name"})
#: Image extensions tried for a VOC-layout folder (lower and upper case).
VOC_IMAGE_EXTS: tuple[str, ...] = IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)

EPILOG = """\
input, one of:
  --voc_dir DIR  Annotations/<id>.xml + JPEGImages/<id>.jpg (or .png, ...), any class names.
                 Split from ImageSets/Main (train.txt [+ val.txt] or trainval.txt, and
                 test.txt) when present, else a random split of all annotated images.
                 Labels as for VOC: train 1/0, test 1/-1/0 (0 = difficult only).
  --csv FILE     rows "image_path,label1;label2;..." (TSV for .tsv/.tab files or with
                 --delimiter); a header row is detected (or force --header/--no-header);
                 blank rows and rows starting with # are ignored; further columns are read
                 as more labels; an empty label cell marks an image with no class. Image
                 paths are relative to the CSV's folder unless --image_root is given.
                 Rows naming the same image are merged. Labels 1/0 in both splits.
  Classes are discovered (sorted) unless --classes FILE gives them in label order.

output (in --out_dir): train_custom.json, test_custom.json, classes.txt

errors (exit status 2, nothing written):
  missing folders or files; malformed XML (file and line); an object/label not in
  --classes (file, line and class named); a CSV row without an image path; a missing image
  or annotation; --test_ratio outside [0, 1); no image or no class at all; an ImageSets/Main
  list with no id (or whose ids are all skipped). Only --test_ratio 0 gives an empty test
  split (with a warning).
skippable with a warning:
  missing images (and, for --voc_dir lists, missing XMLs) with --skip_missing.
"""


class CsvRow(NamedTuple):
    """One image of a label CSV: where it was read, its path and its label names."""

    line: int
    image: str
    labels: list[str]


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this script."""
    parser = argparse.ArgumentParser(
        prog="prepare_custom.py",
        description="Turn your own multi-label data into the project's JSON splits.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--voc_dir", help="a VOC-layout folder (Annotations, JPEGImages)")
    source.add_argument("--csv", help="a CSV/TSV file of image paths and labels")
    parser.add_argument("--out_dir", required=True, help="output folder, created if needed")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="class names in label order, one per line (default: discover "
                             "them from the data, sorted)")
    parser.add_argument("--delimiter", default=None,
                        help="CSV column separator (default: tab for .tsv/.tab, else ','); "
                             "'\\t' or 'tab' mean a tab")
    parser.add_argument("--label_sep", default=";",
                        help="separator between the labels of one image (default: ';')")
    parser.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                        help="whether the CSV's first row is a header (default: detect)")
    parser.add_argument("--image_root", default=None,
                        help="folder CSV image paths are relative to (default: the CSV's)")
    parser.add_argument("--test_ratio", type=float, default=0.2,
                        help="share of images put in the test split when no split lists "
                             "exist (default: 0.2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random split (default: 0)")
    parser.add_argument("--absolute", action="store_true", help="store absolute image paths")
    parser.add_argument("--skip_missing", action="store_true",
                        help="leave out images (or listed ids) whose file is missing, with "
                             "one warning, instead of failing")
    return parser


def split_indices(n: int, test_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic random train/test split of ``range(n)``.

    Args:
        n: number of items.
        test_ratio: share of items for the test split, in [0, 1). When it is > 0 and n >= 2
            each split gets at least one item.
        seed: random seed; the same (n, ratio, seed) always gives the same split.
    Returns:
        ``(train_indices, test_indices)``, each sorted ascending.
    Raises:
        UserError: if ``test_ratio`` is outside [0, 1).
    """
    if not 0.0 <= test_ratio < 1.0:
        raise UserError(f"--test_ratio {test_ratio} is outside [0, 1); use e.g. 0.2")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = int(round(n * test_ratio))
    if test_ratio > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return sorted(order[n_test:]), sorted(order[:n_test])


def resolve_delimiter(csv_path: str, delimiter: str | None) -> str:
    """Return the column separator: the given one (``\\t``/``tab`` = tab) or by extension.

    Args:
        csv_path: the label file; ``.tsv`` / ``.tab`` mean tab-separated.
        delimiter: the user's ``--delimiter`` or None.
    Returns:
        a one-character delimiter.
    Raises:
        UserError: if the delimiter is not one character.
    """
    if delimiter is None:
        return "\t" if Path(csv_path).suffix.lower() in (".tsv", ".tab") else ","
    if delimiter in ("\\t", "tab", "TAB"):
        return "\t"
    if len(delimiter) != 1:
        raise UserError(f"--delimiter must be one character, got {delimiter!r}")
    return delimiter


def read_label_csv(csv_path: str, *, delimiter: str, label_sep: str = ";",
                   header: bool | None = None, image_root: str | None = None) -> list[CsvRow]:
    """Read a CSV/TSV of ``image_path<delim>label1;label2;...`` rows.

    Args:
        csv_path: the label file.
        delimiter: column separator.
        label_sep: separator between labels inside a cell.
        header: True/False to force, None to detect a header in the first row.
        image_root: folder image paths are relative to (default: the CSV's folder); used
            only to tell a header from a data row.
    Returns:
        the rows in file order, with stripped label names (empty cells dropped).
    Raises:
        UserError: if the file cannot be read or a row has no image path.
    """
    p = Path(csv_path)
    try:
        with p.open("r", encoding="utf-8-sig", newline="") as fh:
            raw = list(enumerate(csv.reader(fh, delimiter=delimiter), start=1))
    except FileNotFoundError as exc:
        raise UserError(f"--csv {p} does not exist") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {p}: {exc}; save it as UTF-8 text") from exc

    rows = [(n, cells) for n, cells in raw
            if any(c.strip() for c in cells) and not cells[0].lstrip().startswith("#")]
    if rows and _is_header(rows[0][1], header, Path(image_root) if image_root else p.parent):
        log.info("%s: treating line %d as a header row", p, rows[0][0])
        rows = rows[1:]
    result: list[CsvRow] = []
    for lineno, cells in rows:
        image = cells[0].strip()
        if not image:
            raise UserError(f"{p}, line {lineno}: the first column (image path) is empty")
        labels = [name.strip() for cell in cells[1:] for name in cell.split(label_sep)]
        result.append(CsvRow(lineno, image, [name for name in labels if name]))
    return result


def prepare_custom_csv(csv_path: str, out_dir: str, *, classes_file: str | None = None,
                       delimiter: str | None = None, label_sep: str = ";",
                       header: bool | None = None, image_root: str | None = None,
                       test_ratio: float = 0.2, seed: int = 0, absolute: bool = False,
                       skip_missing: bool = False) -> dict[str, Path]:
    """Write train/test splits and classes.txt from a label CSV.

    Args:
        csv_path: the label file (see ``read_label_csv``).
        out_dir: output folder, created if needed.
        classes_file: class names in label order; None discovers them (sorted).
        delimiter: column separator or None for by-extension.
        label_sep: separator between labels in a cell.
        header: force/deny a header row, or None to detect it.
        image_root: folder image paths are relative to (default: the CSV's folder).
        test_ratio: share of images in the test split.
        seed: seed of the split.
        absolute: store absolute image paths.
        skip_missing: leave out rows whose image is missing instead of raising.
    Returns:
        ``{"train": path, "test": path, "classes": path}``.
    Raises:
        UserError: for unreadable input, unknown labels or missing images.
    """
    split_indices(0, test_ratio, seed)  # validate the ratio before any work
    rows = read_label_csv(csv_path, delimiter=resolve_delimiter(csv_path, delimiter),
                          label_sep=label_sep, header=header, image_root=image_root)
    if not rows:
        raise UserError(f"{csv_path} has no data row; expected lines like "
                        "'images/a.jpg,cat;dog'")
    base = Path(image_root) if image_root is not None else Path(os.path.dirname(csv_path))
    if image_root is not None:
        require_dir(base, "--image_root must be the folder the CSV's image paths start from")

    # Merge rows naming the same image, check files, keep the first row's line for messages.
    merged: dict[str, tuple[int, Path, set[str]]] = {}
    missing: list[tuple[int, Path]] = []
    for row in rows:
        img = base / row.image
        key = os.path.normpath(img)
        if key in merged:
            merged[key][2].update(row.labels)
            continue
        if not img.is_file():
            missing.append((row.line, img))
            continue
        merged[key] = (row.line, img, set(row.labels))
    if len(merged) + len(missing) < len(rows):
        log.info("%s: %d rows repeat an earlier image; their labels were merged",
                 csv_path, len(rows) - len(merged) - len(missing))
    if missing:
        line, img = missing[0]
        if not skip_missing:
            more = f" ({len(missing) - 1} more are missing)" if len(missing) > 1 else ""
            raise UserError(f"{csv_path}, line {line}: image {img} does not exist{more}; fix "
                            "the path, set --image_root, or pass --skip_missing")
        log.warning("%s: skipping %d rows whose image is missing (first: line %d, %s)",
                    csv_path, len(missing), line, img)
    if not merged:
        raise UserError(f"{csv_path}: no row names an existing image")

    items = list(merged.values())
    if classes_file is not None:
        classes = read_class_file(classes_file)
        known = set(classes)
        for line, _, labels in items:
            unknown = sorted(labels - known)
            if unknown:
                raise UserError(f"{csv_path}, line {line}: class '{unknown[0]}' is not in "
                                f"{classes_file}; add it there or fix the row")
    else:
        classes = sorted(set().union(*(labels for _, _, labels in items)))
        if not classes:
            raise UserError(f"{csv_path}: no row has a label; expected lines like "
                            "'images/a.jpg,cat;dog'")
        log.info("discovered %d classes in %s", len(classes), csv_path)
    unlabeled = sum(1 for _, _, labels in items if not labels)
    if unlabeled:
        log.info("%s: %d images have no label (all-negative)", csv_path, unlabeled)

    index = {name: i for i, name in enumerate(classes)}
    entries = []
    for _, img, labels in items:
        target = [0] * len(classes)
        for name in labels:
            target[index[name]] = 1
        entries.append({"target": target, "img_path": format_img_path(img, absolute)})
    train_idx, test_idx = split_indices(len(entries), test_ratio, seed)
    return _write_outputs(out_dir, [entries[i] for i in train_idx],
                          [entries[i] for i in test_idx], classes)


def prepare_custom_voc(voc_dir: str, out_dir: str, *, classes_file: str | None = None,
                       test_ratio: float = 0.2, seed: int = 0, absolute: bool = False,
                       skip_missing: bool = False) -> dict[str, Path]:
    """Write train/test splits and classes.txt from a VOC-layout folder with any classes.

    Args:
        voc_dir: folder with ``Annotations`` and ``JPEGImages`` (and maybe ImageSets/Main).
        out_dir: output folder, created if needed.
        classes_file: class names in label order; None discovers them from the XMLs (sorted).
        test_ratio: share of images in the test split when there are no split lists.
        seed: seed of that split.
        absolute: store absolute image paths.
        skip_missing: leave out ids whose XML or image is missing instead of raising.
    Returns:
        ``{"train": path, "test": path, "classes": path}``.
    Raises:
        UserError: for a missing layout, bad annotations, unknown classes or missing files.
    """
    split_indices(0, test_ratio, seed)  # validate the ratio before any work
    root = require_dir(voc_dir, CUSTOM_VOC_HINT)
    ann_dir = require_dir(root / "Annotations", CUSTOM_VOC_HINT)
    require_dir(root / "JPEGImages", CUSTOM_VOC_HINT)

    lists = root / "ImageSets" / "Main"
    train_ids, train_src = _train_list(lists)
    if train_ids is not None and (lists / "test.txt").is_file():
        log.info("using the split lists in %s", lists)
        test_ids, test_src = read_id_list(lists / "test.txt"), "ImageSets/Main/test.txt"
        for ids, src in ((train_ids, train_src), (test_ids, test_src)):
            if not ids:
                raise UserError(f"{root / src} lists no image id, so that split would be empty; put "
                                "the image ids in it, one per line (or remove the ImageSets/Main lists "
                                "to split the annotations at random with --test_ratio)")
        train_found = locate_voc_files(root, train_ids, source=train_src,
                                       skip_missing=skip_missing, image_exts=VOC_IMAGE_EXTS)
        test_found = locate_voc_files(root, test_ids, source=test_src,
                                      skip_missing=skip_missing, image_exts=VOC_IMAGE_EXTS)
        if not test_found:
            raise UserError(f"no usable image in {root / test_src}: all {len(test_ids)} listed ids were "
                            "skipped as missing; check the list and the Annotations / JPEGImages folders")
    else:
        stems = sorted(p.stem for p in ann_dir.glob("*.xml"))
        if not stems:
            raise UserError(f"{ann_dir} has no .xml file (expected {CUSTOM_VOC_HINT})")
        log.info("no train/test lists in %s: random split of %d annotations (test_ratio %g, "
                 "seed %d)", lists, len(stems), test_ratio, seed)
        found = locate_voc_files(root, stems, source=str(ann_dir), skip_missing=skip_missing,
                                 image_exts=VOC_IMAGE_EXTS)
        tr, te = split_indices(len(found), test_ratio, seed)
        train_found, test_found = [found[i] for i in tr], [found[i] for i in te]
        train_src = test_src = str(ann_dir)
    if not train_found:
        raise UserError(f"no usable training image in {root}; check the lists and folders")

    if classes_file is not None:
        classes = read_class_file(classes_file)
    else:
        classes = discover_voc_classes([xml for _, xml, _ in train_found + test_found])
        log.info("discovered %d classes in %s: %s", len(classes), ann_dir, ", ".join(classes))
    train = build_voc_split(root, [i for i, _, _ in train_found], classes, binary=True,
                            source=train_src, absolute=absolute, image_exts=VOC_IMAGE_EXTS)
    test = build_voc_split(root, [i for i, _, _ in test_found], classes, binary=False,
                           source=test_src, absolute=absolute, image_exts=VOC_IMAGE_EXTS)
    return _write_outputs(out_dir, train, test, classes)


def _train_list(lists: Path) -> tuple[list[str] | None, str]:
    """Training ids from ImageSets/Main: train.txt (+ val.txt), else trainval.txt, else None."""
    if (lists / "train.txt").is_file():
        ids = read_id_list(lists / "train.txt")
        if (lists / "val.txt").is_file():
            return list(dict.fromkeys(ids + read_id_list(lists / "val.txt"))), \
                "ImageSets/Main/train.txt + val.txt"
        return ids, "ImageSets/Main/train.txt"
    if (lists / "trainval.txt").is_file():
        return read_id_list(lists / "trainval.txt"), "ImageSets/Main/trainval.txt"
    return None, ""


def _write_outputs(out_dir: str, train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]],
                   classes: Sequence[str]) -> dict[str, Path]:
    """Write train_custom.json, test_custom.json and classes.txt; log the counts."""
    if not test:
        log.warning("the test split is empty (no test list, or --test_ratio 0)")
    out = ensure_out_dir(out_dir)
    written = {"train": write_json_list(out / "train_custom.json", train),
               "test": write_json_list(out / "test_custom.json", test),
               "classes": write_class_file(out / "classes.txt", classes)}
    log.info("wrote %s (%d images), %s (%d images), %s (%d classes)", written["train"],
             len(train), written["test"], len(test), written["classes"], len(classes))
    return written


def _is_header(cells: list[str], forced: bool | None, base: Path) -> bool:
    """Whether the first CSV row is a header: forced, a known column name, or not an image."""
    if forced is not None:
        return forced
    first = cells[0].strip()
    if first.lower() in HEADER_NAMES:
        return True
    return (os.path.splitext(first)[1].lower() not in IMAGE_EXTENSIONS
            and not (base / first).is_file())


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors raise ``UserError``)."""
    args = build_parser().parse_args(argv)
    common = dict(classes_file=args.classes, test_ratio=args.test_ratio, seed=args.seed,
                  absolute=args.absolute, skip_missing=args.skip_missing)
    if args.voc_dir is not None:
        prepare_custom_voc(args.voc_dir, args.out_dir, **common)
    else:
        prepare_custom_csv(args.csv, args.out_dir, delimiter=args.delimiter,
                           label_sep=args.label_sep, header=args.header,
                           image_root=args.image_root, **common)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
