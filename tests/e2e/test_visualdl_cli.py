"""train.py --visualdl end to end: with VisualDL (the dev venv has it) and without it."""
from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ok, run_script, train_flags


def test_visualdl_logs_training_and_evaluation_scalars(tiny_demo, tmp_path: Path) -> None:
    from visualdl import LogReader

    save = tmp_path / "run"
    ok(run_script(*train_flags(tiny_demo, save, 1, "--visualdl")))
    records = sorted((save / "vdl").iterdir())
    assert len(records) == 1 and records[0].stat().st_size > 0
    reader = LogReader(file_path=str(records[0]))
    tags = set(reader.get_tags()["scalar"])
    assert {"train_step/loss", "train_step/lr", "train/loss", "train/lr", "train/images_per_s", "eval/map", "eval/cf1",
            "eval/of1"} <= tags
    steps = [int(r.id) for r in reader.get_data("scalar", "train_step/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2  # one point per batch
    best = float((save / "best.json").read_text().split('"map":')[1].split(",")[0])
    assert [round(float(r.value), 5) for r in reader.get_data("scalar", "eval/map")] == [round(best, 5)]


def test_visualdl_missing_gives_the_install_command_before_training(tiny_demo, tmp_path: Path) -> None:
    blocker = tmp_path / "no_vdl" / "visualdl"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("No module named \'visualdl\'")\n')
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    save = tmp_path / "run"
    result = run_script(*train_flags(tiny_demo, save, 1, "--visualdl"), env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "pip install -r requirements-vdl.txt" in result.stderr
    assert not (save / "last.pdparams").exists()  # refused before any training
