"""Tests of evaluation.thresholds: per-class best-F1 thresholds, the thresholds file, the reports."""
from __future__ import annotations

import json
import math
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from evaluation.metrics import LabelEncodingError, LabelPolicy, thresholded_metrics
from evaluation.thresholds import (
    THRESHOLDS_FILENAME,
    ClassThresholds,
    best_f1_thresholds,
    format_side_by_side,
    format_tuning_table,
    thresholds_beside,
    tune_thresholds,
)
from utils.errors import UserError


def brute_force(scores: np.ndarray, targets: np.ndarray, ignore: tuple[float, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per class, try every distinct kept score as threshold, exact F1 with Fractions."""
    thr, best = [], []
    for c in range(scores.shape[1]):
        keep = ~np.isin(targets[:, c], ignore)
        s, pos = scores[keep, c], targets[keep, c] == 1
        gt = int(pos.sum())
        if gt == 0:
            thr.append(math.nan)
            best.append(math.nan)
            continue
        top_t, top_f1 = None, Fraction(-1)
        for t in sorted(set(s.tolist())):  # ascending: a later candidate must be strictly better
            predicted = s >= t
            f1 = Fraction(2 * int((predicted & pos).sum()), int(predicted.sum()) + gt)
            if f1 > top_f1:
                top_t, top_f1 = t, f1
        thr.append(top_t)
        best.append(float(top_f1))
    return np.array(thr), np.array(best)


# Columns: 0 separable at 0.3; 1 F1 tie between 0.9 and 0.6; 2 no positives.
HAND_SCORES = np.array([
    [0.30, 0.90, 0.8],
    [0.80, 0.80, 0.2],
    [0.50, 0.70, 0.6],
    [0.10, 0.60, 0.4],
    [0.20, 0.10, 0.9],
    [0.25, 0.05, 0.1],
])
HAND_TARGETS = np.array([
    [1, 1, 0],
    [1, 0, 0],
    [1, 0, 0],
    [0, 1, 0],
    [0, 0, 0],
    [0, 0, 0],
])


# --------------------------------------------------------------------------- best thresholds


def test_hand_case_known_thresholds() -> None:
    thr, f1 = best_f1_thresholds(HAND_SCORES, HAND_TARGETS)
    # class 0: positives 0.3, 0.8, 0.5 above every negative -> the lowest positive score
    assert thr[0] == 0.3 and f1[0] == 1.0
    # class 1: t=0.9 -> 2*1/(1+2) = 2/3; t=0.6 -> 2*2/(4+2) = 2/3; the tie goes to 0.6
    assert thr[1] == 0.6 and f1[1] == pytest.approx(2 / 3)
    assert math.isnan(thr[2]) and math.isnan(f1[2])
    assert thr.dtype == np.float64 and f1.dtype == np.float64 and thr.shape == (3,)


def test_tied_scores_count_together() -> None:
    # t=0.5 predicts all three 0.5s: 2*1/(3+1) = 1/2 (not 1, as if the first one counted
    # alone); t=0.2 gives 2/(4+1)
    scores = np.array([[0.5], [0.5], [0.5], [0.2]])
    targets = np.array([[1], [0], [0], [0]])
    thr, f1 = best_f1_thresholds(scores, targets)
    assert thr[0] == 0.5 and f1[0] == 0.5


def test_voc_difficult_ignored_and_never_a_candidate() -> None:
    scores = np.array([[0.95], [0.9], [0.7], [0.6], [0.5], [0.3]])
    targets = np.array([[0], [1], [0], [1], [0], [-1]])  # 0 = difficult
    thr, f1 = best_f1_thresholds(scores, targets, "voc07")
    # difficult entries do not count: t=0.6 predicts exactly the two positives. 0.5 (difficult)
    # would tie at F1 1 and be lower, but is not a candidate.
    assert thr[0] == 0.6 and f1[0] == 1.0
    # counted as negatives instead, the difficult entries lower the F1
    thr_all, f1_all = best_f1_thresholds(scores, targets, "voc07", ignore_values=())
    assert f1_all[0] < 1.0


def test_wider_99_negative_by_policy_ignored_on_request() -> None:
    scores = np.array([[0.9], [0.8], [0.4], [0.2]])
    targets = np.array([[99], [1], [1], [0]])
    # as in thresholded_metrics, policy "wider" counts 99 as a negative:
    # t=0.4 -> 2*2/(3+2) = 4/5; t=0.8 -> 2/(2+2) = 1/2
    thr, f1 = best_f1_thresholds(scores, targets, "wider")
    assert thr[0] == 0.4 and f1[0] == pytest.approx(4 / 5)
    # dropping 99 (explicitly, or with a policy that ignores it) makes t=0.4 perfect
    for kwargs in ({"policy": "wider", "ignore_values": (99,)},
                   {"policy": LabelPolicy("wider99", allowed=(0.0, 1.0, 99.0), ignore_thresholded=(99.0,))}):
        thr, f1 = best_f1_thresholds(scores, targets, **kwargs)
        assert thr[0] == 0.4 and f1[0] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_matches_brute_force_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 60, 7
    scores = rng.random((n, c))
    if seed % 2:
        scores = np.round(scores, 1)  # many tied scores (and tied F1s)
    u = rng.random((n, c))
    binary = (u < 0.3).astype(int)
    binary[:, 0] = 0  # a class without positives
    thr, f1 = best_f1_thresholds(scores, binary)
    ref_thr, ref_f1 = brute_force(scores, binary)
    np.testing.assert_array_equal(thr, ref_thr)
    np.testing.assert_allclose(f1, ref_f1, rtol=0, atol=1e-12)
    voc = np.where(u < 0.3, 1, np.where(u < 0.45, 0, -1))
    thr, f1 = best_f1_thresholds(scores, voc, "voc07")
    ref_thr, ref_f1 = brute_force(scores, voc, ignore=(0,))
    np.testing.assert_array_equal(thr, ref_thr)
    np.testing.assert_allclose(f1, ref_f1, rtol=0, atol=1e-12)


def test_empty_and_bad_inputs() -> None:
    thr, f1 = best_f1_thresholds(np.zeros((0, 3)), np.zeros((0, 3)))
    assert np.isnan(thr).all() and np.isnan(f1).all() and thr.shape == (3,)
    with pytest.raises(ValueError, match="shape"):
        best_f1_thresholds(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(LabelEncodingError):
        best_f1_thresholds(np.zeros((2, 1)), np.array([[-1], [1]]))


def test_fast_on_coco_sized_input() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((5000, 80)).astype(np.float32)
    targets = (rng.random((5000, 80)) < 0.05).astype(np.int64)
    start = time.perf_counter()
    tune_thresholds(scores, targets)
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------- tuning


def test_tune_hand_case() -> None:
    tuning = tune_thresholds(HAND_SCORES, HAND_TARGETS, global_threshold=0.5)
    np.testing.assert_array_equal(tuning.thresholds, [0.3, 0.6, 0.5])  # class 2 keeps 0.5
    # at 0.5: class 0 finds 0.8, 0.5 (2*2/(2+3)); class 1 predicts 0.9, 0.8, 0.7, 0.6 (2*2/(4+2))
    np.testing.assert_allclose(tuning.f1_global[:2], [4 / 5, 2 / 3])
    np.testing.assert_allclose(tuning.f1_tuned[:2], [1.0, 2 / 3])
    assert np.isnan(tuning.f1_global[2]) and np.isnan(tuning.f1_tuned[2])
    assert tuning.n_positives.tolist() == [3, 2, 0] and tuning.global_threshold == 0.5


def test_no_prediction_at_global_threshold_is_f1_zero() -> None:
    tuning = tune_thresholds(np.array([[0.2], [0.1]]), np.array([[1], [0]]), global_threshold=0.5)
    assert tuning.f1_global[0] == 0.0 and tuning.f1_tuned[0] == 1.0 and tuning.thresholds[0] == 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tuned_at_least_global_and_equal_to_thresholded_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((300, 10)), 2)
    u = rng.random((300, 10))
    targets = np.where(u < 0.2, 1, np.where(u < 0.3, 0, -1))
    targets[:, 3] = -1  # no positives
    for g in (0.1, 0.5, 0.9):
        tuning = tune_thresholds(scores, targets, "voc07", global_threshold=g)
        has = tuning.n_positives > 0
        assert (tuning.f1_tuned[has] >= tuning.f1_global[has] - 1e-15).all()
        assert tuning.thresholds[3] == g
        # the tuned F1 is the per-class F1 the thresholded metrics report with these thresholds
        m = thresholded_metrics(scores, targets, "voc07", threshold=tuning.thresholds)
        np.testing.assert_allclose(2 * m.tp[has] / (m.pred[has] + m.gt[has]), tuning.f1_tuned[has], atol=1e-12)
        m_g = thresholded_metrics(scores, targets, "voc07", threshold=g)
        np.testing.assert_allclose(2 * m_g.tp[has] / (m_g.pred[has] + m_g.gt[has]), tuning.f1_global[has], atol=1e-12)


# --------------------------------------------------------------------------- file


CLASSES = ("cat", "dog", "tvmonitor")


def _valid_dict() -> dict:
    return {"classes": list(CLASSES), "thresholds": [0.3, 0.6, 0.5], "split": "data/voc/val.json",
            "global_threshold": 0.5, "checkpoint": "out/best.pdparams"}


def test_save_load_round_trip(tmp_path: Path) -> None:
    tuning = tune_thresholds(HAND_SCORES, HAND_TARGETS)
    ct = tuning.to_class_thresholds(CLASSES, split="data/voc/val.json", checkpoint="out/best.pdparams")
    path = ct.save(thresholds_beside(tmp_path / "run" / "best.pdparams"))
    assert path == tmp_path / "run" / THRESHOLDS_FILENAME
    text = path.read_text(encoding="utf-8")
    assert text.startswith("{\n  ")  # indented
    data = json.loads(text)
    assert {"classes", "thresholds", "split", "global_threshold", "checkpoint", "note"} <= set(data)
    assert "source" not in data
    loaded = ClassThresholds.load(path, expected_classes=list(CLASSES))
    assert loaded.source == str(path)
    assert (loaded.classes, loaded.thresholds, loaded.split, loaded.global_threshold, loaded.checkpoint) == (
        CLASSES, (0.3, 0.6, 0.5), "data/voc/val.json", 0.5, "out/best.pdparams")
    arr = loaded.as_array()
    assert arr.dtype == np.float32 and arr.tolist() == pytest.approx([0.3, 0.6, 0.5])
    # float32 scores equal to a threshold stay predicted after the round trip
    s32 = np.array([[0.3, 0.6, 0.5]], dtype=np.float32)
    assert (s32 >= arr).all()
    # checkpoint is optional in the file
    data.pop("checkpoint")
    path.write_text(json.dumps(data), encoding="utf-8")
    assert ClassThresholds.load(path).checkpoint == ""


def test_constructor_and_conversion_checks() -> None:
    with pytest.raises(ValueError, match="2 class names but 3 thresholds"):
        ClassThresholds(classes=("a", "b"), thresholds=(0.1, 0.2, 0.3), split="s", global_threshold=0.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ClassThresholds(classes=("a",), thresholds=(1.5,), split="s", global_threshold=0.5)
    with pytest.raises(ValueError, match="class names"):
        tune_thresholds(HAND_SCORES, HAND_TARGETS).to_class_thresholds(["a"], split="s")


def _mutate(**changes) -> dict:
    data = _valid_dict()
    for key, value in changes.items():
        if value is _DROP:
            data.pop(key)
        else:
            data[key] = value
    return data


_DROP = object()


@pytest.mark.parametrize("content, needle", [
    ("{not json", "not valid JSON"),
    (json.dumps([0.3, 0.6, 0.5]), "JSON object"),
    (json.dumps(_mutate(thresholds=_DROP, split=_DROP)), "lacks the key(s) thresholds, split"),
    (json.dumps(_mutate(thresholds=[0.3, 0.6])), "3 classes but 2 thresholds"),
    (json.dumps(_mutate(thresholds=[0.3, 1.5, 0.5])), "threshold 1.5 for class 1 'dog'"),
    (json.dumps(_mutate(thresholds=[0.3, -0.1, 0.5])), "threshold -0.1"),
    (json.dumps(_mutate(thresholds=[0.3, True, 0.5])), "threshold true"),
    (json.dumps(_mutate(thresholds=[0.3, "0.6", 0.5])), 'threshold "0.6"'),
    (json.dumps(_mutate(thresholds=[0.3, None, 0.5])), "threshold null"),
    ('{"classes": ["cat"], "thresholds": [NaN], "split": "s", "global_threshold": 0.5}', "threshold NaN"),
    (json.dumps(_mutate(classes=["cat", "dog", "cat"])), "duplicate class name(s) 'cat'"),
    (json.dumps(_mutate(classes=[], thresholds=[])), "no classes"),
    (json.dumps(_mutate(classes=["cat", 2, "x"])), "not a list of class names"),
    (json.dumps(_mutate(thresholds="0.5")), "not a list of numbers"),
    (json.dumps(_mutate(global_threshold=False)), "global_threshold false"),
    (json.dumps(_mutate(split=3)), "'split' that is not a string"),
    (json.dumps(_mutate(checkpoint=["x"])), "'checkpoint' that is not a string"),
])
def test_load_errors_name_the_file_and_the_fix(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as info:
        ClassThresholds.load(path)
    message = str(info.value)
    assert str(path) in message and needle in message
    assert "val.py --tune_thresholds" in message and "--threshold" in message
    assert "\n" not in message


def test_load_missing_file_and_folder(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.json", tmp_path):
        with pytest.raises(UserError) as info:
            ClassThresholds.load(path)
        assert str(path) in str(info.value) and "val.py --tune_thresholds" in str(info.value)


def test_load_class_mismatch_names_unknown_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(_valid_dict()), encoding="utf-8")
    with pytest.raises(UserError) as info:
        ClassThresholds.load(path, expected_classes=["cat", "dog", "person"])
    message = str(info.value)
    assert str(path) in message
    assert "unknown to the model: 'tvmonitor'" in message and "missing from the file: 'person'" in message
    assert "val.py --tune_thresholds" in message and "--threshold" in message
    with pytest.raises(UserError, match="missing from the file: 'bird'") as info:
        ClassThresholds.load(path, expected_classes=[*CLASSES, "bird"])
    assert "unknown" not in str(info.value)
    with pytest.raises(UserError, match="different order") as info:
        ClassThresholds.load(path, expected_classes=["dog", "cat", "tvmonitor"])
    assert "position 0: file 'cat', model 'dog'" in str(info.value) and str(path) in str(info.value)


# --------------------------------------------------------------------------- reports


def test_format_tuning_table() -> None:
    tuning = tune_thresholds(HAND_SCORES, HAND_TARGETS, global_threshold=0.5)
    table = format_tuning_table(tuning, list(CLASSES))
    lines = table.splitlines()
    assert "threshold" in lines[0] and "positives" in lines[0] and "F1 @0.5 (%)" in lines[0] and "F1 tuned (%)" in lines[0]
    assert lines[2].split() == ["0", "cat", "3", "0.3000", "80.00", "100.00"]
    assert lines[3].split() == ["1", "dog", "2", "0.6000", "66.67", "66.67"]
    assert lines[4].split() == ["2", "tvmonitor", "0", "0.5000*", "n/a", "n/a"]
    assert len({len(ln) for ln in lines[:5]}) == 1  # aligned
    # mean over the 2 classes with positives: (80 + 66.67)/2 = 73.33, (100 + 66.67)/2 = 83.33
    assert "2 of 3 classes" in lines[-1] and "73.33%" in lines[-1] and "83.33%" in lines[-1]
    with pytest.raises(ValueError):
        format_tuning_table(tuning, ["a"])


def test_format_side_by_side() -> None:
    tuning = tune_thresholds(HAND_SCORES, HAND_TARGETS, global_threshold=0.5)
    at_g = thresholded_metrics(HAND_SCORES, HAND_TARGETS, threshold=0.5)
    tuned = thresholded_metrics(HAND_SCORES, HAND_TARGETS, threshold=tuning.thresholds)
    lines = format_side_by_side(at_g, tuned, 0.5).splitlines()
    assert "0.5" in lines[0] and "tuned" in lines[0]
    assert [ln.split()[0] for ln in lines[2:]] == ["CP", "CR", "CF1", "OP", "OR", "OF1"]
    cr = lines[3].split()
    assert cr[1] == f"{100 * at_g.cr:.2f}" and cr[2] == f"{100 * tuned.cr:.2f}"
    assert tuned.cr == pytest.approx(1.0) and cr[2] == "100.00"
