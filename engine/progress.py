"""Training progress lines: per-batch timing, the ``--print_freq`` line and a time-based heartbeat.

Every line has the same form (one line; wrapped here)::

    Epoch 1[8/24]: loss:0.69315, lr:0.01000, time:0.6432, avg_reader_cost: 0.00012 sec,
    avg_batch_cost: 0.64321 sec, avg_samples: 8.0, avg_ips: 12.43 images/sec, eta: 0:00:01

``Epoch E[done/total]`` counts images of the epoch; ``loss`` and ``lr`` are those of the
batch just trained; ``time`` is that batch's wall time in seconds, reading included. The
``avg_*`` fields average over the batches since the previous line: ``avg_reader_cost`` is
the time spent waiting for the loader's next batch, ``avg_batch_cost`` the whole time per
batch (reading, step, loss), ``avg_samples`` the images per batch (of all processes) and
``avg_ips`` images per second. ``eta`` is the rest of the epoch at the epoch's mean pace.

A line is printed every ``print_freq`` batches and, where no live progress bar is shown
(the console is not a terminal, e.g. a redirected or scheduled run), also whenever
``HEARTBEAT_SECONDS`` have passed since the previous line, so that a log never stays
silent for long. The check runs after each batch.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, TextIO

from tqdm import tqdm

from utils.logger import record_in_log_files

# Seconds without a line after which a heartbeat line is printed (where no bar is shown).
HEARTBEAT_SECONDS = 30.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class Window:
    """Timing averages over the batches since the previous line.

    Attributes:
        batches: batches in the window.
        reader_cost: mean seconds per batch spent waiting for the loader.
        batch_cost: mean seconds per batch, reading included.
        samples: mean images per batch.
        ips: images per second (images of the window / their total batch time).
    """

    batches: int
    reader_cost: float
    batch_cost: float
    samples: float
    ips: float


class StepMeter:
    """Times batches: :meth:`loaded` when the loader hands over a batch, :meth:`finished` after its step.

    The time from the previous :meth:`finished` (or the meter's creation) to :meth:`loaded`
    is the batch's reader cost; to :meth:`finished` its batch cost.
    """

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        """Args:
            clock: monotonic seconds (tests pass a fake one).
        """
        self._clock = clock
        self._tic = clock()
        self.last_batch_cost = 0.0
        self._reset()

    def _reset(self) -> None:
        self._batches, self._reader, self._batch, self._samples = 0, 0.0, 0.0, 0

    def loaded(self) -> None:
        """Record that the next batch arrived (ends its reader time)."""
        self._reader += self._clock() - self._tic

    def finished(self, samples: int) -> float:
        """Record the end of a batch of ``samples`` images; returns its batch cost in seconds."""
        now = self._clock()
        cost = now - self._tic
        self._tic = now
        self._batches += 1
        self._batch += cost
        self._samples += samples
        self.last_batch_cost = cost
        return cost

    def window(self) -> Window:
        """The averages since the last :meth:`take` (zeros when no batch finished)."""
        n = self._batches
        if n == 0:
            return Window(0, 0.0, 0.0, 0.0, 0.0)
        return Window(n, self._reader / n, self._batch / n, self._samples / n,
                      self._samples / self._batch if self._batch > 0 else 0.0)

    def take(self) -> Window:
        """The averages since the last take, and start a new window."""
        window = self.window()
        self._reset()
        return window


def format_eta(seconds: float) -> str:
    """``H:MM:SS`` of ``seconds`` rounded to the second (negative counts as 0)."""
    return str(timedelta(seconds=round(max(seconds, 0.0))))


def format_line(epoch: int, done: int, total: int, loss: float, lr: float, batch_time: float, window: Window, eta_s: float) -> str:
    """The progress line (format in the module docstring).

    Args:
        epoch: 1-based epoch.
        done, total: images of the epoch trained so far, and in the whole epoch.
        loss, lr: of the batch just trained.
        batch_time: that batch's seconds, reading included.
        window: averages since the previous line.
        eta_s: seconds left in the epoch.
    Returns:
        the line, without newline.
    """
    return (f"Epoch {epoch}[{done}/{total}]: loss:{loss:.5f}, lr:{lr:.5f}, time:{batch_time:.4f}, "
            f"avg_reader_cost: {window.reader_cost:.5f} sec, avg_batch_cost: {window.batch_cost:.5f} sec, "
            f"avg_samples: {window.samples:.1f}, avg_ips: {window.ips:.2f} images/sec, eta: {format_eta(eta_s)}")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class ProgressLog:
    """The progress of one epoch: times its batches, decides when a line is due, formats it.

    Use, per batch ``it`` (0-based index in the epoch)::

        progress = ProgressLog(epoch, n_batches, n_images, batch_size, start_batch=skip, print_freq=10)
        for it, batch in enumerate(loader, start=skip):
            progress.loaded()
            ...train...
            progress.finished(images_in_batch)
            if progress.due(it):
                echo(progress.line(it, loss, lr))
    """

    def __init__(
        self,
        epoch: int,
        total_batches: int,
        total_images: int,
        batch_size: int,
        *,
        start_batch: int = 0,
        print_freq: int = 0,
        heartbeat: bool = True,
        interval: float | None = None,
        console: TextIO | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        """Start timing the epoch now.

        Args:
            epoch: 1-based epoch, for the lines.
            total_batches: batches in the whole epoch.
            total_images: images in the whole epoch (the ``[done/total]`` of the line).
            batch_size: images per step of all processes (``done`` = batches x batch_size, capped).
            start_batch: batches already trained before this run of the epoch (resume).
            print_freq: a line every N batches (at batches 0, N, 2N...); 0 for none.
            heartbeat: allow heartbeat lines (False e.g. on ranks other than 0).
            interval: heartbeat seconds; None for ``HEARTBEAT_SECONDS`` (read now).
            console: where the progress bar would draw (default ``sys.stderr``): on a terminal
                the bar shows progress, so no heartbeat.
            clock: monotonic seconds (tests pass a fake one).
        """
        self.epoch, self.total_batches, self.total_images = epoch, total_batches, total_images
        self.batch_size, self.start_batch, self.print_freq = batch_size, start_batch, print_freq
        self.interval = HEARTBEAT_SECONDS if interval is None else float(interval)
        self.heartbeat = heartbeat and not _is_terminal(console if console is not None else sys.stderr)
        self._clock = clock
        self.meter = StepMeter(clock)
        self._start = self._last_line = clock()

    def loaded(self) -> None:
        """The loader handed over the next batch."""
        self.meter.loaded()

    def finished(self, samples: int) -> None:
        """The step of the current batch is done; ``samples``: its images over all processes."""
        self.meter.finished(samples)

    def due(self, it: int) -> bool:
        """Whether batch ``it`` (0-based, just finished) gets a line: a ``print_freq`` batch,
        or a heartbeat (enabled, and ``interval`` seconds since the previous line)."""
        if self.print_freq and it % self.print_freq == 0:
            return True
        return self.heartbeat and self._clock() - self._last_line >= self.interval

    def line(self, it: int, loss: float, lr: float) -> str:
        """The line for batch ``it`` (0-based, just finished); starts a new averaging window.

        Args:
            it: the batch's index in the epoch.
            loss, lr: the batch's loss and learning rate.
        Returns:
            the formatted line (see :func:`format_line`).
        """
        now = self._clock()
        self._last_line = now
        done_batches = it + 1
        run_batches = max(done_batches - self.start_batch, 1)
        eta = (self.total_batches - done_batches) * (now - self._start) / run_batches
        done = min(done_batches * self.batch_size, self.total_images)
        return format_line(self.epoch, done, self.total_images, loss, lr, self.meter.last_batch_cost, self.meter.take(), eta)


def echo(text: str) -> None:
    """Print ``text`` on stdout (above a progress bar, flushed) and copy it into the run's log file."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()
    record_in_log_files(text)
