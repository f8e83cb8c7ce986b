"""Prepare PASCAL VOC 2007 / 2012 for training: JSON splits plus classes.txt.

Usage (from the repository root):
    python -m datasets.prepare.voc --data_path /data/VOCdevkit --out_dir data/voc07
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from datasets.classes import VOC_CLASSES, read_class_file, write_class_file
from datasets.prepare.common import ensure_out_dir, require_dir, write_json_list
from datasets.prepare.voc_annotations import (VOC_LAYOUT_HINT, build_voc_split, read_id_list,
                          resolve_voc_dir)
from utils.errors import UserError, run_cli
from utils.logger import get_logger

log = get_logger("prepare")

EPILOG = """\
output (in --out_dir):
  trainval_vocYY.json  train.txt + val.txt ids, binary labels (1 present, 0 otherwise;
                       a class whose objects are all "difficult" counts as 0)
  train_vocYY.json,    the train.txt and val.txt halves of trainval (same labels), written
  val_vocYY.json       when both lists exist: val.py --tune_thresholds tunes on val_vocYY.json
  test_vocYY.json      test.txt ids, labels 1 present / -1 absent / 0 difficult only
                       (VOC2012 usually has no test.txt: then only trainval is written)
  classes.txt          the class names, one per line, in label order
  Each JSON file is a list of {"target": [...], "img_path": "..."}; img_path is built from
  --data_path as given (relative paths stay relative to the current folder) unless
  --absolute is set.

errors (exit status 2, nothing written):
  missing VOC<year>, Annotations, JPEGImages or ImageSets/Main folder or train/val list;
  malformed XML (the message names the file and line); an object class that is not in the
  class list (use --classes); an <object> without <name>; <difficult> other than 0/1;
  an id listed in ImageSets whose XML or JPEG is missing; an empty image list (e.g. a
  test.txt with no id) or a split left with no image: an empty split is useless.
skippable with a warning:
  ids whose XML or JPEG is missing, with --skip_missing (one warning with the count).
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser of this script."""
    parser = argparse.ArgumentParser(
        prog="prepare_voc.py",
        description="Turn a PASCAL VOC folder into the project's JSON splits and classes.txt.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_path", required=True,
                        help="the VOCdevkit folder (holding VOC2007/ or VOC2012/); the "
                             "VOC<year> folder itself is accepted too")
    parser.add_argument("--year", type=int, choices=(2007, 2012), default=2007,
                        help="VOC edition (default: 2007); names the outputs voc07 / voc12")
    parser.add_argument("--out_dir", required=True, help="output folder, created if needed")
    parser.add_argument("--classes", default=None, metavar="FILE",
                        help="classes.txt replacing the 20 VOC classes (one name per line, "
                             "in label order), e.g. for the synthetic demo data")
    parser.add_argument("--absolute", action="store_true",
                        help="store absolute image paths")
    parser.add_argument("--skip_missing", action="store_true",
                        help="skip listed ids whose XML or JPEG is missing (warn once) "
                             "instead of failing")
    return parser


def prepare_voc(data_path: str, out_dir: str, *, year: int = 2007,
                classes_file: str | None = None, absolute: bool = False,
                skip_missing: bool = False) -> dict[str, Path]:
    """Write the VOC splits and classes.txt.

    Args:
        data_path: the VOCdevkit folder (or the VOC<year> folder).
        out_dir: output folder, created if needed.
        year: 2007 or 2012; selects the sub-folder and the ``vocYY`` file-name suffix.
        classes_file: optional class file replacing the 20 VOC classes.
        absolute: store absolute image paths.
        skip_missing: skip ids with a missing XML or JPEG instead of raising.
    Returns:
        ``{"trainval": path, "test": path (if written), "classes": path}``, plus ``"train"`` and
        ``"val"`` (``train_vocYY.json``, ``val_vocYY.json``: the two halves of trainval) when
        ImageSets/Main has train.txt and val.txt.
    Raises:
        UserError: for missing folders/lists, bad annotations or missing files.
    """
    voc_dir = resolve_voc_dir(data_path, year)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        require_dir(voc_dir / sub, VOC_LAYOUT_HINT)
    lists = voc_dir / "ImageSets" / "Main"
    classes = read_class_file(classes_file) if classes_file else list(VOC_CLASSES)

    val_ids: set[str] = set()
    if (lists / "train.txt").is_file() and (lists / "val.txt").is_file():
        val_ids = set(read_id_list(lists / "val.txt"))
        trainval_ids = read_id_list(lists / "train.txt") + read_id_list(lists / "val.txt")
        trainval_source = "ImageSets/Main/train.txt + val.txt"
    elif (lists / "trainval.txt").is_file():
        log.info("%s has no train.txt/val.txt pair: using trainval.txt", lists)
        trainval_ids = read_id_list(lists / "trainval.txt")
        trainval_source = "ImageSets/Main/trainval.txt"
    else:
        raise UserError(f"{lists} has neither train.txt + val.txt nor trainval.txt "
                        f"(expected {VOC_LAYOUT_HINT})")
    if not trainval_ids:
        named = (f"{lists / 'trainval.txt'} lists" if trainval_source.endswith("trainval.txt")
                 else f"{lists / 'train.txt'} and val.txt list")
        raise UserError(f"{named} no image id, so the training split would be empty; put the "
                        "training image ids there, one per line")
    trainval_ids = _drop_duplicates(trainval_ids, trainval_source)

    test_list = lists / "test.txt"
    if test_list.is_file():
        test_ids: list[str] | None = _drop_duplicates(read_id_list(test_list),
                                                      "ImageSets/Main/test.txt")
        if not test_ids:
            also = " or delete it to write the trainval split only" if year == 2012 else ""
            raise UserError(f"{test_list} lists no image id, so the test split would be empty; put "
                            f"the test image ids in it, one per line{also}")
    elif year == 2012:
        log.info("%s does not exist (VOC2012 ships no public test labels): writing trainval "
                 "only", test_list)
        test_ids = None
    else:
        raise UserError(f"{test_list} does not exist; VOC{year} needs a test list "
                        f"(expected {VOC_LAYOUT_HINT})")

    suffix = f"voc{year % 100:02d}"
    trainval = build_voc_split(voc_dir, trainval_ids, classes, binary=True,
                               source=trainval_source, skip_missing=skip_missing,
                               absolute=absolute)
    test: list[dict[str, Any]] = []
    if test_ids is not None:
        test = build_voc_split(voc_dir, test_ids, classes, binary=False,
                               source="ImageSets/Main/test.txt", skip_missing=skip_missing,
                               absolute=absolute)
    if not trainval:
        raise UserError(f"no usable image in {trainval_source} of {voc_dir}; check the lists "
                        "and the Annotations / JPEGImages folders")
    if test_ids is not None and not test:
        raise UserError(f"no usable image in {test_list}: all {len(test_ids)} listed ids were skipped "
                        "as missing; check the list and the Annotations / JPEGImages folders")

    out = ensure_out_dir(out_dir)
    written: dict[str, Path] = {}
    written["trainval"] = write_json_list(out / f"trainval_{suffix}.json", trainval)
    log.info("wrote %s (%d images)", written["trainval"], len(trainval))
    val = [e for e in trainval if Path(e["img_path"]).stem in val_ids]
    train = [e for e in trainval if Path(e["img_path"]).stem not in val_ids]
    if val and train:  # the train.txt / val.txt halves, for tuning thresholds on data the model did not train on
        written["train"] = write_json_list(out / f"train_{suffix}.json", train)
        written["val"] = write_json_list(out / f"val_{suffix}.json", val)
        log.info("wrote %s (%d images) and %s (%d images)", written["train"], len(train), written["val"], len(val))
    if test_ids is not None:
        written["test"] = write_json_list(out / f"test_{suffix}.json", test)
        log.info("wrote %s (%d images)", written["test"], len(test))
    written["classes"] = write_class_file(out / "classes.txt", classes)
    log.info("wrote %s (%d classes)", written["classes"], len(classes))
    return written


def _drop_duplicates(ids: list[str], source: str) -> list[str]:
    """Keep the first occurrence of each id, warning if any were repeated."""
    unique = list(dict.fromkeys(ids))
    if len(unique) != len(ids):
        log.warning("%s lists %d ids more than once; keeping the first occurrence",
                    source, len(ids) - len(unique))
    return unique


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (errors raise ``UserError``)."""
    args = build_parser().parse_args(argv)
    prepare_voc(args.data_path, args.out_dir, year=args.year, classes_file=args.classes,
                absolute=args.absolute, skip_missing=args.skip_missing)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
