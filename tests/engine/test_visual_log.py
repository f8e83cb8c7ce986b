"""Tests of engine.visual_log (VisualDL scalar logging for train.py --visualdl).

VisualDL is an optional extra for users; requirements-dev.txt installs it, so the test venv
has it. Most tests run against a recording stand-in ``visualdl`` module (tags, steps, skipped
values, closing, the early check's messages with the package missing or broken);
``test_real_visualdl_round_trip`` writes and reads real VisualDL files.
"""
from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import visual_log
from engine.visual_log import VisualLog, check_visualdl_available, visualdl_missing_message
from utils.errors import UserError

INSTALL_HINT = "pip install -r requirements-vdl.txt"


class RecordingWriter:
    """Stands in for ``visualdl.LogWriter``: records the calls."""

    instances: list["RecordingWriter"] = []

    def __init__(self, logdir: str, **kwargs: Any) -> None:
        self.logdir = logdir
        self.kwargs = kwargs
        self.scalars: list[tuple[str, float, int]] = []
        self.flushes = 0
        self.closes = 0
        RecordingWriter.instances.append(self)

    def add_scalar(self, tag: str, value: float, step: int, walltime: int | None = None) -> None:
        self.scalars.append((tag, value, step))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closes += 1


@pytest.fixture
def fake_visualdl(monkeypatch: pytest.MonkeyPatch) -> type[RecordingWriter]:
    """Install a stand-in ``visualdl`` module exposing :class:`RecordingWriter` as ``LogWriter``."""
    module = types.ModuleType("visualdl")
    module.LogWriter = RecordingWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "visualdl", module)
    RecordingWriter.instances = []
    return RecordingWriter


@pytest.fixture
def no_visualdl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import visualdl`` fail as if the package were not installed."""
    monkeypatch.setitem(sys.modules, "visualdl", None)


# --------------------------------------------------------------------------- missing package


def test_check_raises_user_error_with_install_hint(no_visualdl: None) -> None:
    with pytest.raises(UserError) as info:
        check_visualdl_available()
    message = str(info.value)
    assert message == visualdl_missing_message()
    assert message.startswith("--visualdl needs VisualDL")
    assert INSTALL_HINT in message and "without --visualdl" in message
    assert "\n" not in message


def test_open_without_package_creates_nothing(no_visualdl: None, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="requirements-vdl.txt"):
        VisualLog.open(tmp_path / "vdl")
    assert not (tmp_path / "vdl").exists()


def test_broken_install_names_the_cause(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # a "visualdl" whose import fails like a protobuf conflict would
    package = tmp_path / "site" / "visualdl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise TypeError('Descriptors cannot be created directly')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "visualdl", raising=False)
    with pytest.raises(UserError) as info:
        check_visualdl_available()
    assert INSTALL_HINT in str(info.value)
    assert "import failed: TypeError: Descriptors cannot be created directly" in str(info.value)


def test_module_imports_without_visualdl(no_visualdl: None) -> None:
    # the writer is imported lazily: engine.visual_log itself never needs the package
    importlib.reload(visual_log)


# --------------------------------------------------------------------------- with a writer


def test_scalars_tags_steps_and_skipped_values(fake_visualdl: type[RecordingWriter], tmp_path: Path) -> None:
    log = VisualLog.open(tmp_path / "run" / "vdl")
    assert (tmp_path / "run" / "vdl").is_dir()
    [writer] = fake_visualdl.instances
    assert writer.logdir == str(tmp_path / "run" / "vdl")
    written = log.scalars(3, {"loss": 0.25, "lr": np.float32(1e-4), "images_per_s": 120, "bad": float("nan"),
                              "inf": float("inf"), "none": None, "text": "0.5"}, prefix="train")
    assert written == 3
    log.scalars(3, {"map": 0.8, "cf1": float("nan")}, prefix="eval/")
    log.scalars(4, {"plain": 1.0})
    assert [(t, s) for t, _, s in writer.scalars] == [("train/loss", 3), ("train/lr", 3), ("train/images_per_s", 3),
                                                     ("eval/map", 3), ("plain", 4)]
    values = [v for _, v, _ in writer.scalars]
    assert all(type(v) is float and math.isfinite(v) for v in values)
    assert values[1] == pytest.approx(1e-4)
    log.flush()
    assert writer.flushes == 1
    log.close()
    log.close()  # idempotent
    assert writer.closes == 1 and log.closed
    with pytest.raises(ValueError, match="closed"):
        log.scalars(5, {"loss": 0.1}, prefix="train")


def test_context_manager_closes_on_error(fake_visualdl: type[RecordingWriter], tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with VisualLog.open(tmp_path / "vdl") as log:
            log.scalars(1, {"loss": 1.0}, prefix="train")
            raise RuntimeError("training failed")
    assert fake_visualdl.instances[0].closes == 1


def test_percent_in_tag_is_rejected(fake_visualdl: type[RecordingWriter], tmp_path: Path) -> None:
    with VisualLog.open(tmp_path / "vdl") as log, pytest.raises(ValueError, match="%"):
        log.scalars(1, {"top5%": 0.5}, prefix="eval")


def test_open_on_a_file_is_a_user_error(fake_visualdl: type[RecordingWriter], tmp_path: Path) -> None:
    (tmp_path / "vdl").write_text("not a folder")
    with pytest.raises(UserError, match="is an existing file"):
        VisualLog.open(tmp_path / "vdl")
    assert fake_visualdl.instances == []


# --------------------------------------------------------------------------- real VisualDL (extra)


def test_real_visualdl_round_trip(tmp_path: Path) -> None:
    """The real writer (requirements-dev.txt installs the extra)."""
    from visualdl import LogReader

    folder = tmp_path / "vdl"
    with VisualLog.open(folder) as log:
        for epoch in range(1, 4):
            log.scalars(epoch, {"loss": 1.0 / epoch, "lr": 0.01, "images_per_s": float("nan")}, prefix="train")
        log.scalars(3, {"map": 0.75}, prefix="eval")
    files = [p for p in folder.iterdir() if p.is_file()]
    assert len(files) == 1 and files[0].name.startswith("vdlrecords.") and files[0].stat().st_size > 0
    reader = LogReader(file_path=str(files[0]))
    tags = reader.get_tags()["scalar"]
    assert sorted(tags) == ["eval/map", "train/loss", "train/lr"]
    loss = reader.get_data("scalar", "train/loss")
    assert [r.id for r in loss] == [1, 2, 3]
    assert [r.value for r in loss] == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-6)
    [m] = reader.get_data("scalar", "eval/map")
    assert (m.id, m.value) == (3, pytest.approx(0.75))
