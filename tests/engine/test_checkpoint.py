"""Checkpoint sets and the run folder: whole-or-previous after a kill at any step, stale
temporaries, the run lock, disk full / unwritable --save_dir, fsync and file modes."""
from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from tests.conftest import REPO_ROOT, run_script, train_flags
from engine import checkpoint as ckpt
from utils.errors import UserError
from utils.fileio import atomic_write_text, clean_stale_temps, lock_run_dir, prepare_output_dir


class Killed(BaseException):
    """Stands for SIGKILL: raised by every file-system change from the N-th one on."""


class Killer:
    """Wraps os.replace/os.link/os.unlink; the call numbered ``at`` and every later one 'die'."""

    def __init__(self, monkeypatch, at: int | None) -> None:
        self.at, self.calls, self.dead = at, 0, False
        for name in ("replace", "link", "unlink"):
            monkeypatch.setattr(os, name, self._wrap(getattr(os, name)))

    def _wrap(self, real):
        def call(*args, **kwargs):
            if self.dead or (self.at is not None and self.calls >= self.at):
                self.dead = True
                raise Killed
            self.calls += 1
            return real(*args, **kwargs)

        return call


def _model(seed: int) -> tuple[paddle.nn.Layer, paddle.optimizer.Optimizer]:
    paddle.seed(seed)
    model = paddle.nn.Linear(4, 3)
    return model, paddle.optimizer.Momentum(parameters=model.parameters())


def _weights(state: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in state.items()}


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_kill_at_any_step_of_a_save_leaves_a_whole_set(tmp_path: Path, monkeypatch, hard_links: bool) -> None:
    """Kill the save of epoch 2 before each of its file-system changes in turn: resume always
    finds epoch 1 or epoch 2 whole (weights and stamps of one save), never a mix."""
    if not hard_links:  # e.g. a file system without hard links: the previous set is copied
        monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.EPERM, "no links")))
    old_model, old_opt = _model(1)
    new_model, new_opt = _model(2)
    expected = {1: _weights(old_model.state_dict()), 2: _weights(new_model.state_dict())}
    warnings: list[str] = []
    monkeypatch.setattr(ckpt.log, "warning", lambda msg, *args: warnings.append(msg % args))

    with monkeypatch.context() as m:  # a complete save, to count its steps
        dry = tmp_path / "dry"
        ckpt.save_checkpoint(dry, "last", old_model, old_opt, {"epoch": 1})
        counter = Killer(m, None)
        ckpt.save_checkpoint(dry, "last", new_model, new_opt, {"epoch": 2})
        steps = counter.calls
    assert steps >= 10  # 4 links + 4 renames for the previous set, 4 renames, removals

    chosen = []
    for at in range(steps + 1):
        folder = tmp_path / f"kill{at}"
        ckpt.save_checkpoint(folder, "last", old_model, old_opt, {"epoch": 1})
        warnings.clear()
        with monkeypatch.context() as m:
            Killer(m, at)
            try:
                ckpt.save_checkpoint(folder, "last", new_model, new_opt, {"epoch": 2})
            except Killed:
                pass
        params, _, states = ckpt.load_checkpoint(ckpt.find_resume_checkpoint(folder))
        epoch = int(states["epoch"])
        got = _weights(params)
        for key, value in expected[epoch].items():
            np.testing.assert_array_equal(got[key], value, err_msg=f"kill at step {at}: {key}")
        chosen.append(epoch)
        if (folder / "last.pdparams").is_file() and not (folder / "last.manifest.json").exists():
            assert epoch == 1 and any("last.* is incomplete" in w and "previous whole set" in w for w in warnings), (at, warnings)
        # the next complete save tidies up: one whole set, no previous copy, no temporaries
        ckpt.save_checkpoint(folder, "last", new_model, new_opt, {"epoch": 3})
        clean_stale_temps(folder)
        assert _visible(folder) == ["last.manifest.json", "last.pdopt", "last.pdparams", "last.pdstates"], at
    assert chosen[0] == 1 and chosen[-1] == 2 and 1 in chosen[1:-1]


def test_the_torn_set_of_the_report_falls_back_to_the_previous_set(tmp_path: Path, monkeypatch) -> None:
    """The reported case: killed between the last.pdparams and last.pdopt renames, so last.pdparams
    holds epoch-2 weights beside epoch-1 .pdopt/.pdstates whose stamps agree."""
    old_model, old_opt = _model(1)
    new_model, new_opt = _model(2)
    ckpt.save_checkpoint(tmp_path, "last", old_model, old_opt, {"epoch": 1})
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("last.pdopt"):
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        ckpt.save_checkpoint(tmp_path, "last", new_model, new_opt, {"epoch": 2})
    monkeypatch.undo()
    torn = paddle.load(str(tmp_path / "last.pdparams"), return_numpy=True)
    np.testing.assert_array_equal(torn["weight"], _weights(new_model.state_dict())["weight"])  # really torn
    with pytest.raises(UserError, match="last.manifest.json is missing"):
        ckpt.load_checkpoint(tmp_path / "last")
    stem = ckpt.find_resume_checkpoint(tmp_path / "last.pdparams")  # a file of the torn set: its -prev copy
    assert stem == tmp_path / "last-prev"
    params, _, states = ckpt.load_checkpoint(stem)
    assert states["epoch"] == 1
    np.testing.assert_array_equal(np.asarray(params["weight"]), _weights(old_model.state_dict())["weight"])


def test_a_changed_file_is_detected_and_nothing_whole_is_a_clear_error(tmp_path: Path) -> None:
    model, opt = _model(1)
    ckpt.save_checkpoint(tmp_path, "last", model, opt, {"epoch": 1})
    data = bytearray((tmp_path / "last.pdopt").read_bytes())
    data[-10] ^= 0xFF  # same size, other content
    (tmp_path / "last.pdopt").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"last\.pdopt does not match its SHA-256"):
        ckpt.find_resume_checkpoint(tmp_path)
    with pytest.raises(UserError, match="no checkpoint set .*missing"):
        ckpt.find_resume_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="nothing to resume in"):
        ckpt.find_resume_checkpoint(tmp_path / "empty")


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    old_model, old_opt = _model(1)
    new_model, new_opt = _model(2)
    ckpt.save_checkpoint(tmp_path, "last", old_model, old_opt, {"epoch": 1})
    real_save = paddle.save

    def full_disk(obj, path, *args, **kwargs):
        if ".pdopt." in str(path):
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(paddle, "save", full_disk)
    with pytest.raises(UserError) as info:
        ckpt.save_checkpoint(tmp_path, "last", new_model, new_opt, {"epoch": 2})
    message = str(info.value)
    assert str(tmp_path) in message and "No space left on device (ENOSPC, disk full)" in message and "previous checkpoint" in message
    assert _visible(tmp_path) == ["last.manifest.json", "last.pdopt", "last.pdparams", "last.pdstates"]  # no temporaries
    _, _, states = ckpt.load_checkpoint(ckpt.find_resume_checkpoint(tmp_path))
    assert states["epoch"] == 1


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    stale = [".last.pdparams.abcd_123.tmp", ".config.json.zz9xy12q.tmp"]
    kept = [".lock", "notes.tmp", ".notes.tmp", "last.pdparams.abcd1234.tmp", ".last.pdparams.abc.tmp", "last.pdparams"]
    for name in stale + kept:
        (tmp_path / name).write_text("x")
    removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_writes_are_fsynced_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(tmp_path / "a.json", "{}")
    (kind0, tmp0), (kind1, src1), (kind2, folder2) = events
    assert kind0 == "fsync" and Path(tmp0).name.startswith(".a.json.") and tmp0.endswith(".tmp")
    assert (kind1, src1) == ("replace", tmp0)
    assert (kind2, folder2) == ("fsync", str(tmp_path))

    events.clear()
    model, opt = _model(1)
    ckpt.save_checkpoint(tmp_path / "run", "last", model, opt, {"epoch": 1})
    synced = [p for kind, p in events if kind == "fsync"]
    renamed = [p for kind, p in events if kind == "replace"]
    for suffix in (*ckpt.SUFFIXES, ckpt.MANIFEST):
        temp = next(p for p in renamed if Path(p).name.startswith(f".last{suffix}."))
        assert events.index(("fsync", temp)) < events.index(("replace", temp)), suffix
    assert synced.count(str(tmp_path / "run")) >= 2  # after the data renames and after the manifest


@pytest.mark.parametrize("mask, mode", [(0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_umask_mode(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        model, opt = _model(1)
        ckpt.save_checkpoint(tmp_path, "last", model, opt, {"epoch": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "last.pdparams", "last.pdopt", "last.pdstates", "last.manifest.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_run_lock_names_the_holder_and_dies_with_it(tmp_path: Path) -> None:
    with lock_run_dir(tmp_path):
        with pytest.raises(UserError, match=rf"in use by another training run \(PID {os.getpid()} holds .*\.lock\)"):
            lock_run_dir(tmp_path)
    lock_run_dir(tmp_path).release()  # released: free again
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from utils.fileio import lock_run_dir; "
         "lock = lock_run_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(tmp_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"PID {child.pid} "):
            lock_run_dir(tmp_path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    lock_run_dir(tmp_path).release()  # a killed holder never blocks the next run


def test_unusable_save_dirs_are_user_errors(tmp_path: Path, monkeypatch) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(UserError, match=rf"--save_dir {a_file} is an existing file, not a folder"):
        prepare_output_dir(a_file)
    with pytest.raises(UserError, match=rf"cannot be created: {a_file} is a file, not a folder"):
        prepare_output_dir(a_file / "sub")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UserError, match=r"is not writable: Read-only file system \(EROFS, read-only file system\)"):
        prepare_output_dir(tmp_path / "ro")


# ---------------------------------------------------------------- train.py end to end

_WRAPPER = """
import os, runpy, signal, sys
import paddle
sys.argv = ["train.py", *sys.argv[1:]]
{patch}
runpy.run_path("train.py", run_name="__main__")
"""

_KILL_BETWEEN_RENAMES = """
real_replace, seen = os.replace, []
def replace(src, dst):
    if str(dst).endswith("last.pdopt"):
        seen.append(dst)
        if len(seen) == 2:  # the save of epoch 2, after last.pdparams was renamed
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)
os.replace = replace
"""

_DISK_FULL_IN_EPOCH_2 = """
real_save, seen = paddle.save, []
def save(obj, path, *args, **kwargs):
    if ".last.pdopt." in str(path):
        seen.append(path)
        if len(seen) == 2:
            raise OSError(28, "No space left on device")
    return real_save(obj, path, *args, **kwargs)
paddle.save = save
"""


def test_kill_between_renames_then_resume_equals_an_uninterrupted_run(two_epochs, tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "killed"
    killed = run_script("-c", _WRAPPER.format(patch=_KILL_BETWEEN_RENAMES), *train_flags(tiny_demo, save, 2)[1:])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (save / "last-prev.manifest.json").is_file() and not (save / "last.manifest.json").exists()
    leftovers = list(save.glob(".*.tmp"))
    assert leftovers  # the killed save's temporaries
    result = run_script(*train_flags(tiny_demo, save, 2), "--resume", str(save))  # the dead run's lock is gone
    assert result.returncode == 0, result.stderr[-2000:]
    assert "last.* is incomplete" in result.stderr and "previous whole set" in result.stderr
    assert "resumed from" in result.stderr and "1 epoch(s) done" in result.stderr
    assert not any(p.exists() for p in leftovers) and not list(save.glob("*.tmp")) and not list(save.glob("*-prev.*"))
    want = paddle.load(str(two_epochs[0] / "last.pdparams"), return_numpy=True)
    got = paddle.load(str(save / "last.pdparams"), return_numpy=True)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert len((save / "metrics.jsonl").read_text().splitlines()) == 2


def test_disk_full_in_training_is_an_error_line_and_keeps_the_checkpoint(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "full"
    result = run_script("-c", _WRAPPER.format(patch=_DISK_FULL_IN_EPOCH_2), *train_flags(tiny_demo, save, 2)[1:])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: cannot save checkpoint last in {save}: No space left on device (ENOSPC, disk full)" in result.stderr
    assert not list(save.glob("*.tmp"))
    _, _, states = ckpt.load_checkpoint(ckpt.find_resume_checkpoint(save))
    assert states["epoch"] == 1


def test_a_busy_save_dir_is_refused_with_the_pid(tiny_demo, tmp_path: Path) -> None:
    save = tmp_path / "busy"
    save.mkdir()
    with lock_run_dir(save):
        result = run_script(*train_flags(tiny_demo, save, 1))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: --save_dir {save} is in use by another training run (PID {os.getpid()} holds" in result.stderr
    assert not (save / "config.json").exists()  # refused before writing anything


@pytest.mark.parametrize("under", [False, True])
def test_save_dir_that_is_a_file_is_an_error_line(tiny_demo, tmp_path: Path, under: bool) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    result = run_script(*train_flags(tiny_demo, a_file / "run" if under else a_file, 1))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "error: --save_dir" in result.stderr and f"{a_file} is a" in result.stderr
