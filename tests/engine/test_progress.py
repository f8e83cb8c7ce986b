"""Training progress lines (engine.progress) and the run's log file (utils.logger), with a fake clock."""
from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

import engine.progress as progress
from engine.progress import ProgressLog, StepMeter, echo, format_eta
from tests.conftest import REPO_ROOT
from utils.logger import LOGGER_NAME, attach_log_file, detach_log_file, get_logger


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Console(io.StringIO):
    """A stream that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def run_batch(log: ProgressLog, clock: FakeClock, read_s: float, step_s: float, samples: int) -> None:
    """One batch: ``read_s`` waiting for the loader, then ``step_s`` of training."""
    clock.advance(read_s)
    log.loaded()
    clock.advance(step_s)
    log.finished(samples)


def test_meter_averages_reader_and_batch_cost_since_the_last_take() -> None:
    clock = FakeClock()
    meter = StepMeter(clock)
    for read_s, step_s, samples in ((0.1, 0.4, 8), (0.3, 0.7, 4)):
        clock.advance(read_s)
        meter.loaded()
        clock.advance(step_s)
        meter.finished(samples)
    window = meter.take()
    assert window.batches == 2
    assert window.reader_cost == pytest.approx(0.2)     # (0.1 + 0.3) / 2
    assert window.batch_cost == pytest.approx(0.75)     # (0.5 + 1.0) / 2: reading included
    assert window.samples == pytest.approx(6.0)
    assert window.ips == pytest.approx(12 / 1.5)
    assert meter.last_batch_cost == pytest.approx(1.0)
    # a new window: only the batches after the take count
    clock.advance(0.5)
    meter.loaded()
    clock.advance(1.5)
    meter.finished(8)
    window = meter.take()
    assert (window.batches, window.reader_cost, window.batch_cost, window.samples, window.ips) == pytest.approx((1, 0.5, 2.0, 8.0, 4.0))
    assert meter.take().batches == 0


def test_line_has_the_fields_and_averages_over_the_batches_since_the_previous_line() -> None:
    clock = FakeClock()
    log = ProgressLog(3, total_batches=3, total_images=20, batch_size=8, print_freq=2, console=Console(False), clock=clock)
    run_batch(log, clock, 0.1, 0.4, 8)
    assert log.due(0)
    assert log.line(0, 0.693147, 0.01) == (
        "Epoch 3[8/20]: loss:0.69315, lr:0.01000, time:0.5000, avg_reader_cost: 0.10000 sec, "
        "avg_batch_cost: 0.50000 sec, avg_samples: 8.0, avg_ips: 16.00 images/sec, eta: 0:00:01")
    run_batch(log, clock, 0.2, 0.8, 8)
    assert not log.due(1)
    run_batch(log, clock, 0.4, 1.6, 4)
    assert log.due(2)
    # batches 1 and 2 only; done is capped at the epoch's images
    assert log.line(2, 0.5, 0.001) == (
        "Epoch 3[20/20]: loss:0.50000, lr:0.00100, time:2.0000, avg_reader_cost: 0.30000 sec, "
        "avg_batch_cost: 1.50000 sec, avg_samples: 6.0, avg_ips: 4.00 images/sec, eta: 0:00:00")


def test_eta_uses_the_pace_of_the_batches_run_since_a_resume() -> None:
    clock = FakeClock()
    log = ProgressLog(1, total_batches=20, total_images=160, batch_size=8, start_batch=10, print_freq=1,
                      console=Console(False), clock=clock)
    run_batch(log, clock, 0.0, 2.0, 8)  # batch 10: 2 s; 9 batches left
    assert log.line(10, 0.1, 0.1).endswith(", eta: 0:00:18")
    assert format_eta(3725.4) == "1:02:05" and format_eta(-1) == "0:00:00"


def test_heartbeat_fires_after_the_interval_and_not_before() -> None:
    clock = FakeClock()
    log = ProgressLog(1, total_batches=1000, total_images=8000, batch_size=8, print_freq=0, interval=30,
                      console=Console(False), clock=clock)
    run_batch(log, clock, 0.0, 29.0, 8)
    assert not log.due(0)
    run_batch(log, clock, 0.0, 0.75, 8)
    assert not log.due(1)  # 29.75 s
    run_batch(log, clock, 0.0, 0.25, 8)
    assert log.due(2)  # 30 s
    line = log.line(2, 0.25, 0.01)
    assert line.startswith("Epoch 1[24/8000]: loss:0.25000, lr:0.01000, ")
    assert "avg_samples: 8.0" in line and "avg_batch_cost: 10.00000 sec" in line
    run_batch(log, clock, 0.0, 10.0, 8)
    assert not log.due(3)  # the clock restarts at each line
    run_batch(log, clock, 0.0, 20.0, 8)
    assert log.due(4)


def test_a_print_freq_line_restarts_the_heartbeat_clock() -> None:
    clock = FakeClock()
    log = ProgressLog(1, total_batches=100, total_images=800, batch_size=8, print_freq=3, interval=30,
                      console=Console(False), clock=clock)
    for it in range(4):
        run_batch(log, clock, 0.0, 10.0, 8)
        if log.due(it):
            log.line(it, 0.1, 0.1)
    # batch 3 (at 40 s) was a print_freq line; 10 s later no heartbeat is due
    run_batch(log, clock, 0.0, 10.0, 8)
    assert not log.due(4)


@pytest.mark.parametrize("tty, heartbeat", [(True, True), (False, False)])
def test_no_heartbeat_where_the_bar_shows_or_when_disabled(tty: bool, heartbeat: bool) -> None:
    """A terminal shows the progress bar (no heartbeat); ranks other than 0 pass heartbeat=False."""
    clock = FakeClock()
    log = ProgressLog(1, total_batches=100, total_images=800, batch_size=8, print_freq=10, heartbeat=heartbeat,
                      interval=30, console=Console(tty), clock=clock)
    assert not log.heartbeat
    for it in range(1, 5):
        run_batch(log, clock, 0.0, 100.0, 8)
        assert not log.due(it)
    assert log.due(10)  # print_freq lines still come


def test_interval_defaults_to_the_module_constant(monkeypatch) -> None:
    monkeypatch.setattr(progress, "HEARTBEAT_SECONDS", 0.5)
    clock = FakeClock()
    log = ProgressLog(1, total_batches=10, total_images=80, batch_size=8, console=Console(False), clock=clock)
    assert log.interval == 0.5
    run_batch(log, clock, 0.0, 0.5, 8)
    assert log.due(0)


@pytest.fixture
def console_stream():
    """The project logger's console handler writing into a StringIO for the test."""
    handler = next(h for h in get_logger().handlers if type(h) is logging.StreamHandler)
    previous = handler.setStream(io.StringIO())
    yield handler.stream
    handler.setStream(previous)


def test_log_file_gets_logger_lines_and_echoed_lines_as_printed(tmp_path: Path, capsys, console_stream) -> None:
    path = tmp_path / "train.log"
    path.write_text("earlier run\n")
    handler = attach_log_file(path)
    assert handler is not None
    try:
        echo("Epoch 1[8/24]: loss:0.69315\nsecond line")
        get_logger("train").info("Epoch 1 training ends")
    finally:
        detach_log_file(handler)
    get_logger("train").info("after the run")
    assert capsys.readouterr().out == "Epoch 1[8/24]: loss:0.69315\nsecond line\n"
    console = console_stream.getvalue()
    assert "Epoch 1 training ends" in console and "loss:0.69315" not in console  # printed once, on stdout
    lines = path.read_text().splitlines()
    assert lines[:3] == ["earlier run", "Epoch 1[8/24]: loss:0.69315", "second line"]  # appended, as printed
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] INFO csra\.train: Epoch 1 training ends", lines[3])
    assert len(lines) == 4  # detached: nothing more
    assert handler not in logging.getLogger(LOGGER_NAME).handlers


def test_no_log_file_handler_when_stdout_already_goes_to_that_file(tmp_path: Path) -> None:
    """``train.py ... >> DIR/train.log 2>&1`` (the TIPC chain): a second writer would double every line."""
    path = tmp_path / "train.log"
    code = ("import sys; from utils.logger import attach_log_file; "
            "print('handler', attach_log_file(sys.argv[1]) is not None, flush=True)")
    with open(path, "a") as out:
        subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
    assert path.read_text() == "handler False\n"
    other = tmp_path / "other.log"
    with open(path, "a") as out:
        subprocess.run([sys.executable, "-c", code, str(other)], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
    assert path.read_text().splitlines()[-1] == "handler True"
