"""A small stage timer and an AutoLog-style benchmark report (``infer.py --enable_benchmark True``).

The report has AutoLog's sections and field names (Env / Paddle / Conf / Model / Data /
Perf info), so TIPC log parsers read it, but it is computed here: no sampling subprocess,
no ``sys.exit``. Times are means per batch in milliseconds; ``total time spent(s)`` is the
wall-clock time of the prediction loop; ``cpu_rss(MB)`` is the process's peak resident
memory (``VmHWM`` in /proc/self/status, else ``getrusage``). If the ``auto_log`` package
happens to be importable its ``get_env_info`` fills the Env section; the PyPI package
called ``autolog`` is unrelated and is not used.
"""
from __future__ import annotations

import platform
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

STAGES: tuple[str, ...] = ("preprocess", "inference", "postprocess")


class StageTimer:
    """Accumulates time per stage and counts batches; thread-safe.

    ``with timer.stage("inference"): ...`` times a block; ``timer.add(stage, seconds)``
    records a time measured elsewhere (e.g. in a worker). ``start()``/``stop()`` bracket the
    wall-clock total.
    """

    def __init__(self, stages: tuple[str, ...] = STAGES) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = {s: 0.0 for s in stages}
        self.calls: dict[str, int] = {s: 0 for s in stages}
        self.items = 0
        self._t0: float | None = None
        self.wall = 0.0

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        """Add ``seconds`` spent in ``stage`` over ``calls`` batches."""
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.calls[stage] = self.calls.get(stage, 0) + calls

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as one call of stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def count(self, items: int) -> None:
        """Record ``items`` processed data items (images)."""
        with self._lock:
            self.items += items

    def start(self) -> None:
        """Start the wall clock."""
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Stop the wall clock; returns the total seconds since ``start``."""
        if self._t0 is not None:
            self.wall += time.perf_counter() - self._t0
            self._t0 = None
        return self.wall

    def mean_ms(self, stage: str) -> float:
        """Mean milliseconds per call of ``stage`` (0 when never called)."""
        calls = self.calls.get(stage, 0)
        return 1000.0 * self.seconds.get(stage, 0.0) / calls if calls else 0.0


def cpu_rss_mb() -> float:
    """Peak resident memory of this process in MB (VmHWM; VmRSS or getrusage as fallbacks)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        for key in ("VmHWM", "VmRSS"):
            if key in fields:
                return int(fields[key].split()[0]) / 1024.0  # kB
    except (OSError, ValueError):
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _os_version() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def env_info() -> dict[str, str]:
    """OS / CUDA / cuDNN / driver versions (``None`` strings on a CPU build)."""
    try:  # the real AutoLog, only if it happens to be installed (never pip-install it)
        from auto_log.env import get_env_info  # type: ignore[import-not-found]

        env = get_env_info()
        return {"os_info": str(env["os_info"]), "cuda_version": str(env["cuda_version"]),
                "cudnn_version": str(env["cudnn_version"]), "nvidia_driver_version": str(env["nvidia_driver_version"])}
    except Exception:
        pass
    import paddle

    cuda = paddle.version.cuda() if paddle.is_compiled_with_cuda() else None
    cudnn = paddle.version.cudnn() if paddle.is_compiled_with_cuda() else None
    driver = None
    try:
        driver = Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
    except (OSError, IndexError):
        pass
    return {"os_info": _os_version(), "cuda_version": str(cuda), "cudnn_version": str(cudnn), "nvidia_driver_version": str(driver)}


@dataclass
class BenchInfo:
    """What the report says about the run (AutoLog's config, model and data fields)."""

    model_name: str
    precision: str
    batch_size: int
    input_shape: str  # "3,448,448"
    runtime_device: str
    ir_optim: bool
    enable_memory_optim: bool
    enable_tensorrt: bool
    enable_mkldnn: bool
    cpu_math_library_num_threads: int
    backend: str = "paddle"


def report_lines(info: BenchInfo, timer: StageTimer, env: dict[str, Any] | None = None) -> list[str]:
    """The report as lines, in AutoLog's order and spelling (``drivier_version`` included)."""
    import paddle

    env = env or env_info()
    r4 = lambda v: round(float(v), 4)  # noqa: E731
    return [
        "---------------------- Env info ----------------------",
        f" OS_version: {env['os_info']}",
        f" CUDA_version: {env['cuda_version']}",
        f" CUDNN_version: {env['cudnn_version']}",
        f" drivier_version: {env['nvidia_driver_version']}",
        "---------------------- Paddle info ----------------------",
        f" paddle_version: {paddle.__version__}",
        f" paddle_commit: {getattr(paddle, '__git_commit__', 'unknown')}",
        " log_api_version: 1.0",
        "----------------------- Conf info -----------------------",
        f" runtime_device: {info.runtime_device}",
        f" ir_optim: {info.ir_optim}",
        f" enable_memory_optim: {info.enable_memory_optim}",
        f" enable_tensorrt: {info.enable_tensorrt}",
        f" enable_mkldnn: {info.enable_mkldnn}",
        f" cpu_math_library_num_threads: {info.cpu_math_library_num_threads}",
        f" inference_backend: {info.backend}",
        "----------------------- Model info ----------------------",
        f" model_name: {info.model_name}",
        f" precision: {info.precision}",
        "----------------------- Data info -----------------------",
        f" batch_size: {info.batch_size}",
        f" input_shape: {info.input_shape}",
        f" data_num: {timer.items}",
        "----------------------- Perf info -----------------------",
        f" cpu_rss(MB): {r4(cpu_rss_mb())}, gpu_rss(MB): None, gpu_util: None%",
        f" total time spent(s): {r4(timer.wall)}",
        f" preprocess_time(ms): {r4(timer.mean_ms('preprocess'))}, inference_time(ms): {r4(timer.mean_ms('inference'))}, "
        f"postprocess_time(ms): {r4(timer.mean_ms('postprocess'))}",
    ]


def print_report(info: BenchInfo, timer: StageTimer, stream: TextIO | None = None) -> None:
    """Print :func:`report_lines` (stdout by default, like AutoLog). Never exits."""
    out = stream or sys.stdout
    for line in report_lines(info, timer):
        print(line, file=out)
    out.flush()


def parse_report(text: str) -> dict[str, str]:
    """Read a report back into ``{field: value}`` (the Perf lines are split on ', ').

    Used by the tests and bench/infer_speed.py; unknown lines are ignored.
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith(" ") or ": " not in line:
            continue
        for part in line.strip().split(", "):
            if ": " in part:
                key, value = part.split(": ", 1)
                fields[key.strip()] = value.strip()
    return fields
