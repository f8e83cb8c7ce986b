"""Per-dataset defaults (``--dataset``) and the one rule for finding class names.

| dataset | default splits (under data/)                      | decay step | label policy | mean/std |
| voc07   | voc07/trainval_voc07.json, voc07/test_voc07.json  | 4          | voc07        | 0 / 1    |
| coco    | coco/train_coco2014.json, coco/val_coco2014.json  | 5          | coco         | 0 / 1    |
| wider   | wider/trainval_wider.json, wider/test_wider.json  | 5          | wider        | 0.5/0.5  |
| custom  | custom/train_custom.json, custom/test_custom.json | 4          | voc07 if the test labels hold -1, else binary |
| demo    | demo/trainval_voc07.json, demo/test_voc07.json    | 4          | voc07        | 0 / 1    |
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from datasets.classes import BUILTIN_CLASSES, read_class_file
from datasets.transforms import DEFAULT_MEAN, DEFAULT_STD, WIDER_MEAN, WIDER_STD
from utils.errors import UserError


@dataclass(frozen=True)
class DatasetDefaults:
    """Defaults attached to a ``--dataset`` name."""

    train_json: str
    test_json: str
    step_epochs: int
    policy: str | None  # None: decided from the labels (custom data)
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD


DATASETS: dict[str, DatasetDefaults] = {
    "voc07": DatasetDefaults("data/voc07/trainval_voc07.json", "data/voc07/test_voc07.json", 4, "voc07"),
    "coco": DatasetDefaults("data/coco/train_coco2014.json", "data/coco/val_coco2014.json", 5, "coco"),
    "wider": DatasetDefaults("data/wider/trainval_wider.json", "data/wider/test_wider.json", 5, "wider", WIDER_MEAN, WIDER_STD),
    "custom": DatasetDefaults("data/custom/train_custom.json", "data/custom/test_custom.json", 4, None),
    "demo": DatasetDefaults("data/demo/trainval_voc07.json", "data/demo/test_voc07.json", 4, "voc07"),
}


def dataset_defaults(name: str) -> DatasetDefaults:
    """Defaults of ``--dataset name``; UserError listing the choices if unknown."""
    if name not in DATASETS:
        raise UserError(f"unknown --dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def label_policy(dataset: str, targets_have_negative_one: bool) -> str:
    """The evaluator's label policy for a dataset (custom data: decided from its labels)."""
    policy = dataset_defaults(dataset).policy
    if policy is not None:
        return policy
    return "voc07" if targets_have_negative_one else "binary"


def resolve_classes(dataset: str, classes_file: str | os.PathLike | None, json_path: str | os.PathLike | None) -> tuple[list[str], str]:
    """Find the class names: ``--classes`` file, else ``classes.txt`` beside the split JSON,
    else the built-in list of the dataset.

    Returns:
        (names, where they came from). UserError when none applies.
    """
    if classes_file:
        return read_class_file(classes_file), str(classes_file)
    if json_path is not None:
        beside = Path(json_path).parent / "classes.txt"
        if beside.is_file():
            return read_class_file(beside), str(beside)
    if dataset in BUILTIN_CLASSES:
        return list(BUILTIN_CLASSES[dataset]), f"built-in {dataset} list"
    raise UserError(
        f"no class names for dataset '{dataset}': pass --classes FILE (one name per line, "
        "as written by the preparation scripts)"
    )
