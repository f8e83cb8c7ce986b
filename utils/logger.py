"""Project logger.

Paddle installs a handler on the root logger at import time, so ``logging.basicConfig``
silently does nothing afterwards. Every module logs through the named ``csra`` logger,
which owns its handler and does not propagate to the root.

A run can also keep a log file: :func:`attach_log_file` adds a file handler to the ``csra``
logger (every ``csra.*`` record goes there too) and :func:`record_in_log_files` copies a
line the caller has printed on stdout into the attached files only, so that the file reads
like the console: logger lines with their prefix, stdout lines as printed.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOGGER_NAME = "csra"
_FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
_ECHO = "csra_echo"  # set on records that copy a line already printed on stdout


class _SkipEchoes(logging.Filter):
    """Keeps copies of stdout lines off the console handler (they were printed already)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, _ECHO, False)


class _FileFormatter(logging.Formatter):
    """The console format with the date; copies of stdout lines are written as printed."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, _ECHO, False):
            return record.getMessage()
        return super().format(record)


def get_logger(name: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Return the project logger (or a child ``csra.<name>``), configured once.

    Args:
        name: optional child name, e.g. ``"train"`` gives ``csra.train``.
        level: level set on the root project logger the first time it is configured.
    Returns:
        a ``logging.Logger`` writing to stderr through its own handler.
    """
    root = logging.getLogger(LOGGER_NAME)
    if not getattr(root, "_csra_configured", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler.addFilter(_SkipEchoes())
        root.addHandler(handler)
        root.setLevel(level)
        root.propagate = False
        root._csra_configured = True  # type: ignore[attr-defined]
    return root if not name else root.getChild(name)


def _is_std_stream(path: Path) -> bool:
    """True when file descriptor 1 or 2 of this process already writes to ``path``."""
    try:
        target = os.stat(path)
    except OSError:
        return False
    for fd in (1, 2):
        try:
            if os.path.samestat(os.fstat(fd), target):
                return True
        except OSError:
            continue
    return False


def attach_log_file(path: str | os.PathLike[str]) -> logging.FileHandler | None:
    """Append everything the project logs (and :func:`record_in_log_files` lines) to ``path``.

    Args:
        path: the log file; created if missing, appended to otherwise (a resumed run
            continues its file).
    Returns:
        the attached handler (give it to :func:`detach_log_file`), or None when stdout or
        stderr of this process already is that file (e.g. ``train.py ... >> DIR/train.log
        2>&1``): a second writer would only repeat every line.
    Raises:
        OSError: the file cannot be opened for appending.
    """
    path = Path(path)
    if _is_std_stream(path):
        return None
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(_FileFormatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    get_logger().addHandler(handler)
    return handler


def detach_log_file(handler: logging.Handler | None) -> None:
    """Remove a handler added by :func:`attach_log_file` and close its file (None: no-op)."""
    if handler is None:
        return
    get_logger().removeHandler(handler)
    handler.close()


def record_in_log_files(message: str) -> None:
    """Write ``message`` (a line the caller printed on stdout) to the attached log files only.

    Args:
        message: the text as printed, without the trailing newline; may hold several lines.
    """
    get_logger().info(message, extra={_ECHO: True})
