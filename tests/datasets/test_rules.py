"""One rule per concept: the class-file reader, the class-name search order, the split reader
(shared with evaluation.evaluate) and the recipe table."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datasets.classes import VOC_CLASSES, WIDER_ATTRIBUTES, read_class_file, write_class_file
from datasets.config import DATASETS, DEFAULT_DATASET, dataset_defaults, label_policy, resolve_classes
from datasets.splits import read_split
from utils.errors import UserError


# --------------------------------------------------------------------------- class file
def test_class_file_comments_and_trailing_blanks(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("\ufeff# shapes, in label order\n circle \ntraffic light\n  # not a class\nstar\n\n \n", encoding="utf-8")
    assert read_class_file(path) == ["circle", "traffic light", "star"]


@pytest.mark.parametrize("text, needle", [
    ("cat\n\ndog\n", "line 2: blank line"),
    ("\ncat\ndog\n", "line 1: blank line"),
    ("# only a comment\n\n", "empty"),
    ("cat\n# x\ncat\n", "line 3: class 'cat' is already listed on line 1"),
])
def test_class_file_refusals_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad_classes.txt"
    path.write_text(text)
    with pytest.raises(UserError, match=needle) as err:
        read_class_file(path)
    assert str(path) in str(err.value)


def test_written_class_files_read_back(tmp_path: Path) -> None:
    names = ["person", "traffic light", "c#"]
    assert read_class_file(write_class_file(tmp_path / "c.txt", names)) == names
    with pytest.raises(UserError, match="'#'"):
        write_class_file(tmp_path / "d.txt", ["#1", "b"])


# --------------------------------------------------------------------------- class-name search order
def _names(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_class_file(folder / "classes.txt", list(names))


def test_class_search_order(tmp_path: Path) -> None:
    explicit = _names(tmp_path / "explicit", "e1", "e2")
    beside_weights = _names(tmp_path / "run", "w1", "w2")
    beside_split = _names(tmp_path / "data", "s1", "s2")
    weights, split = tmp_path / "run" / "best.pdparams", tmp_path / "data" / "test.json"
    assert resolve_classes("voc07", explicit, split, weights=weights) == (["e1", "e2"], str(explicit))
    assert resolve_classes("voc07", None, split, weights=weights) == (["w1", "w2"], str(beside_weights))
    assert resolve_classes("voc07", None, split, weights="https://x.org/run/best.pdparams") == (["s1", "s2"], str(beside_split))
    assert resolve_classes("voc07", None, split) == (["s1", "s2"], str(beside_split))
    assert resolve_classes("voc07", None, tmp_path / "nowhere" / "t.json") == (list(VOC_CLASSES), "built-in voc07 list")
    assert resolve_classes("wider")[0] == list(WIDER_ATTRIBUTES)
    with pytest.raises(UserError, match=r"no class names for dataset 'demo' .*--classes"):
        resolve_classes("demo", None, tmp_path / "nowhere" / "t.json")
    assert resolve_classes("demo", None, None, required=False) == ([], "")
    with pytest.raises(UserError, match="unknown --dataset 'vco07'"):
        resolve_classes("vco07", explicit)
    (tmp_path / "run" / "classes.txt").write_text("a\n\nb\n")  # a bad file found is an error, not skipped
    with pytest.raises(UserError, match="blank line"):
        resolve_classes("voc07", None, split, weights=weights)


# --------------------------------------------------------------------------- split reader
def test_read_split(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"target": [1, -1, 0], "img_path": "a.jpg", "extra": 1},
                                {"target": [99, 0, 1], "img_path": "b.jpg", "bbox": [1, 2, 3, 4]}]))
    entries, targets = read_split(path)
    assert entries == [{"img_path": "a.jpg"}, {"img_path": "b.jpg", "bbox": [1.0, 2.0, 3.0, 4.0]}]
    assert targets.dtype == np.float32 and targets.tolist() == [[1, -1, 0], [99, 0, 1]]
    with pytest.raises(UserError, match=r"s\.json: entry 0: 'target' has 3 values but classes.txt gives 4"):
        read_split(path, 4, "classes.txt")


def test_evaluate_reads_annotations_with_the_split_reader(tmp_path: Path) -> None:
    from evaluation.evaluate import main

    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([{"target": [1, 0], "img_path": "a.jpg"}, {"target": [True, 0], "img_path": "b.jpg"}]))
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps([{"img_path": "a.jpg", "scores": [0.9, 0.1]}, {"img_path": "b.jpg", "scores": [0.2, 0.3]}]))
    with pytest.raises(UserError) as err:  # a bool label: refused by read_split, as in training
        main(["--pred", str(pred), "--ann", str(ann)])
    assert str(err.value).startswith(f"{ann}: entry 1: target value 0 is True")


# --------------------------------------------------------------------------- recipe table
def test_recipe_table() -> None:
    assert DEFAULT_DATASET in DATASETS
    with pytest.raises(UserError, match="unknown --dataset 'voc'; choose one of: voc07, coco, wider, custom, demo"):
        dataset_defaults("voc")
    wider = dataset_defaults("wider")
    assert not wider.random_crop and wider.mean == wider.std == (0.5, 0.5, 0.5) and wider.step_epochs == 5
    assert [n for n, d in DATASETS.items() if not d.random_crop] == ["wider", "demo"]  # demo: flip + resize (64 px)
    assert dataset_defaults("voc07").train_transform(8).random_crop
    assert label_policy("custom", True) == "voc07" and label_policy("custom", False) == "binary"
    assert label_policy("wider", False) == "wider"
    # VOC's 1/-1/0 encoding is recognised by its -1s: a binary train/val split's 0s are negatives
    assert label_policy("voc07", True) == "voc07" and label_policy("voc07", False) == "binary"
    assert label_policy("demo", False) == "binary"
