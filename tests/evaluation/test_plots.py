"""Tests of evaluation.plots (PR curves, AP bars, training curves) and the tools.plot_metrics CLI."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation.metrics import LabelEncodingError, average_precision
from evaluation.plots import (
    TRAINING_CURVES_NAME,
    last_row_per_epoch,
    plot_ap_bars,
    plot_pr_curves,
    plot_training_curves,
    precision_recall_curves,
    read_metrics_jsonl,
)
from utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Assert ``path`` is a non-empty PNG file; return its (width, height) in pixels."""
    assert path.is_file()
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def brute_force_pr(scores: np.ndarray, targets: np.ndarray, ignored: tuple[float, ...] = ()) -> list[tuple[list, list]]:
    """Per class: for every distinct kept score t (descending), precision and recall of score >= t."""
    curves = []
    for c in range(scores.shape[1]):
        kept = [(s, t) for s, t in zip(scores[:, c], targets[:, c]) if t not in ignored]
        n_pos = sum(1 for _, t in kept if t == 1)
        if n_pos == 0:
            curves.append(([], []))
            continue
        precision, recall = [], []
        for thr in sorted({s for s, _ in kept}, reverse=True):
            predicted = [t for s, t in kept if s >= thr]
            tp = sum(1 for t in predicted if t == 1)
            precision.append(tp / len(predicted))
            recall.append(tp / n_pos)
        curves.append((precision, recall))
    return curves


# --------------------------------------------------------------------------- PR curves


def test_pr_curve_known_points() -> None:
    scores = np.array([[0.9], [0.8], [0.7], [0.6]])
    targets = np.array([[1], [0], [1], [0]])
    [(precision, recall)] = precision_recall_curves(scores, targets)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0, 1.0])


def test_pr_curves_match_brute_force_with_ties_ignored_and_no_positives() -> None:
    # class 0: ties across a positive and a negative; class 1: VOC "difficult" (0) entries,
    # one of them with the highest score; class 2: no positive (only -1 and 0).
    scores = np.array([
        [0.9, 0.95, 0.3],
        [0.7, 0.60, 0.2],
        [0.7, 0.60, 0.9],
        [0.5, 0.40, 0.1],
        [0.2, 0.10, 0.5],
        [0.7, 0.80, 0.4],
    ])
    targets = np.array([
        [1, 0, -1],
        [-1, 1, 0],
        [1, -1, -1],
        [-1, 1, -1],
        [1, -1, 0],
        [-1, 0, -1],
    ])
    got = precision_recall_curves(scores, targets, "voc07")
    want = brute_force_pr(scores, targets, ignored=(0,))
    assert len(got) == 3
    for (p, r), (wp, wr) in zip(got, want):
        np.testing.assert_allclose(p, wp)
        np.testing.assert_allclose(r, wr)
    # class 0: thresholds 0.9, 0.7 (three tied images: one point), 0.5, 0.2
    np.testing.assert_allclose(got[0][0], [1.0, 0.5, 0.4, 0.5])
    np.testing.assert_allclose(got[0][1], [1 / 3, 2 / 3, 2 / 3, 1.0])
    assert got[2][0].size == 0 and got[2][1].size == 0


def test_pr_curve_area_equals_average_precision_on_tie_free_data() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((200, 4))
    targets = (rng.random((200, 4)) < 0.3).astype(float)
    ap = average_precision(scores, targets)
    for c, (precision, recall) in enumerate(precision_recall_curves(scores, targets)):
        area = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
        assert area == pytest.approx(ap[c], abs=1e-12)


def test_pr_curves_reject_bad_encoding() -> None:
    with pytest.raises(LabelEncodingError):
        precision_recall_curves(np.zeros((2, 1)), np.array([[1], [-1]]), "binary")


# --------------------------------------------------------------------------- figures


def random_case(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < 0.2).astype(float)
    scores = np.clip(0.4 * targets + 0.7 * rng.random((n, c)), 0.0, 1.0)
    return scores, targets


@pytest.mark.parametrize("c", [1, 3, 80])
def test_plot_pr_curves_writes_bounded_png(tmp_path: Path, c: int) -> None:
    scores, targets = random_case(300, c)
    if c > 1:
        targets[:, -1] = 0  # a class without positives: "no positives" panel
    names = [f"class {i}" for i in range(c)]
    path = plot_pr_curves(scores, targets, names, "binary", tmp_path / "sub" / "pr.png")
    assert path == tmp_path / "sub" / "pr.png"
    width, height = png_size(path)
    assert 250 <= width <= 1700 and 250 <= height <= 1700
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary


def test_plot_pr_curves_checks_names_and_ap(tmp_path: Path) -> None:
    scores, targets = random_case(20, 3)
    with pytest.raises(ValueError, match="class names"):
        plot_pr_curves(scores, targets, ["a", "b"], "binary", tmp_path / "pr.png")
    with pytest.raises(ValueError, match="AP values"):
        plot_pr_curves(scores, targets, ["a", "b", "c"], "binary", tmp_path / "pr.png", ap=[0.5, 0.5])
    assert not (tmp_path / "pr.png").exists()


@pytest.mark.parametrize("c", [1, 3, 80])
def test_plot_ap_bars(tmp_path: Path, c: int) -> None:
    rng = np.random.default_rng(c)
    ap = rng.random(c)
    if c > 1:
        ap[0] = np.nan
    width, height = png_size(plot_ap_bars(ap, [f"n{i}" for i in range(c)], tmp_path / "ap.png"))
    if c == 80:
        assert height > width  # many classes: horizontal bars, one row each
    else:
        assert width >= height


def test_plot_ap_bars_rejects_percent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fractions"):
        plot_ap_bars([93.1, 50.0], ["a", "b"], tmp_path / "ap.png")


# --------------------------------------------------------------------------- metrics.jsonl


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train_row(epoch: int, evaluated: bool = False, loss: float | None = None) -> dict:
    row = {"epoch": epoch, "loss": 1.0 / epoch if loss is None else loss, "lr": 0.01 / epoch,
           "time_s": 10.0, "images_per_s": 50.0 + epoch}
    if evaluated:
        row.update(map=0.5 + 0.05 * epoch, cf1=0.4 + 0.04 * epoch, of1=0.45 + 0.04 * epoch,
                   cp=0.5, cr=0.5, op=0.5, **{"or": 0.5})
    return row


def test_read_metrics_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1, "loss": NaN}\n\n{"epoch": 2, "loss": 0.5, "map": 0.7}\n', encoding="utf-8")
    rows = read_metrics_jsonl(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert math.isnan(rows[0]["loss"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"epoch": 1}\n{"epoch": 2, "loss":\n', "line 2 is not valid JSON"),
        ('{"epoch": 1}\n{"epoch": 2, "lo', "line 2 is not valid JSON (probably cut off"),
        ('{"epoch": 1}\n[1, 2]\n', "line 2 is a JSON list"),
        ('{"loss": 1.0}\n', 'line 1 has no numeric "epoch"'),
    ],
)
def test_read_metrics_jsonl_bad_lines(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError) as info:
        read_metrics_jsonl(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_read_metrics_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist.*--save_dir"):
        read_metrics_jsonl(tmp_path / "metrics.jsonl")
    with pytest.raises(UserError, match="is a folder"):
        read_metrics_jsonl(tmp_path)


def test_last_row_per_epoch_keeps_the_resumed_row() -> None:
    rows = [train_row(1), train_row(2, loss=9.0), train_row(3), train_row(2, loss=0.25), train_row(3, True)]
    kept = last_row_per_epoch(rows)
    assert [r["epoch"] for r in kept] == [1, 2, 3]
    assert kept[1]["loss"] == 0.25 and "map" in kept[2]


@pytest.mark.parametrize(
    "rows",
    [
        [train_row(1)],  # one row
        [train_row(1), train_row(2), train_row(3)],  # no evaluation
        [train_row(1), train_row(2, True), train_row(3), train_row(2, True), train_row(4, True, loss=float("nan"))],
        [train_row(1, True)],  # one evaluated row
    ],
    ids=["one-row", "no-eval", "eval-duplicate-nan", "one-eval-row"],
)
def test_plot_training_curves(tmp_path: Path, rows: list[dict]) -> None:
    source = write_rows(tmp_path / "metrics.jsonl", rows)
    paths = plot_training_curves(read_metrics_jsonl(source), tmp_path / "plots")
    assert paths == [tmp_path / "plots" / TRAINING_CURVES_NAME]
    width, height = png_size(paths[0])
    assert width > height > 300


def test_plot_training_curves_without_rows(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no epoch rows"):
        plot_training_curves([], tmp_path)


# --------------------------------------------------------------------------- CLI


def run_plot_metrics(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.plot_metrics", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_training_curves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_rows(run / "metrics.jsonl", [train_row(1), train_row(2, True), train_row(2, True)])
    result = run_plot_metrics(str(run))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.split() == [str(run / TRAINING_CURVES_NAME)]
    png_size(run / TRAINING_CURVES_NAME)



def test_cli_main_metrics_file_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tools.plot_metrics import main

    source = write_rows(tmp_path / "metrics.jsonl", [train_row(1, True), train_row(2)])
    out = tmp_path / "elsewhere" / "plots"
    assert main([str(source), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out / TRAINING_CURVES_NAME)]
    png_size(out / TRAINING_CURVES_NAME)
    assert not (tmp_path / TRAINING_CURVES_NAME).exists()

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(UserError, match="has no rows"):
        main([str(tmp_path / "empty")])


def test_cli_errors_are_one_readable_line(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_run"
    result = run_plot_metrics(str(missing))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "loss"\n', encoding="utf-8")
    result = run_plot_metrics(str(corrupt))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(corrupt / "metrics.jsonl") in lines[0] and "line 2" in lines[0]
    assert not (corrupt / TRAINING_CURVES_NAME).exists()
