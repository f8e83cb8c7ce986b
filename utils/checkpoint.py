"""Training checkpoints: written atomically, resumable, with the RNG state.

A checkpoint named ``<tag>`` in ``save_dir`` is three files:
- ``<tag>.pdparams``: the model state dict only (loadable by ``--pretrained``/``--load_from``);
- ``<tag>.pdopt``:    ``{"optimizer": optimizer state (incl. the LR schedule), "stamp": ...}``;
- ``<tag>.pdstates``: ``{"epoch", "iteration", "best_map", "best_epoch", "rng", "config", "stamp"}``.
Each is written to a temporary file first; the three renames happen together at the end,
and the shared ``stamp`` lets ``load_checkpoint`` detect a set that was torn by a crash.
"""
from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from utils.errors import UserError

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")


def rng_state() -> dict[str, Any]:
    """Snapshot of Python, NumPy and Paddle random generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss))  # plain types: paddle.load
    return {"python": random.getstate(), "numpy": numpy_state, "paddle": paddle.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by ``rng_state``."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    paddle.set_rng_state(state["paddle"])


def save_checkpoint(
    save_dir: str | os.PathLike,
    tag: str,
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    states: dict[str, Any],
) -> Path:
    """Write ``<tag>.pdparams/.pdopt/.pdstates`` atomically; return the ``.pdparams`` path.

    Args:
        save_dir: folder (created if missing).
        tag: file stem, e.g. ``last``, ``best`` or ``interrupted``.
        model: the (unwrapped) model.
        optimizer: its optimizer (its state includes the LR scheduler's).
        states: training progress (epoch, iteration, best metric, config...).
    """
    folder = Path(save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns()}-{os.getpid()}"
    payloads = {
        ".pdparams": model.state_dict(),
        ".pdopt": {"optimizer": optimizer.state_dict(), "stamp": stamp},
        ".pdstates": {**states, "rng": rng_state(), "stamp": stamp},
    }
    temps: dict[str, str] = {}
    try:
        for suffix, obj in payloads.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{tag}{suffix}.", suffix=".tmp", dir=folder)
            os.close(fd)
            temps[suffix] = tmp
            paddle.save(obj, tmp)
        for suffix in SUFFIXES:  # .pdstates last: it marks the set complete
            os.replace(temps.pop(suffix), folder / f"{tag}{suffix}")
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder / f"{tag}.pdparams"


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve ``--resume DIR_or_FILE`` to a checkpoint stem path (``.../last``).

    A directory resumes from its newest complete checkpoint among ``interrupted`` and
    ``last``; a file may be any of the three files of a set (or the stem itself).
    """
    p = Path(path)
    if p.is_dir():
        candidates = [p / tag for tag in ("interrupted", "last") if (p / f"{tag}.pdstates").is_file()]
        if not candidates:
            raise UserError(f"nothing to resume in {p}: no last.pdstates or interrupted.pdstates (was training run with --save_dir {p}?)")
        return max(candidates, key=lambda c: (c.with_suffix(".pdstates")).stat().st_mtime)
    stem = p.with_suffix("") if p.suffix in SUFFIXES else p
    if not stem.with_suffix(".pdstates").is_file():
        raise UserError(f"cannot resume from {p}: {stem.with_suffix('.pdstates')} not found")
    return stem


def load_checkpoint(stem: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint set; return (model state, optimizer state, training states).

    UserError if a file is missing, unreadable, or the set was torn (stamps differ).
    """
    loaded = []
    for suffix in SUFFIXES:
        f = stem.with_suffix(suffix)
        if not f.is_file():
            raise UserError(f"incomplete checkpoint: {f} is missing")
        try:
            loaded.append(paddle.load(str(f), return_numpy=suffix == ".pdstates"))
        except Exception as exc:
            raise UserError(f"cannot read checkpoint file {f}: {exc}") from None
    params, opt, states = loaded
    if not isinstance(opt, dict) or not isinstance(states, dict) or opt.get("stamp") != states.get("stamp"):
        raise UserError(f"checkpoint {stem}.* files come from different saves (interrupted write?); resume from another checkpoint")
    return params, opt["optimizer"], states
