"""Silence Paddle's known-harmless start-up and export noise, and nothing else.

What Paddle 3.3 prints that says nothing about this project's run, and where it is caught:

| message | printed by | caught by |
| --- | --- | --- |
| ``UserWarning: No ccache found ...`` | ``paddle.utils.cpp_extension`` at import | warnings filter |
| ``WARNING: OMP_NUM_THREADS set to N, not 1 ...`` + ``PLEASE USE OMP_NUM_THREADS WISELY.`` | ``paddle.base.__bootstrap__`` (Python ``print`` to stderr) at import; ``configure_threads`` sets N on purpose | ``quiet_paddle`` imports Paddle with those two lines dropped |
| ``UserWarning: When training, we now always track global mean and variance.`` | BatchNorm in training mode | warnings filter |
| ``UserWarning: Skip loading for K. K is not found in the provided dict.`` | ``Layer.set_state_dict`` for every key a backbone-only file lacks; ``models.weights.load_state`` has already checked the keys and logs one line saying the classifier starts fresh | warnings filter (exactly that form; a shape mismatch still warns) |
| ``W... eager_utils.cc] Paddle static graph(PIR) not support input out tensor for now!!!!!`` | C++ glog while ``paddle.jit.save`` traces ``Tensor.mean`` | ``filtered_fd(2, PIR_OUT_TENSOR)`` around the export |
| ``ReduceMeanCheckIfOneDNNSupport`` | C++ stdout during a oneDNN predictor's first run | ``filtered_fd(1, ONEDNN_REDUCE_MEAN, to_fd=2)`` around predictor runs |

Every other warning and log line passes through unchanged.
"""
from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# (message regex matched at the start of the warning text, category): Paddle's harmless warnings.
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    (r"No ccache found", UserWarning),
    (r"When training, we now always track global mean and variance", UserWarning),
    (r"Skip loading for \S+\. \S+ is not found in the provided dict", UserWarning),
)
OMP_NOTICE = (re.compile(r"^WARNING: OMP_NUM_THREADS set to \d+, not 1\."), re.compile(r"^PLEASE USE OMP_NUM_THREADS WISELY\.$"))
PIR_OUT_TENSOR = (re.compile(r"Paddle static graph\(PIR\) not support input out tensor for now"),)
ONEDNN_REDUCE_MEAN = (re.compile(r"^ReduceMeanCheckIfOneDNNSupport$"),)


def filter_known_warnings() -> None:
    """Ignore exactly the warnings of ``KNOWN_WARNINGS`` in this process (idempotent)."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class LineFilter(io.TextIOBase):
    """A text stream that forwards whole lines to ``stream`` except those matching ``drop``."""

    def __init__(self, stream: TextIO, drop: Iterable[re.Pattern[str]]) -> None:
        super().__init__()
        self._stream = stream
        self._drop = tuple(drop)
        self._pending = ""

    def writable(self) -> bool:
        """Always True: a text sink."""
        return True

    def write(self, text: str) -> int:
        """Buffer ``text``; forward each completed line that no pattern matches. Returns len(text)."""
        self._pending += text
        while "\n" in self._pending:
            line, self._pending = self._pending.split("\n", 1)
            self._emit(line + "\n")
        return len(text)

    def _emit(self, line: str) -> None:
        if not any(p.search(line.rstrip("\n")) for p in self._drop):
            self._stream.write(line)

    def flush(self) -> None:
        """Forward an unfinished last line (unless dropped) and flush ``stream``."""
        if self._pending:
            line, self._pending = self._pending, ""
            self._emit(line)
        self._stream.flush()


def quiet_paddle() -> Any:
    """Import Paddle without its known-harmless start-up notices; returns the ``paddle`` module.

    Call it where a script is about to need Paddle (after argument parsing, so ``--help``
    never imports it), before anything else imports Paddle. It installs the warnings
    filters of ``KNOWN_WARNINGS`` and imports Paddle with the two OMP_NUM_THREADS lines
    dropped from stderr. If Paddle is already imported, only the filters are installed.
    """
    filter_known_warnings()
    if "paddle" in sys.modules:
        return sys.modules["paddle"]
    real = sys.stderr
    sys.stderr = LineFilter(real, OMP_NOTICE)  # type: ignore[assignment]
    try:
        import paddle
    finally:
        sys.stderr.flush()
        sys.stderr = real
    return paddle


_libc: Any = None


def _flush_c_streams() -> None:
    """fflush(NULL): push what C/C++ code buffered in stdio before a descriptor is swapped."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None)
        _libc.fflush(None)
    except (OSError, AttributeError):
        pass


@contextmanager
def filtered_fd(fd: int, drop: Iterable[re.Pattern[str]], to_fd: int | None = None) -> Iterator[None]:
    """Capture OS file descriptor ``fd`` for the block and replay it, without the lines matching ``drop``.

    For output written by C++ code (glog, ``std::cout``), which Python's warnings and
    ``sys.stderr`` never see. The captured text goes to ``to_fd`` (default: ``fd`` itself)
    when the block ends, in its original order; nothing is lost if the block raises.

    Args:
        fd: 1 (stdout) or 2 (stderr).
        drop: compiled patterns; a line matching any of them is discarded.
        to_fd: where the kept lines go (e.g. 2 to move C++ stdout chatter to stderr).
    """
    drop = tuple(drop)
    target = fd if to_fd is None else to_fd
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _flush_c_streams()
    try:
        saved = os.dup(fd)
        capture = tempfile.TemporaryFile()
        os.dup2(capture.fileno(), fd)
    except OSError:  # no such descriptor or no temporary space: leave the output alone
        yield
        return
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        _flush_c_streams()
        os.dup2(saved, fd)
        os.close(saved)
        capture.seek(0)
        kept = [line for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not any(p.search(line.rstrip("\n")) for p in drop)]
        capture.close()
        if kept:
            data = "".join(kept).encode("utf-8")
            while data:
                data = data[os.write(target, data):]
