"""A bad image in the training or test split stops train.py / val.py within seconds with one
``error:`` line naming the file, at 0 and 2 loader workers (it used to hang with 0 workers)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_script, train_flags

TIMEOUT_S = 120  # a failing run takes ~10 s; reaching this means the script hung


def _split_with_bad_image(split: Path, out: Path, kind: str) -> tuple[Path, Path]:
    """A copy of ``split`` whose entry 1 points to a bad file in ``out``; returns (json, bad file)."""
    out.mkdir(parents=True, exist_ok=True)
    bad = out / f"bad_{kind}.jpg"
    if kind == "truncated":
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(bad, quality=95)
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_bytes(b"")
    entries = json.loads(split.read_text())
    entries[1]["img_path"] = str(bad)
    path = out / split.name
    path.write_text(json.dumps(entries))
    return path, bad


def _run(*args: str) -> subprocess.CompletedProcess:
    try:
        return run_script(*args, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[0]} hung on a bad image (no exit within {TIMEOUT_S} s)")


def _assert_one_error_naming(result: subprocess.CompletedProcess, bad: Path, split: Path) -> None:
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert str(bad) in errors[0] and f"entry 1 of {split}" in errors[0], errors[0]
    assert "Traceback" not in result.stderr and "Blocking queue" not in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_train_stops_on_a_truncated_training_image(tiny_demo, tmp_path: Path, workers: str) -> None:
    train_json, bad = _split_with_bad_image(tiny_demo["train"], tmp_path / "data", "truncated")
    demo = {**tiny_demo, "train": train_json}
    result = _run(*train_flags(demo, tmp_path / "run", 1, "--classes", str(tiny_demo["classes"]), "--num_workers", workers))
    _assert_one_error_naming(result, bad, train_json)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_val_stops_on_an_empty_test_image(two_epochs, tiny_demo, tmp_path: Path, workers: str) -> None:
    save, _ = two_epochs
    test_json, bad = _split_with_bad_image(tiny_demo["test"], tmp_path / "data", "empty")
    result = _run("val.py", "--load_from", str(save / "best.pdparams"), "--dataset", "demo",
                  "--test_json", str(test_json), "--num_workers", workers)
    _assert_one_error_naming(result, bad, test_json)
    assert "empty (0 bytes)" in result.stderr
