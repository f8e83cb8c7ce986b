"""Tests of evaluation.metrics (AP, thresholded metrics, formatting) and the evaluation.evaluate CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from utils.errors import UserError
from evaluation.evaluate import match_predictions
from evaluation.metrics import (
    LabelEncodingError,
    average_precision,
    evaluate,
    format_class_table,
    format_reference_lines,
    mean_average_precision,
    thresholded_metrics,
    topk_mask,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# A hand-made 4 images x 3 classes case used by several tests.
HAND_SCORES = np.array(
    [
        [0.9, 0.2, 0.6],
        [0.4, 0.7, 0.1],
        [0.6, 0.8, 0.3],
        [0.1, 0.3, 0.55],
    ]
)
HAND_TARGETS = np.array(
    [
        [1, 0, 0],
        [1, 1, 0],
        [0, 1, 0],
        [0, 0, 1],
    ]
)
# AP by hand (rank = position after sorting by score, descending):
#   class 0: order img0(+) img2(-) img1(+) img3(-): (1/1 + 2/3) / 2 = 5/6
#   class 1: order img2(+) img1(+) ...:             (1/1 + 2/2) / 2 = 1
#   class 2: order img0(-) img3(+) ...:             (1/2) / 1       = 1/2
#   mAP = (5/6 + 1 + 1/2) / 3 = 7/9
# Thresholded at 0.5 (predicted = score >= 0.5):
#   class 0: pred {0,2}=2, gt {0,1}=2, tp {0}=1
#   class 1: pred {1,2}=2, gt {1,2}=2, tp 2
#   class 2: pred {0,3}=2, gt {3}=1,  tp 1
#   CP = (1/2 + 1 + 1/2)/3 = 2/3, CR = (1/2 + 1 + 1)/3 = 5/6, CF1 = 2*CP*CR/(CP+CR) = 20/27
#   OP = 4/6 = 2/3, OR = 4/5, OF1 = 8/11
#   per-class F1 = 2tp/(pred+gt) = 1/2, 1, 2/3 -> mean 13/18
HAND_AP = np.array([5 / 6, 1.0, 0.5])


def loop_ap(scores: np.ndarray, targets: np.ndarray, ignore: tuple[float, ...] = ()) -> np.ndarray:
    """Plain per-class AP with a stable descending sort (ties: earlier image first)."""
    out = []
    for c in range(scores.shape[1]):
        keep = ~np.isin(targets[:, c], ignore)
        s, t = scores[keep, c], targets[keep, c] == 1
        t = t[np.argsort(-s, kind="stable")]
        hits, total = 0, 0.0
        for r, p in enumerate(t, start=1):
            if p:
                hits += 1
                total += hits / r
        out.append(total / hits if hits else math.nan)
    return np.array(out)


# --------------------------------------------------------------------------- AP


def test_ap_matches_sklearn_on_tie_free_data() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((200, 6))
    targets = (rng.random((200, 6)) < 0.3).astype(int)
    assert len(np.unique(scores)) == scores.size  # tie-free
    ap = average_precision(scores, targets)
    expected = [average_precision_score(targets[:, c], scores[:, c]) for c in range(6)]
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)


def test_ap_with_voc_ignore_matches_sklearn_on_kept_entries() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((200, 5))
    u = rng.random((200, 5))
    targets = np.where(u < 0.25, 1, np.where(u < 0.35, 0, -1))
    ap = average_precision(scores, targets, "voc07")
    for c in range(5):
        keep = targets[:, c] != 0
        exp = average_precision_score(targets[keep, c] == 1, scores[keep, c])
        assert ap[c] == pytest.approx(exp, abs=1e-12)


def test_ap_hand_case() -> None:
    np.testing.assert_allclose(average_precision(HAND_SCORES, HAND_TARGETS), HAND_AP, atol=1e-15)


def test_ap_ties_broken_by_image_order() -> None:
    scores = np.array([[0.9, 0.9], [0.5, 0.5], [0.5, 0.5], [0.1, 0.1]])
    targets = np.array([[0, 0], [1, 0], [0, 1], [1, 1]])
    ap = average_precision(scores, targets)
    # class 0: order img0(-) img1(+) img2(-) img3(+) (img1 before img2 on the 0.5 tie):
    #   (1/2 + 2/4) / 2 = 1/2
    # class 1: order img0(-) img1(-) img2(+) img3(+): (1/3 + 2/4) / 2 = 5/12
    np.testing.assert_allclose(ap, [0.5, 5 / 12], atol=1e-15)
    # sklearn groups tied scores instead, so on tied data it gives 5/12 for class 0 too:
    # threshold 0.5 -> P=1/3 at R=1/2, threshold 0.1 -> P=2/4 at R=1: 1/2*1/3 + 1/2*1/2.
    assert average_precision_score(targets[:, 0], scores[:, 0]) == pytest.approx(5 / 12)


def test_ap_tie_heavy_data_equals_stable_loop() -> None:
    rng = np.random.default_rng(2)
    scores = np.round(rng.random((300, 7)), 1)  # 11 distinct values: many ties
    targets = (rng.random((300, 7)) < 0.2).astype(int)
    np.testing.assert_array_equal(average_precision(scores, targets), loop_ap(scores, targets))
    # deterministic and independent of the other columns
    np.testing.assert_array_equal(average_precision(scores[:, 3:4], targets[:, 3:4])[0],
                                  loop_ap(scores, targets)[3])


def test_ap_voc_ternary_hand_case() -> None:
    scores = np.array([[0.8], [0.7], [0.6], [0.5], [0.4]])
    targets = np.array([[-1], [0], [1], [-1], [1]])
    # img1 is difficult (0) and dropped; kept order img0(-) img2(+) img3(-) img4(+):
    #   (1/2 + 2/4) / 2 = 1/2. (Counted as a negative it would give (1/3 + 2/5)/2 = 11/30.)
    assert average_precision(scores, targets, "voc07")[0] == pytest.approx(0.5, abs=1e-15)
    assert average_precision(scores, targets, ignore_values=())[0] == pytest.approx(11 / 30, abs=1e-15)
    assert average_precision(scores, targets, ignore_values=(0,))[0] == pytest.approx(0.5, abs=1e-15)


def test_wider_99_ignored_for_ap_negative_for_thresholded() -> None:
    scores = np.array([[0.9], [0.8], [0.7], [0.2]])
    targets = np.array([[99], [1], [0], [1]])
    # AP: img0 (99) dropped; order img1(+) img2(-) img3(+): (1 + 2/3)/2 = 5/6
    assert average_precision(scores, targets, "wider")[0] == pytest.approx(5 / 6, abs=1e-15)
    m = thresholded_metrics(scores, targets, "wider")
    # thresholded: img0 counts as a predicted negative -> false positive
    assert (m.tp[0], m.pred[0], m.gt[0]) == (1, 3, 2)
    assert m.op == pytest.approx(1 / 3) and m.or_ == pytest.approx(1 / 2)


def test_voc_difficult_dropped_from_thresholded() -> None:
    scores = np.array([[0.9], [0.8], [0.3]])
    targets = np.array([[0], [1], [-1]])
    m = thresholded_metrics(scores, targets, "voc07")
    # img0 is difficult: its positive prediction is not counted
    assert (m.tp[0], m.pred[0], m.gt[0]) == (1, 1, 1)


@pytest.mark.parametrize("bad,hint", [(-1, "--dataset voc07"), (99, "--dataset wider")])
def test_binary_policy_rejects_other_encodings(bad: int, hint: str) -> None:
    scores = np.full((3, 2), 0.5)
    targets = np.array([[1, 0], [bad, 1], [0, 0]])
    with pytest.raises(LabelEncodingError, match=hint) as info:
        evaluate(scores, targets)
    assert isinstance(info.value, ValueError) and isinstance(info.value, UserError)
    with pytest.raises(ValueError):
        average_precision(scores, targets, "coco")


def test_voc_policy_rejects_99() -> None:
    with pytest.raises(LabelEncodingError):
        average_precision(np.zeros((2, 1)), np.array([[99], [1]]), "voc07")


def test_non_finite_scores_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        average_precision(np.array([[np.nan], [0.1]]), np.array([[1], [0]]))


# --------------------------------------------------------------------------- no positives


def test_no_positive_class_policy() -> None:
    scores = np.array([[0.9, 0.8, 0.1], [0.2, 0.7, 0.6], [0.4, 0.1, 0.3]])
    targets = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 0]])  # class 1 has no positive
    res = evaluate(scores, targets)
    # class 0: order img0(+) img2(+) img1(-) -> 1;  class 2: order img1(+) -> 1
    assert np.isnan(res.ap[1])
    np.testing.assert_allclose(res.ap[[0, 2]], [1.0, 1.0])
    assert res.map == pytest.approx(1.0)
    assert res.n_classes_without_positives == 1
    # class 1 has 2 false positives: excluded from CP, but counted in OP
    assert res.thresholded.pred.tolist() == [1, 2, 1]
    assert res.cp == pytest.approx(1.0)  # classes 0 and 2: 1/1 each
    assert res.cr == pytest.approx(0.75)  # class 0 finds 1 of 2, class 2 finds 1 of 1
    assert res.op == pytest.approx(2 / 4)
    zero = evaluate(scores, targets, no_positive="zero")
    assert zero.map == pytest.approx(2 / 3)
    assert zero.cp == pytest.approx(2 / 3) and zero.cr == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert mean_average_precision(np.array([np.nan, np.nan])) == (pytest.approx(math.nan, nan_ok=True), 2)
    assert "1 of 3 classes have no positives" in format_class_table(res)


# --------------------------------------------------------------------------- thresholded


def test_thresholded_hand_case() -> None:
    m = thresholded_metrics(HAND_SCORES, HAND_TARGETS)
    assert m.tp.tolist() == [1, 2, 1] and m.pred.tolist() == [2, 2, 2] and m.gt.tolist() == [2, 2, 1]
    assert m.cp == pytest.approx(2 / 3)
    assert m.cr == pytest.approx(5 / 6)
    assert m.cf1 == pytest.approx(20 / 27)
    assert m.op == pytest.approx(2 / 3)
    assert m.or_ == pytest.approx(4 / 5)
    assert m.of1 == pytest.approx(8 / 11)
    assert m.mean_class_f1 == pytest.approx(13 / 18)


def test_threshold_is_inclusive_and_configurable() -> None:
    scores = np.array([[0.5], [0.49]])
    targets = np.array([[1], [1]])
    assert thresholded_metrics(scores, targets).tp[0] == 1
    assert thresholded_metrics(scores, targets, threshold=0.4).tp[0] == 2


def test_zero_predictions_counted_as_one_like_reference() -> None:
    scores = np.array([[0.9, 0.1], [0.1, 0.2]])
    targets = np.array([[1, 0], [0, 1]])
    m = thresholded_metrics(scores, targets)
    # class 1 predicts nothing: its pred 0 is replaced by 1 in CP and OP
    assert m.pred.tolist() == [1, 0]
    assert m.cp == pytest.approx((1 + 0) / 2)
    assert m.op == pytest.approx(1 / 2)
    assert m.cr == pytest.approx(1 / 2) and m.or_ == pytest.approx(1 / 2)


def test_mean_class_f1_matches_sklearn_macro_f1() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((200, 8))
    targets = (rng.random((200, 8)) < 0.4).astype(int)
    assert (targets.sum(axis=0) > 0).all()
    m = thresholded_metrics(scores, targets)
    assert m.mean_class_f1 == pytest.approx(f1_score(targets, scores >= 0.5, average="macro"), abs=1e-12)
    # the reference's CF1 (harmonic mean of CP and CR) is a different number
    assert m.cf1 != pytest.approx(m.mean_class_f1, abs=1e-6)


def test_top3() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1], [0.55, 0.2, 0.95, 0.3, 0.51]])
    targets = np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 1]])
    # top-3 keeps img0 {0,1,2} (drops class 3 at 0.6) and img1 {2,0,4}.
    # per class (tp, pred, gt): c0 (1,2,1) c1 (0,1,0) c2 (1,2,1) c3 (0,0,1) c4 (1,1,1)
    m = thresholded_metrics(scores, targets, topk=3)
    assert m.tp.tolist() == [1, 0, 1, 0, 1]
    assert m.pred.tolist() == [2, 1, 2, 0, 1]
    assert m.gt.tolist() == [1, 0, 1, 1, 1]
    assert m.op == pytest.approx(3 / 7)  # pred sum with 0 -> 1: 2+1+2+1+1
    assert m.or_ == pytest.approx(3 / 4)
    assert m.cp == pytest.approx((1 / 2 + 1 / 2 + 0 + 1) / 4)  # class 1 (no gt) left out
    assert m.cr == pytest.approx((1 + 1 + 0 + 1) / 4)
    res = evaluate(scores, targets)
    assert res.top3.tp.tolist() == m.tp.tolist() and res.top3.op == pytest.approx(m.op)
    assert res.thresholded.tp.tolist() == [1, 0, 1, 1, 1]  # without top-3, class 3 is found


def test_topk_mask_ties_take_lower_index() -> None:
    mask = topk_mask(np.array([[0.5, 0.5, 0.5, 0.5], [0.1, 0.9, 0.9, 0.9]]), 3)
    assert mask.tolist() == [[True, True, True, False], [False, True, True, True]]
    assert topk_mask(np.zeros((2, 2)), 3).all()


# --------------------------------------------------------------------------- formatting

HAND_LINES = (
    "mAP: 0.777778\n"
    "CP: 0.666667, CR: 0.833333, CF1 :0.740741\n"
    "OP: 0.666667, OR: 0.800000, OF1 0.727273"
)


def test_format_reference_lines_exact() -> None:
    res = evaluate(HAND_SCORES, HAND_TARGETS)
    assert res.map == pytest.approx(7 / 9)
    assert format_reference_lines(res) == HAND_LINES


def test_format_class_table() -> None:
    res = evaluate(HAND_SCORES, HAND_TARGETS, class_names=["cat", "dog", "tvmonitor"])
    table = format_class_table(res)
    lines = table.splitlines()
    assert "positives" in lines[0] and "AP (%)" in lines[0]
    assert "best thr" in lines[0] and "best F1 (%)" in lines[0]
    # best thresholds by hand: class 0 scores 0.9(+) 0.6(-) 0.4(+) 0.1(-): t=0.4 -> 2*2/(3+2);
    # class 1: t=0.7 -> 1; class 2: 0.6(-) 0.55(+): t=0.55 -> 2*1/(2+1)
    assert lines[2].split() == ["0", "cat", "2", "83.33", "0.4000", "80.00"]
    assert lines[3].split() == ["1", "dog", "2", "100.00", "0.7000", "100.00"]
    assert lines[4].split() == ["2", "tvmonitor", "1", "50.00", "0.5500", "66.67"]
    assert len({len(ln) for ln in lines[:5]}) == 1  # aligned
    assert lines[-1].split() == ["mAP", "5", "77.78"]


def test_to_dict_is_json_ready() -> None:
    targets = HAND_TARGETS.copy()
    targets[:, 2] = 0
    d = evaluate(HAND_SCORES, targets).to_dict()
    json.dumps(d, allow_nan=False)
    assert d["per_class"][2]["ap"] is None and d["n_classes_without_positives"] == 1
    assert d["per_class"][2]["best_threshold"] is None and d["per_class"][2]["best_f1"] is None
    assert d["per_class"][0]["best_threshold"] == 0.4 and d["per_class"][0]["best_f1"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- per-class thresholds


def test_eval_result_best_thresholds() -> None:
    res = evaluate(HAND_SCORES, HAND_TARGETS)
    np.testing.assert_array_equal(res.best_threshold, [0.4, 0.7, 0.55])
    np.testing.assert_allclose(res.best_f1, [0.8, 1.0, 2 / 3])
    # they are the per-class F1 the thresholded metrics give at those thresholds
    m = thresholded_metrics(HAND_SCORES, HAND_TARGETS, threshold=res.best_threshold)
    np.testing.assert_allclose(2 * m.tp / (m.pred + m.gt), res.best_f1)
    # VOC difficult entries are left out, as in the thresholded metrics
    voc = evaluate(np.array([[0.9], [0.8], [0.3]]), np.array([[0], [1], [-1]]), "voc07")
    assert voc.best_threshold[0] == 0.8 and voc.best_f1[0] == 1.0
    no_pos = evaluate(HAND_SCORES, np.zeros_like(HAND_TARGETS))
    assert np.isnan(no_pos.best_threshold).all() and np.isnan(no_pos.best_f1).all()
    assert format_class_table(no_pos).splitlines()[2].split()[-3:] == ["n/a", "n/a", "n/a"]


def test_per_class_threshold_array_of_0_5_equals_float() -> None:
    rng = np.random.default_rng(4)
    scores = np.round(rng.random((100, 6)), 2)
    targets = (rng.random((100, 6)) < 0.3).astype(int)
    for topk in (None, 3):
        a = thresholded_metrics(scores, targets, threshold=0.5, topk=topk)
        b = thresholded_metrics(scores, targets, threshold=np.full(6, 0.5), topk=topk)
        c = thresholded_metrics(scores, targets, threshold=[0.5] * 6, topk=topk)
        for m in (b, c):
            assert (m.tp.tolist(), m.pred.tolist(), m.gt.tolist()) == (a.tp.tolist(), a.pred.tolist(), a.gt.tolist())
            assert (m.cp, m.cr, m.cf1, m.op, m.or_, m.of1, m.mean_class_f1) == (
                a.cp, a.cr, a.cf1, a.op, a.or_, a.of1, a.mean_class_f1)
    r_float = evaluate(scores, targets, threshold=0.5)
    r_array = evaluate(scores, targets, threshold=np.full(6, 0.5))
    assert format_reference_lines(r_float) == format_reference_lines(r_array)
    assert r_float.top3.tp.tolist() == r_array.top3.tp.tolist()


def test_per_class_thresholds_change_only_their_classes() -> None:
    rng = np.random.default_rng(5)
    scores = rng.random((200, 5))
    targets = (rng.random((200, 5)) < 0.4).astype(int)
    base = thresholded_metrics(scores, targets, threshold=0.5)
    thr = np.array([0.5, 0.2, 0.5, 0.9, 0.5])
    m = thresholded_metrics(scores, targets, threshold=thr)
    same = [0, 2, 4]
    assert m.tp[same].tolist() == base.tp[same].tolist() and m.pred[same].tolist() == base.pred[same].tolist()
    assert m.gt.tolist() == base.gt.tolist()
    for c in (1, 3):
        predicted = scores[:, c] >= thr[c]
        assert m.pred[c] == predicted.sum() and m.tp[c] == (predicted & (targets[:, c] == 1)).sum()
        assert m.pred[c] != base.pred[c]
    # with top-3, the per-class thresholds still apply column by column
    t3 = thresholded_metrics(scores, targets, threshold=thr, topk=3)
    expected = (scores >= thr) & topk_mask(scores, 3)
    assert t3.pred.tolist() == expected.sum(axis=0).tolist()
    # evaluate uses the same rule and reports the array, JSON-ready
    res = evaluate(scores, targets, threshold=thr)
    assert res.thresholded.tp.tolist() == m.tp.tolist() and res.cp == pytest.approx(m.cp)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["threshold"] == thr.tolist() and d["thresholded"]["threshold"] == thr.tolist()


def test_per_class_threshold_shape_and_values_checked() -> None:
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        thresholded_metrics(HAND_SCORES, HAND_TARGETS, threshold=[0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(HAND_SCORES, HAND_TARGETS, threshold=[0.5, np.nan, 0.5])
    assert thresholded_metrics(HAND_SCORES, HAND_TARGETS, threshold=np.float32(0.5)).threshold == 0.5


# --------------------------------------------------------------------------- matching


def _entries(paths: list[str], rows: np.ndarray, key: str) -> list[dict]:
    return [{"img_path": p, key: r.tolist()} for p, r in zip(paths, rows)]


def test_match_predictions_by_path_and_bbox() -> None:
    anns = [
        {"img_path": "a/1.jpg", "target": [1, 0], "bbox": [0, 0, 10, 10]},
        {"img_path": "a/1.jpg", "target": [0, 1], "bbox": [5, 5, 10, 10]},
        {"img_path": "a/2.jpg", "target": [1, 1], "bbox": [1, 2, 3, 4]},
    ]
    preds = [
        {"img_path": "a/./2.jpg", "scores": [0.3, 0.3], "bbox": [1, 2, 3, 4]},
        {"img_path": "a/1.jpg", "scores": [0.2, 0.2], "bbox": [5.0, 5.0, 10.0, 10.0]},
        {"img_path": "a//1.jpg", "scores": [0.1, 0.1], "bbox": [0, 0, 10, 10]},
    ]
    s, t = match_predictions(preds, anns)
    assert s[:, 0].tolist() == [0.1, 0.2, 0.3]
    assert t.tolist() == [[1, 0], [0, 1], [1, 1]]
    # without bbox on the predictions: duplicates of a path are paired in order
    s2, _ = match_predictions([{k: v for k, v in p.items() if k != "bbox"} for p in preds], anns)
    assert s2[:, 0].tolist() == [0.2, 0.1, 0.3]


def test_match_predictions_errors() -> None:
    anns = [{"img_path": f"{i}.jpg", "target": [1, 0]} for i in range(8)]
    preds = [{"img_path": f"{i}.jpg", "scores": [0.5, 0.5]} for i in range(8)]
    with pytest.raises(UserError, match=r"2 annotated image\(s\) have no prediction \(first: 6.jpg, 7.jpg\)"):
        match_predictions(preds[:6], anns)
    with pytest.raises(UserError, match=r"1 prediction\(s\) match no annotated image \(first: x.jpg\)"):
        match_predictions(preds + [{"img_path": "x.jpg", "scores": [0.1, 0.1]}], anns)
    with pytest.raises(UserError, match="has 3 scores"):
        match_predictions([{"img_path": "0.jpg", "scores": [0.1, 0.2, 0.3]}] + preds[1:], anns)


# --------------------------------------------------------------------------- CLI


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evaluation.evaluate", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture()
def hand_files(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    paths = [f"JPEGImages/{i:06d}.jpg" for i in range(4)]
    ann = _write(tmp_path / "test.json", _entries(paths, HAND_TARGETS, "target"))
    preds = _entries(paths, HAND_SCORES, "scores")
    return tmp_path, ann, preds


def test_cli_prints_reference_lines_and_table(hand_files) -> None:
    tmp, ann, preds = hand_files
    pred = _write(tmp / "scores.json", preds)
    (tmp / "names.txt").write_text("cat\ndog\ntvmonitor\n", encoding="utf-8")
    out_json = tmp / "out" / "metrics.json"
    proc = _run("--pred", str(pred), "--ann", str(ann), "--classes", str(tmp / "names.txt"),
                "--json_out", str(out_json))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "\n".join(lines[:3]) == HAND_LINES
    assert "tvmonitor" in proc.stdout and "83.33" in proc.stdout
    metrics = json.loads(out_json.read_text())
    assert metrics["mAP"] == pytest.approx(7 / 9) and metrics["per_class"][0]["name"] == "cat"


def test_cli_shuffled_predictions_same_map(hand_files) -> None:
    tmp, ann, preds = hand_files
    pred = _write(tmp / "shuffled.json", [preds[i] for i in (2, 0, 3, 1)])
    proc = _run("--pred", str(pred), "--ann", str(ann))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:3] == HAND_LINES.splitlines()


def _assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_cli_missing_image(hand_files) -> None:
    tmp, ann, preds = hand_files
    pred = _write(tmp / "scores.json", preds[:3])
    _assert_one_line_error(_run("--pred", str(pred), "--ann", str(ann)),
                           "1 annotated image(s) have no prediction", "000003.jpg")


def test_cli_extra_image(hand_files) -> None:
    tmp, ann, preds = hand_files
    pred = _write(tmp / "scores.json", preds + [{"img_path": "other.jpg", "scores": [0.1, 0.1, 0.1]}])
    _assert_one_line_error(_run("--pred", str(pred), "--ann", str(ann)),
                           "1 prediction(s) match no annotated image", "other.jpg")


def test_cli_bad_json_and_wrong_length_and_encoding(hand_files) -> None:
    tmp, ann, preds = hand_files
    broken = tmp / "broken.json"
    broken.write_text("[{", encoding="utf-8")
    _assert_one_line_error(_run("--pred", str(broken), "--ann", str(ann)), str(broken), "not valid JSON")
    _assert_one_line_error(_run("--pred", str(tmp / "nope.json"), "--ann", str(ann)), "does not exist")
    short = _write(tmp / "short.json", [dict(p, scores=p["scores"][:2]) for p in preds])
    _assert_one_line_error(_run("--pred", str(short), "--ann", str(ann)), "has 2 scores", "3 targets")
    voc_ann = _write(tmp / "voc.json", [dict(a, target=[-1 if v == 0 else v for v in a["target"]])
                                        for a in json.loads(ann.read_text())])
    pred = _write(tmp / "scores.json", preds)
    _assert_one_line_error(_run("--pred", str(pred), "--ann", str(voc_ann)), "--dataset voc07", str(voc_ann))
    proc = _run("--pred", str(pred), "--ann", str(voc_ann), "--dataset", "voc07")
    assert proc.returncode == 0, proc.stderr
    # -1 here plays the role of 0 in the binary file, so every metric is unchanged
    assert proc.stdout.splitlines()[:3] == HAND_LINES.splitlines()
