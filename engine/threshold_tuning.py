"""Tune per-class thresholds of a trained model on a validation split (val.py and train.py ``--tune_thresholds``).

The model scores the split with the evaluation preprocessing; each class gets the threshold
that maximises its F1 there (``evaluation.thresholds.tune_thresholds``: ties take the lower
threshold, a class without positives keeps the global one). The result is written to a
``thresholds.json`` that predict.py, infer.py (through export_model.py) and val.py read.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from datasets.config import label_policy
from datasets.dataset import MultiLabelDataset
from datasets.loader import make_loader
from datasets.transforms import TestTransform
from engine.scoring import predict_scores
from evaluation.thresholds import ClassThresholds, ThresholdTuning, format_tuning_table, tune_thresholds


@dataclass(frozen=True)
class TuningOutcome:
    """What a tuning run produced.

    Attributes:
        thresholds: the saved per-class thresholds (``source`` = the written file).
        tuning: per-class thresholds and F1 at the global and tuned thresholds.
        table: the printable per-class table.
        n_images: images of the validation split.
    """

    thresholds: ClassThresholds
    tuning: ThresholdTuning
    table: str
    n_images: int


def tune_model_thresholds(model, val_json: str, class_names: Sequence[str], dataset: str, img_size: int,
                          mean: Sequence[float], std: Sequence[float], out_path: str | Path, checkpoint: str = "",
                          global_threshold: float = 0.5, batch_size: int = 16, num_workers: int = 0) -> TuningOutcome:
    """Score ``val_json`` with ``model``, tune one threshold per class and save them to ``out_path``.

    Args:
        model: a CSRA model in eval mode, ``model(x [B,3,S,S]) -> logits [B, C]``.
        val_json: the validation split (a prepared split JSON, C targets per entry).
        class_names: the C names, written with the thresholds.
        dataset: ``--dataset`` (label policy of the split).
        img_size, mean, std: the evaluation preprocessing.
        out_path: the thresholds.json to write (atomically).
        checkpoint: the weights the thresholds belong to (recorded).
        global_threshold: the threshold kept by classes without positives, and the baseline of the table.
    Returns:
        a ``TuningOutcome``.
    """
    split = MultiLabelDataset(val_json, TestTransform(img_size, mean, std), classes=list(class_names))
    scores = predict_scores(model, make_loader(split, batch_size, shuffle=False, num_workers=num_workers), desc="tune")
    policy = label_policy(dataset, bool((split.targets == -1).any()))
    tuning = tune_thresholds(scores, split.targets, policy, global_threshold=global_threshold)
    saved = tuning.to_class_thresholds(list(class_names), split=str(val_json), checkpoint=str(checkpoint))
    path = saved.save(out_path)
    written = ClassThresholds.load(path, expected_classes=list(class_names))
    return TuningOutcome(written, tuning, format_tuning_table(tuning, list(class_names)), len(split))
