"""Speed and agreement check of the vectorised evaluator.

Run from the repository root::

    .venv/bin/python bench/eval_speed.py [--seed 0] [--repeats 3]

Two synthetic problems: COCO-val sized (40,504 images x 80 classes, binary labels, about
3 % positives) and VOC07-test sized (4,952 x 20, ternary 1/-1/0 labels). For each it times
the full ``evaluation.metrics.evaluate`` (AP, thresholded metrics and top-3 variant; best of
``--repeats``) and a plain per-class Python loop computing only the AP the way the reference
algorithm does (one argsort per class, then a loop over ranks), and prints the speed-up and
the largest absolute difference between the two sets of per-class APs.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from utils.errors import run_cli  # noqa: E402
from evaluation.metrics import average_precision, evaluate  # noqa: E402


def loop_average_precision(scores: np.ndarray, targets: np.ndarray, ignore: tuple[float, ...]) -> np.ndarray:
    """Straightforward per-class AP, one Python loop over ranks per class.

    Args:
        scores: ``[N, C]`` float scores.
        targets: ``[N, C]`` labels; 1 positive, values in ``ignore`` dropped, others negative.
        ignore: target values to drop.
    Returns:
        ``[C]`` AP per class (NaN without positives).
    """
    n_classes = scores.shape[1]
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        keep = ~np.isin(targets[:, c], ignore)
        s = scores[keep, c]
        t = np.where(targets[keep, c] == 1, 1.0, 0.0)
        order = np.argsort(-s, kind="stable")  # ties: earlier image first
        t = t[order]
        found = 0.0
        total = 0.0
        for i in range(len(t)):  # element-wise, as the reference's loop does
            if t[i] == 1:
                found += 1.0
                total += found / (i + 1)
        if found:
            out[c] = total / found
    return out


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Run ``fn`` ``repeats`` times; return (fastest wall time in s, last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_case(name: str, scores: np.ndarray, targets: np.ndarray, policy: str, ignore: tuple[float, ...],
             repeats: int) -> None:
    """Time both implementations on one problem and print the comparison."""
    n, c = scores.shape
    t_vec, res = best_time(lambda: evaluate(scores, targets, policy=policy), repeats)
    t_ap, _ = best_time(lambda: average_precision(scores, targets, policy), repeats)
    t_loop, ap_loop = best_time(lambda: loop_average_precision(scores, targets, ignore), 1)
    diff = np.nanmax(np.abs(res.ap - ap_loop))
    same_nan = bool(np.array_equal(np.isnan(res.ap), np.isnan(ap_loop)))
    print(f"[{name}] {n} x {c}, policy={policy}, positives={int((targets == 1).sum())}")
    print(f"  vectorised evaluate (AP+thresholded+top3), best of {repeats}: {t_vec:.3f} s")
    print(f"  vectorised average_precision (AP only), best of {repeats}: {t_ap:.3f} s")
    print(f"  per-class Python loop (AP only):                 {t_loop:.3f} s")
    print(f"  speed-up: full evaluate {t_loop / t_vec:.1f}x, AP only {t_loop / t_ap:.1f}x")
    print(f"  max |AP_vectorised - AP_loop| = {diff:.3e} (NaN pattern equal: {same_nan})")
    print(f"  mAP = {res.map:.6f}")


def main(argv: list[str] | None = None) -> int:
    """Generate the synthetic problems, run both timings, print results. Returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats of evaluate (default 3)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    # COCO-like: 40,504 x 80, ~3 % positives; scores a bit higher on positives.
    t_coco = (rng.random((40504, 80)) < 0.03).astype(np.float64)
    s_coco = np.clip(rng.normal(0.25 + 0.4 * t_coco, 0.2), 0.0, 1.0)
    run_case("coco-val size", s_coco, t_coco, "coco", (), args.repeats)

    # VOC07-test-like: 4,952 x 20; ~7 % positives, ~1 % difficult (0), rest -1.
    u = rng.random((4952, 20))
    t_voc = np.where(u < 0.07, 1.0, np.where(u < 0.08, 0.0, -1.0))
    s_voc = np.clip(rng.normal(0.2 + 0.5 * (t_voc == 1), 0.2), 0.0, 1.0)
    run_case("voc07-test size", s_voc, t_voc, "voc07", (0.0,), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
