"""Scalar logging to VisualDL (``train.py --visualdl``, files in ``save_dir/vdl/``).

VisualDL is an optional extra (``pip install -r requirements-vdl.txt``): it is imported only
when a log is opened or :func:`check_visualdl_available` runs, so the rest of the project
never needs it. Call :func:`check_visualdl_available` before training starts: a missing or
broken install is then one :class:`~utils.errors.UserError` with the install command, not a
failure after the first epoch.

Why VisualDL (and not a TensorBoard event writer): checked with Python 3.11, numpy 2.4.6,
protobuf 7.36.2 and paddlepaddle 3.3.1, VisualDL 2.5.3 installs and imports cleanly, and its
``LogWriter``/``LogReader`` round-trip scalars. Against the project's venv ``pip install
--dry-run visualdl`` changes no installed package (no numpy, protobuf or paddle up- or
downgrade); it only adds its own dependencies (Flask, pandas, bce-python-sdk, ...), which is
why it stays out of ``requirements.txt``. Note that importing ``visualdl`` creates
``~/.visualdl/conf/config.json``; a read-only home therefore reports as a broken install.

Files: VisualDL writes ``vdlrecords.<timestamp>.log`` in the folder, one per opened log (a
resumed run adds a file; VisualDL shows the files of a folder as one run). View them with
``visualdl --logdir <save_dir>/vdl``. Tags are ``<prefix>/<name>``, e.g. ``train/loss``,
``train/lr``, ``train/images_per_s``, ``eval/map``.
"""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from utils.errors import UserError
from utils.fileio import describe_os_error
from utils.logger import get_logger

log = get_logger("visual_log")

__all__ = ["VISUALDL_PACKAGE", "VisualLog", "check_visualdl_available", "visualdl_missing_message"]

VISUALDL_PACKAGE = "visualdl"
REQUIREMENTS_FILE = "requirements-vdl.txt"


def visualdl_missing_message(cause: str | None = None) -> str:
    """The message shown when ``--visualdl`` is given but VisualDL cannot be imported.

    Args:
        cause: optional reason (e.g. the import error of a broken install), appended.
    Returns:
        one line naming the flag, the install command and the alternative (drop the flag).
    """
    msg = (f"--visualdl needs VisualDL: pip install -r {REQUIREMENTS_FILE} "
           f"(into the Python that runs training, {sys.executable}), or train without --visualdl")
    return f"{msg}; import failed: {cause}" if cause else msg


def _log_writer_class() -> Any:
    """Import and return ``visualdl.LogWriter``.

    Raises:
        UserError: VisualDL is not installed, or its import fails (broken install, a
            dependency conflict, an unwritable ``~/.visualdl``).
    """
    try:
        from visualdl import LogWriter
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == VISUALDL_PACKAGE:
            raise UserError(visualdl_missing_message()) from None
        raise UserError(visualdl_missing_message(f"{type(exc).__name__}: {exc}")) from None
    except Exception as exc:  # a broken install fails in many ways (protobuf, OSError, ...)
        raise UserError(visualdl_missing_message(f"{type(exc).__name__}: {exc}")) from None
    return LogWriter


def check_visualdl_available() -> None:
    """Fail early when ``--visualdl`` cannot work: call before training starts.

    Raises:
        UserError: VisualDL is not importable (message: :func:`visualdl_missing_message`).
    """
    _log_writer_class()


def _scalar(value: Any) -> float | None:
    """``value`` as a finite float, or None for NaN/Inf, None, text and other non-numbers."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class VisualLog:
    """A VisualDL log of scalars in one folder.

    Open with :meth:`open` (or use as a context manager), write with :meth:`scalars`, and
    :meth:`close` at the end (records are flushed every ``flush_secs`` and on close).
    """

    def __init__(self, writer: Any, log_dir: Path) -> None:
        """Wrap an open ``visualdl.LogWriter`` writing to ``log_dir``; use :meth:`open` instead."""
        self._writer: Any = writer
        self.log_dir = log_dir
        self._skipped: set[str] = set()

    @classmethod
    def open(cls, log_dir: str | os.PathLike[str], flush_secs: int = 10) -> "VisualLog":
        """Create ``log_dir`` if needed and start a new VisualDL record file in it.

        Args:
            log_dir: the folder (``save_dir/vdl`` for training).
            flush_secs: how often VisualDL's writer thread writes queued records to disk.
        Returns:
            the open :class:`VisualLog`.
        Raises:
            UserError: VisualDL is not importable, or the folder cannot be created.
        """
        writer_class = _log_writer_class()
        folder = Path(log_dir)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"VisualDL log folder {folder} is an existing file; move it away or choose another --save_dir")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            writer = writer_class(logdir=str(folder), flush_secs=flush_secs)
        except OSError as exc:
            raise UserError(f"cannot write the VisualDL log in {folder}: {describe_os_error(exc)}; "
                            f"free disk space or fix the folder's permissions, or train without --visualdl") from None
        log.info("VisualDL log in %s (view it with: visualdl --logdir %s)", folder, folder)
        return cls(writer, folder)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._writer is None

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> int:
        """Add one value per name at ``step``, tagged ``<prefix>/<name>``.

        Non-finite values (NaN, Inf) and non-numbers (None, text) are skipped: VisualDL's
        charts cannot show them, and an evaluation without positives yields NaN legitimately.

        Args:
            step: x coordinate (the epoch, or the global iteration).
            values: name -> number, e.g. ``{"loss": 0.12, "lr": 1e-4}``.
            prefix: tag group, e.g. ``"train"`` or ``"eval"`` (no group when empty).
        Returns:
            how many values were written.
        Raises:
            ValueError: the log is closed, or a tag holds ``%`` (VisualDL rejects it).
        """
        if self._writer is None:
            raise ValueError("VisualLog is closed")
        head = prefix.strip("/")
        written = 0
        for name, value in values.items():
            tag = f"{head}/{name}" if head else str(name)
            if "%" in tag:
                raise ValueError(f"VisualDL tags cannot contain '%': {tag!r}")
            v = _scalar(value)
            if v is None:
                if tag not in self._skipped:  # once per tag, not once per step
                    self._skipped.add(tag)
                    log.debug("VisualDL: skipped non-finite or non-numeric %s = %r at step %d", tag, value, step)
                continue
            self._writer.add_scalar(tag=tag, value=v, step=int(step))
            written += 1
        return written

    def flush(self) -> None:
        """Write the queued records to disk now."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the record file (idempotent)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def __enter__(self) -> "VisualLog":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
