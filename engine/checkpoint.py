"""Training checkpoints: verifiably whole, crash-safe, resumable, with the RNG state.

A checkpoint set named ``<tag>`` (``last`` or ``interrupted``) in ``save_dir`` is four files (five with ``--ema``):

- ``<tag>.pdparams``: the model state dict only (loadable by ``--pretrained``/``--load_from``);
- ``<tag>.pdopt``:    ``{"optimizer": optimizer state (incl. the LR schedule), "stamp": ...}``;
- ``<tag>.pdstates``: ``{"epoch", "iteration", "best_map", "best_epoch", "rng", "config", "stamp", ...}``;
- ``<tag>.ema.pdparams`` (only in runs with ``--ema``): the EMA weights, a state dict with
  the keys of ``<tag>.pdparams`` (loadable the same way); the EMA's update count is in
  ``<tag>.pdstates`` (``"ema"``);
- ``<tag>.manifest.json``: written last; size and SHA-256 of the other files, the save's
  ``stamp`` and time, epoch and iteration. A set is *whole* when its manifest exists and
  every file it lists matches it; the manifest is removed before any file of the set is replaced.

Saving (``save_checkpoint``), so that a SIGKILL at any instant leaves a whole set:

1. the files and the manifest are written to temporaries (``.<name>.<8 chars>.tmp``)
   and fsynced: nothing visible has changed, and a full disk fails here;
2. if ``<tag>`` is whole, it is duplicated as ``<tag>-prev.*`` (hard links, no data
   copied; the ``-prev`` manifest last): two whole sets;
3. ``<tag>.manifest.json`` is removed: ``<tag>`` is now incomplete, ``<tag>-prev`` whole;
4. the temporaries are renamed to ``<tag>.pdparams/.pdopt/.pdstates`` (and ``.ema.pdparams``;
   one left from an earlier save without it is removed), then the manifest;
5. ``<tag>`` is whole again (the new save): ``<tag>-prev`` is removed (its manifest first).

Resuming (``find_resume_checkpoint``) picks the newest whole set among ``interrupted``,
``last`` and their ``-prev`` copies, and warns when it falls back past an incomplete set.
Files are read with ``utils.paddle_io.load_paddle`` (no code from a file is run).
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paddle

from utils.errors import UserError
from utils.fileio import copy_atomic, create_temp, describe_os_error, file_sha256, fsync_dir, remove_quietly
from utils.logger import get_logger
from utils.paddle_io import load_paddle, restore_generator_state

log = get_logger("checkpoint")

SUFFIXES = (".pdparams", ".pdopt", ".pdstates")  # every set has them
EMA_SUFFIX = ".ema.pdparams"
EXTRA_SUFFIXES = (EMA_SUFFIX,)  # files a set may have; the manifest lists those it has
MANIFEST = ".manifest.json"
PREV = "-prev"
RESUME_TAGS = ("interrupted", "last")
FORMAT = "csra-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Snapshot of Python, NumPy and Paddle random generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss))  # plain types: paddle.load
    return {"python": random.getstate(), "numpy": numpy_state, "paddle": paddle.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken by ``rng_state`` (as saved, or as read back by ``load_paddle``)."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    paddle.set_rng_state([restore_generator_state(s) for s in state["paddle"]])  # records read by load_paddle


def set_file(stem: Path, suffix: str) -> Path:
    """The file of checkpoint set ``stem`` (e.g. ``run/last``) with ``suffix`` (``.pdopt``, ``.manifest.json``)."""
    return stem.parent / f"{stem.name}{suffix}"


def _digest(path: Path, sync: bool = False) -> dict[str, Any]:
    """Size and SHA-256 of a file; with ``sync`` the file is also fsynced."""
    digest = file_sha256(path)
    if sync:
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    return {"size": path.stat().st_size, "sha256": digest}


def _write_manifest_temp(stem: Path, manifest: dict[str, Any]) -> Path:
    tmp = create_temp(set_file(stem, MANIFEST))
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(manifest, indent=1))
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def read_manifest(stem: Path) -> dict[str, Any] | None:
    """The parsed manifest of set ``stem``, or None when it is missing or unreadable."""
    try:
        manifest = json.loads(set_file(stem, MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def listed_suffixes(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files of a set by its manifest: ``SUFFIXES`` and the ``EXTRA_SUFFIXES`` it lists."""
    return (*SUFFIXES, *(s for s in EXTRA_SUFFIXES if s in manifest["files"]))


def _whole_files(stem: Path) -> tuple[str, ...] | None:
    """Cheap check used while saving: the suffixes of set ``stem`` when its manifest is there
    and the file sizes match it, else None."""
    manifest = read_manifest(stem)
    if manifest is None:
        return None
    try:
        suffixes = listed_suffixes(manifest)
        return suffixes if all(set_file(stem, s).stat().st_size == manifest["files"][s]["size"] for s in suffixes) else None
    except (OSError, KeyError, TypeError):
        return None


def check_set(stem: Path) -> tuple[dict[str, Any] | None, str]:
    """Verify checkpoint set ``stem`` against its manifest (sizes and SHA-256).

    Returns:
        ``(manifest, "")`` when the set is whole, else ``(None, reason)``.
    """
    manifest_path = set_file(stem, MANIFEST)
    if not manifest_path.is_file():
        present = [set_file(stem, s).name for s in SUFFIXES if set_file(stem, s).is_file()]
        if not present:
            return None, "no checkpoint files"
        return None, (f"{manifest_path.name} is missing: a save was interrupted, or an older version wrote "
                      f"{', '.join(present)} (then --pretrained {set_file(stem, '.pdparams')} starts a new run from its weights)")
    manifest = read_manifest(stem)
    if manifest is None:
        return None, f"{manifest_path.name} is unreadable or not a checkpoint manifest"
    for suffix in listed_suffixes(manifest):
        path = set_file(stem, suffix)
        expected = manifest["files"].get(suffix)
        if not isinstance(expected, dict):
            return None, f"{manifest_path.name} does not list {path.name}"
        if not path.is_file():
            return None, f"{path.name} is missing"
        try:
            actual = _digest(path)
        except OSError as exc:
            return None, f"{path.name} cannot be read: {describe_os_error(exc)}"
        if actual["size"] != expected.get("size"):
            return None, f"{path.name} has {actual['size']} bytes but {manifest_path.name} says {expected.get('size')}"
        if actual["sha256"] != expected.get("sha256"):
            return None, f"{path.name} does not match its SHA-256 in {manifest_path.name} (from another save, or damaged)"
    return manifest, ""


def _remove_set(stem: Path) -> None:
    """Delete set ``stem``: the manifest first, so that a crash midway never leaves a 'whole' set."""
    set_file(stem, MANIFEST).unlink(missing_ok=True)
    for suffix in SUFFIXES:
        set_file(stem, suffix).unlink(missing_ok=True)
    for suffix in EXTRA_SUFFIXES:
        if set_file(stem, suffix).exists():
            set_file(stem, suffix).unlink(missing_ok=True)


def remove_checkpoint(save_dir: str | os.PathLike, tag: str) -> None:
    """Delete checkpoint set ``tag`` and its ``-prev`` copy from ``save_dir`` (missing files are fine)."""
    folder = Path(save_dir)
    _remove_set(folder / tag)
    _remove_set(folder / f"{tag}{PREV}")
    fsync_dir(folder)


def save_checkpoint(
    save_dir: str | os.PathLike,
    tag: str,
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    states: dict[str, Any],
    extra_files: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint set ``<tag>`` (see the module docstring for the crash-safe order).

    Args:
        save_dir: folder (created if missing).
        tag: set name, e.g. ``last`` or ``interrupted``.
        model: the (unwrapped) model.
        optimizer: its optimizer (its state includes the LR scheduler's).
        states: training progress (epoch, iteration, best metric, config...).
        extra_files: ``{suffix of EXTRA_SUFFIXES: object for paddle.save}``, e.g.
            ``{EMA_SUFFIX: ema_weights}``; written, verified and kept with the set like its
            other files. None or {}: a set without them.
    Returns:
        the ``<tag>.pdparams`` path.
    Raises:
        UserError: a file could not be written (disk full, read-only...); the previous whole
            set is kept and no temporary file is left behind.
    """
    folder = Path(save_dir)
    stem, prev = folder / tag, folder / f"{tag}{PREV}"
    saved_ns = time.time_ns()
    stamp = f"{saved_ns}-{os.getpid()}"
    extra_files = dict(extra_files or {})
    unknown = sorted(set(extra_files) - set(EXTRA_SUFFIXES))
    if unknown:
        raise ValueError(f"unknown checkpoint files {unknown}; a set may have {list(EXTRA_SUFFIXES)}")
    payloads = {
        ".pdparams": model.state_dict(),
        ".pdopt": {"optimizer": optimizer.state_dict(), "stamp": stamp},
        ".pdstates": {**states, "rng": rng_state(), "stamp": stamp},
        **{suffix: extra_files[suffix] for suffix in EXTRA_SUFFIXES if suffix in extra_files},
    }
    temps: dict[str, Path] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # 1. everything to fsynced temporaries: a failure here changes nothing visible
        files: dict[str, dict[str, Any]] = {}
        for suffix, obj in payloads.items():
            temps[suffix] = create_temp(set_file(stem, suffix))
            paddle.save(obj, str(temps[suffix]))
            files[suffix] = _digest(temps[suffix], sync=True)
        manifest = {
            "format": FORMAT, "version": VERSION, "tag": tag, "stamp": stamp, "saved_ns": saved_ns,
            "epoch": int(states.get("epoch", 0)), "iteration": int(states.get("iteration", 0)), "files": files,
        }
        temps[MANIFEST] = _write_manifest_temp(stem, manifest)
        # 2. keep the current whole set as <tag>-prev while <tag> is replaced
        current = _whole_files(stem)
        if current is not None:
            set_file(prev, MANIFEST).unlink(missing_ok=True)
            for suffix in (*current, MANIFEST):  # manifest last: -prev is whole only when complete
                copy_atomic(set_file(stem, suffix), set_file(prev, suffix))
            fsync_dir(folder)
        # 3. retire <tag>'s manifest before touching its files
        set_file(stem, MANIFEST).unlink(missing_ok=True)
        fsync_dir(folder)
        # 4. the new files, then the manifest that makes them a whole set
        for suffix in payloads:
            os.replace(temps.pop(suffix), set_file(stem, suffix))
        for suffix in EXTRA_SUFFIXES:
            if suffix not in payloads and set_file(stem, suffix).exists():  # left by an earlier save that had it
                set_file(stem, suffix).unlink(missing_ok=True)
        fsync_dir(folder)
        os.replace(temps.pop(MANIFEST), set_file(stem, MANIFEST))
        fsync_dir(folder)
        # 5. the previous set is no longer needed
        _remove_set(prev)
    except OSError as exc:
        raise UserError(
            f"cannot save checkpoint {tag} in {folder}: {describe_os_error(exc)}. The previous checkpoint "
            f"(if any) is kept; free disk space or fix the folder, then resume with --resume {folder}"
        ) from None
    finally:
        for tmp in temps.values():
            remove_quietly(tmp)
    return set_file(stem, ".pdparams")


@dataclass
class _Candidate:
    stem: Path
    manifest: dict[str, Any] | None
    reason: str


def _stem_of(path: Path) -> Path:
    name = path.name
    for suffix in (MANIFEST, *EXTRA_SUFFIXES, *SUFFIXES):  # ".ema.pdparams" before ".pdparams"
        if name.endswith(suffix):
            return path.parent / name[: -len(suffix)]
    return path


def _describe(stem: Path, manifest: dict[str, Any]) -> str:
    epoch, iteration = int(manifest.get("epoch", 0)), int(manifest.get("iteration", 0))
    where = f"{epoch} epoch(s) done" + (f", {iteration} batch(es) into epoch {epoch + 1}" if iteration else "")
    return f"{stem} ({where})"


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve ``--resume DIR_or_FILE`` to the stem of a whole checkpoint set (e.g. ``run/last``).

    A directory resumes from the newest whole set among ``interrupted``, ``last`` and their
    ``-prev`` copies; a file (any file of a set, or the stem itself) from that set, or from
    its ``-prev`` copy when the set is incomplete. Falling back past an incomplete set logs
    a warning that names it and the reason.

    Raises:
        UserError: no whole set is found (the message lists what is wrong with each).
    """
    p = Path(path)
    if p.is_dir():
        tags = [p / tag for tag in RESUME_TAGS]
    else:
        stem = _stem_of(p)
        if not any(set_file(s, x).is_file() for s in (stem, Path(f"{stem}{PREV}")) for x in (*SUFFIXES, *EXTRA_SUFFIXES, MANIFEST)):
            raise UserError(f"cannot resume from {p}: no checkpoint set {stem}.pdparams/.pdopt/.pdstates/{MANIFEST} "
                            "found (pass the --save_dir of a training run, or one of its last.*/interrupted.* files)")
        tags = [stem]
    candidates: list[_Candidate] = []
    for stem in tags:
        for s in (stem, stem.parent / f"{stem.name}{PREV}") if not stem.name.endswith(PREV) else (stem,):
            manifest, reason = check_set(s)
            candidates.append(_Candidate(s, manifest, reason))
    whole = [c for c in candidates if c.manifest is not None]
    broken = [c for c in candidates if c.manifest is None and c.reason != "no checkpoint files" and not c.stem.name.endswith(PREV)]
    if not whole:
        if p.is_dir() and not broken:
            raise UserError(f"nothing to resume in {p}: no last.* or interrupted.* checkpoint (was training run with --save_dir {p}?)")
        details = "; ".join(f"{c.stem}: {c.reason}" for c in candidates if c.reason != "no checkpoint files")
        raise UserError(f"cannot resume from {p}: no whole checkpoint set ({details}); "
                        "start the run again without --resume, or resume from another checkpoint")
    best = max(whole, key=lambda c: (int(c.manifest.get("saved_ns", 0)), int(c.manifest.get("epoch", 0)),  # type: ignore[union-attr]
                                     int(c.manifest.get("iteration", 0))))  # type: ignore[union-attr]
    for c in broken:
        which = "the previous whole set" if best.stem.name == f"{c.stem.name}{PREV}" else "the newest whole set"
        log.warning("checkpoint %s.* is incomplete (%s): resuming from %s %s instead",
                    c.stem, c.reason, which, _describe(best.stem, best.manifest))  # type: ignore[arg-type]
    return best.stem


def load_checkpoint(stem: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read a checkpoint set; return (model state, optimizer state, training states).

    Raises:
        UserError: the set is not whole (manifest missing, a file missing, changed or from
            another save) or a file cannot be read.
    """
    stem = _stem_of(Path(stem))
    manifest, reason = check_set(stem)
    if manifest is None:
        raise UserError(f"checkpoint {stem}.* is incomplete: {reason}; resume from another checkpoint")
    loaded = []
    for suffix in SUFFIXES:
        f = set_file(stem, suffix)
        try:
            loaded.append(load_paddle(f, return_numpy=False))
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"cannot read checkpoint file {f}: {exc}") from None
    params, opt, states = loaded
    if not isinstance(params, dict) or not isinstance(opt, dict) or not isinstance(states, dict) \
            or not opt.get("stamp") == states.get("stamp") == manifest.get("stamp"):
        raise UserError(f"checkpoint {stem}.* files come from different saves; resume from another checkpoint")
    return params, opt["optimizer"], states


def load_checkpoint_file(stem: Path, suffix: str) -> Any | None:
    """Read file ``suffix`` (one of ``EXTRA_SUFFIXES``) of the whole checkpoint set ``stem``.

    Args:
        stem: a set found by ``find_resume_checkpoint`` (e.g. ``run/last``).
        suffix: e.g. ``EMA_SUFFIX``.
    Returns:
        what was saved (tensors as ``paddle.Tensor``), or None when the set's manifest does
        not list the file (the set was saved without it).
    Raises:
        UserError: the manifest is missing or unreadable, or the file is missing, does not
            match its size and SHA-256 in the manifest, or cannot be read.
    """
    stem = _stem_of(Path(stem))
    manifest = read_manifest(stem)
    if manifest is None:
        raise UserError(f"checkpoint {stem}.* is incomplete: {set_file(stem, MANIFEST).name} is missing or unreadable; "
                        "resume from another checkpoint")
    expected = manifest["files"].get(suffix)
    if expected is None:
        return None
    path = set_file(stem, suffix)
    try:
        actual = _digest(path)
    except OSError as exc:
        raise UserError(f"cannot read checkpoint file {path}: {describe_os_error(exc)}") from None
    if not isinstance(expected, dict) or actual != {"size": expected.get("size"), "sha256": expected.get("sha256")}:
        raise UserError(f"{path.name} does not match its size and SHA-256 in {set_file(stem, MANIFEST).name} "
                        "(from another save, or damaged); resume from another checkpoint")
    try:
        return load_paddle(path, return_numpy=False)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot read checkpoint file {path}: {exc}") from None
