"""train.py end to end with ``--loss asl --ignore_unknown`` on a tiny split with unknown (-1/99) labels."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import run_script, train_flags


@pytest.fixture(scope="module")
def partial_split(tiny_demo, tmp_path_factory) -> Path:
    """The tiny demo's training split with some labels unknown: -1 in two entries, 99 in one."""
    entries = json.loads(Path(tiny_demo["train"]).read_text())
    entries[0]["target"][0] = -1
    entries[3]["target"][5] = -1
    entries[7]["target"][2] = 99
    folder = tmp_path_factory.mktemp("partial")
    (folder / "classes.txt").write_text(Path(tiny_demo["classes"]).read_text())  # the class names beside the split
    path = folder / "trainval_partial.json"
    path.write_text(json.dumps(entries))
    return path


def test_asl_with_unknown_labels_trains_and_records_the_loss(tiny_demo, partial_split: Path, tmp_path: Path) -> None:
    save = tmp_path / "asl"
    result = run_script(*train_flags(tiny_demo, save, 1, "--train_json", str(partial_split), "--loss", "asl",
                                     "--asl_gamma_neg", "3", "--ignore_unknown", "--lr", "0.0005"))
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((save / "config.json").read_text())
    assert (config["loss"], config["asl_gamma_neg"], config["asl_gamma_pos"], config["asl_clip"], config["ignore_unknown"]) == (
        "asl", 3.0, 0.0, 0.05, True)
    row = json.loads((save / "metrics.jsonl").read_text().splitlines()[0])
    # ASL sums over the 8 x 8 entries of a batch: well above 1, where BCE's mean (about 0.7) is below
    assert math.isfinite(row["loss"]) and row["loss"] > 1.5, row
    assert "map" in row

    # the loss is part of the recipe: a resumed run keeps it and refuses another
    refused = run_script("train.py", "--resume", str(save), "--total_epoch", "2", "--loss", "bce")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--loss bce was given but the run has --loss asl" in refused.stderr, refused.stderr[-2000:]


def test_unknown_labels_without_the_flag_are_refused(tiny_demo, partial_split: Path, tmp_path: Path) -> None:
    result = run_script(*train_flags(tiny_demo, tmp_path / "bce", 1, "--train_json", str(partial_split)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr[-2000:]
    assert "[-1.0, 99.0]" in error[0] and str(partial_split) in error[0] and "--ignore_unknown" in error[0]
    assert not list((tmp_path / "bce").glob("last*"))
