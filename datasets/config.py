"""The recipe table: one row per ``--dataset``, and the one rule for finding class names.

| dataset | default splits (under data/)                      | decay step | label policy | mean/std | train crop |
| voc07   | voc07/trainval_voc07.json, voc07/test_voc07.json  | 4          | voc07        | 0 / 1    | random     |
| coco    | coco/train_coco2014.json, coco/val_coco2014.json  | 5          | coco         | 0 / 1    | random     |
| wider   | wider/trainval_wider.json, wider/test_wider.json  | 5          | wider        | 0.5/0.5  | none (*)   |
| custom  | custom/train_custom.json, custom/test_custom.json | 4          | voc07 if the test labels hold -1, else binary | 0 / 1 | random |
| demo    | demo/trainval_voc07.json, demo/test_voc07.json    | 4          | voc07        | 0 / 1    | none (**)  |

(*) WIDER Attribute: the dataset crops each person box (the split's ``bbox``) and training
uses flip + resize only, no RandomResizedCrop. "random" = flip + RandomResizedCrop(0.7-1.0)
+ resize. (**) The synthetic demo: flip + resize, no RandomResizedCrop (at 64 px a 70 % crop often
cuts an object's outline, which slows learning within the demo's few minutes). Every dataset evaluates with resize only (``datasets.transforms.preprocess``).

An unknown dataset name is an error everywhere (:func:`dataset_defaults`); when no name is
given anywhere (flag, training run's config.json) the scripts use :data:`DEFAULT_DATASET`.

Class names (:func:`resolve_classes`), first that applies: the explicit class file
(``--classes``), ``classes.txt`` beside the weights (train.py writes one into its
save_dir), ``classes.txt`` beside the split JSON (the preparation scripts write one), the
built-in list of the dataset (``datasets.classes.BUILTIN_CLASSES``: voc07, coco, wider).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from datasets.classes import BUILTIN_CLASSES, read_class_file
from datasets.transforms import DEFAULT_MEAN, DEFAULT_STD, WIDER_MEAN, WIDER_STD, TestTransform, TrainTransform
from utils.errors import UserError


@dataclass(frozen=True)
class DatasetDefaults:
    """The recipe of one ``--dataset`` (a row of the table in the module docstring).

    Attributes:
        train_json, test_json: default split files.
        val_json: default validation split (threshold tuning), or None when the dataset has none.
        step_epochs: epochs between x0.1 learning-rate decays.
        policy: the evaluator's label policy; None: decided from the labels (custom data).
        mean, std: per-channel normalisation after scaling pixels to [0, 1].
        random_crop: training uses RandomResizedCrop (False: flip + resize only, WIDER).
    """

    train_json: str
    test_json: str
    step_epochs: int
    policy: str | None
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    random_crop: bool = True
    val_json: str | None = None

    def train_transform(self, img_size: int) -> TrainTransform:
        """The training augmentation of this recipe.

        Args:
            img_size: output side S.
        Returns:
            a ``TrainTransform``: PIL RGB image -> float32 [3, S, S].
        """
        return TrainTransform(img_size, self.mean, self.std, random_crop=self.random_crop)

    def test_transform(self, img_size: int) -> TestTransform:
        """The evaluation preprocessing of this recipe (what val, predict, export and infer use).

        Args:
            img_size: output side S.
        Returns:
            a ``TestTransform``: PIL RGB image -> float32 [3, S, S].
        """
        return TestTransform(img_size, self.mean, self.std)


DEFAULT_DATASET = "voc07"
"""``--dataset`` when neither the flag nor a training run's config.json names one."""

DATASETS: dict[str, DatasetDefaults] = {
    "voc07": DatasetDefaults("data/voc07/trainval_voc07.json", "data/voc07/test_voc07.json", 4, "voc07",
                             val_json="data/voc07/val_voc07.json"),
    "coco": DatasetDefaults("data/coco/train_coco2014.json", "data/coco/val_coco2014.json", 5, "coco"),
    "wider": DatasetDefaults("data/wider/trainval_wider.json", "data/wider/test_wider.json", 5, "wider", WIDER_MEAN, WIDER_STD,
                             random_crop=False),
    "custom": DatasetDefaults("data/custom/train_custom.json", "data/custom/test_custom.json", 4, None),
    "demo": DatasetDefaults("data/demo/trainval_voc07.json", "data/demo/test_voc07.json", 4, "voc07",
                            val_json="data/demo/val_voc07.json", random_crop=False),
}


def dataset_defaults(name: str) -> DatasetDefaults:
    """The recipe of ``--dataset name``.

    Args:
        name: a key of :data:`DATASETS`.
    Returns:
        its :class:`DatasetDefaults`.
    Raises:
        UserError: an unknown name (the message lists the choices).
    """
    if name not in DATASETS:
        raise UserError(f"unknown --dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def label_policy(dataset: str, targets_have_negative_one: bool) -> str:
    """The evaluator's label policy for a split of a dataset.

    The VOC encoding (1 present, -1 absent, 0 difficult) is recognised by its -1s: a VOC-style
    split without any -1 is a binary 1/0 split (trainval_voc07.json and its train/val halves),
    whose 0s are negatives, not "difficult" entries to ignore.

    Args:
        dataset: a key of :data:`DATASETS`.
        targets_have_negative_one: whether the split's labels hold -1.
    Returns:
        a policy name of ``evaluation.metrics.POLICIES``: the dataset's (voc07, demo: voc07 for
        a split with -1s, else binary; custom: voc07 or binary the same way).
    Raises:
        UserError: an unknown dataset.
    """
    policy = dataset_defaults(dataset).policy
    if policy is None or policy == "voc07":
        return "voc07" if targets_have_negative_one else "binary"
    return policy


def _is_local(path: str | os.PathLike) -> bool:
    """False for URLs and the ``imagenet`` keyword (no folder to look in)."""
    text = str(path)
    return not text.startswith(("http://", "https://")) and text.lower() != "imagenet"


def resolve_classes(dataset: str | None, classes_file: str | os.PathLike | None = None,
                    split_json: str | os.PathLike | None = None, *,
                    weights: str | os.PathLike | None = None, required: bool = True) -> tuple[list[str], str]:
    """Find the class names; the one search order of the project (train, val, predict, export,
    ``evaluation.evaluate``).

    First that applies: ``classes_file``; ``classes.txt`` beside ``weights``; ``classes.txt``
    beside ``split_json``; the built-in list of ``dataset`` (voc07, coco, wider). Files are
    read with :func:`datasets.classes.read_class_file`.

    Args:
        dataset: a key of :data:`DATASETS`, or None (no built-in list to fall back on).
        classes_file: the ``--classes`` file, or None.
        split_json: a prepared split whose folder may hold ``classes.txt``, or None.
        weights: a weights file whose folder may hold ``classes.txt`` (a training run's
            save_dir), or None; URLs and ``imagenet`` are skipped.
        required: when no source applies, raise (True) or return ``([], "")`` (False).
    Returns:
        (C names in label order, where they came from: a file path or "built-in <dataset> list").
    Raises:
        UserError: an unknown ``dataset``, an unreadable or malformed class file, or no
            source applies and ``required`` (the message says what to pass).
    """
    if dataset is not None:
        dataset_defaults(dataset)
    if classes_file:
        return read_class_file(classes_file), str(classes_file)
    for anchor in (weights, split_json):
        if anchor and _is_local(anchor):
            beside = Path(anchor).parent / "classes.txt"
            if beside.is_file():
                return read_class_file(beside), str(beside)
    if dataset in BUILTIN_CLASSES:
        return list(BUILTIN_CLASSES[dataset]), f"built-in {dataset} list"
    if not required:
        return [], ""
    looked = [str(Path(a).parent / "classes.txt") for a in (weights, split_json) if a and _is_local(a)]
    where = f" (no {' or '.join(looked)})" if looked else ""
    has_builtin = ", ".join(BUILTIN_CLASSES)
    what = f"dataset '{dataset}'" if dataset else "the model"
    raise UserError(
        f"no class names for {what}{where}: pass --classes FILE (one name per line, "
        f"as written by the preparation scripts), or use a dataset with a built-in list ({has_builtin})"
    )
