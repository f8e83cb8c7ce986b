"""Paddle Inference for exported CSRA models: predictor set-up, a prefetching input pipeline,
and infer.py's main loop.

The images go through exactly predict.py's path: ``datasets.image_io.load_rgb`` ->
``datasets.transforms.preprocess`` (mean/std and size from ``inference.yml``) -> the
program (sigmoid inside) -> ``deploy.prediction.prediction_line`` / ``prediction_record``.
So for the same weights and images infer.py prints predict.py's lines.

Overlap: ``predictor.run()`` keeps the Python GIL while it computes, so a thread cannot
decode the next batch meanwhile; :class:`BatchPrefetcher` therefore decodes and preprocesses
in low-priority worker *processes* (``spawn``), ``lookahead`` images ahead, and hands the
batches over in input order; an image the workers have not started when it is needed is
loaded by the main thread instead. ``num_workers=0`` loads everything in the main thread.
Scripts using it must guard their entry point with ``if __name__ == "__main__":`` (spawn
re-imports the main module).
"""
from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datasets.image_io import load_rgb
from datasets.transforms import preprocess
from deploy.backends.base import InferenceBackend
from deploy.inference_config import EXPORT_HINT, DeployConfig, ModelFiles, find_model_files
from utils.errors import UserError
from utils.logger import get_logger
from utils.memory import retain_freed_memory
from utils.quiet import ONEDNN_REDUCE_MEAN, filtered_fd
from deploy.prediction import Batch

log = get_logger("infer")

PRECISIONS = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------- predictor
@dataclass
class RuntimeOptions:
    """Paddle Inference settings (infer.py's flags).

    Attributes:
        use_gpu, gpu_id, gpu_mem: GPU use, device and initial memory pool (MB).
        use_tensorrt: TensorRT subgraphs (GPU only); ``precision`` then applies to them.
        precision: fp32, fp16 (GPU) or int8 (TensorRT with a quantised model).
        enable_mkldnn: oneDNN kernels on CPU.
        cpu_threads: CPU math threads of the predictor.
        ir_optim: graph optimisation passes.
        memory_optim: buffer reuse (turns on the new IR and executor, which it needs for .json programs).
        max_batch_size: largest batch (TensorRT dynamic shape range).
    """

    use_gpu: bool = False
    gpu_id: int = 0
    gpu_mem: int = 500
    use_tensorrt: bool = False
    precision: str = "fp32"
    enable_mkldnn: bool = True
    cpu_threads: int = 1
    ir_optim: bool = True
    memory_optim: bool = False
    max_batch_size: int = 1


def check_runtime_options(opts: RuntimeOptions) -> None:
    """Refuse settings this Paddle build cannot honour (no silent CPU fallback).

    Raises:
        UserError: GPU or TensorRT asked on a build without CUDA / TensorRT or without a
            visible GPU; fp16/int8 on CPU; int8 without TensorRT; unknown precision.
    """
    import paddle

    if opts.precision not in PRECISIONS:
        raise UserError(f"--precision {opts.precision}: choose one of {', '.join(PRECISIONS)}")
    cuda = paddle.is_compiled_with_cuda()
    if opts.use_tensorrt:
        if not cuda:
            raise UserError("--use_tensorrt True: TensorRT runs on NVIDIA GPUs, but this Paddle build has no CUDA "
                            "(paddle.is_compiled_with_cuda() is False). Install a GPU build of paddlepaddle with TensorRT, "
                            "or run with --use_tensorrt False")
        if not opts.use_gpu:
            raise UserError("--use_tensorrt True needs --use_gpu True (TensorRT runs on the GPU)")
        import paddle.inference as paddle_infer

        if tuple(paddle_infer.get_trt_compile_version()) == (0, 0, 0):
            raise UserError("--use_tensorrt True: this Paddle build was compiled without TensorRT; "
                            "install a TensorRT-enabled paddlepaddle-gpu build, or run with --use_tensorrt False")
    if opts.use_gpu:
        if not cuda:
            raise UserError("--use_gpu True: this Paddle build has no CUDA support (paddle.is_compiled_with_cuda() is False). "
                            "Install a GPU build of paddlepaddle (see the README), or run with --use_gpu False")
        if paddle.device.cuda.device_count() < 1:
            raise UserError("--use_gpu True: Paddle has CUDA but sees no GPU (check the driver and CUDA_VISIBLE_DEVICES), "
                            "or run with --use_gpu False")
        if opts.precision == "int8" and not opts.use_tensorrt:
            raise UserError("--precision int8 needs --use_tensorrt True (and a quantised model)")
    elif opts.precision != "fp32":
        raise UserError(f"--precision {opts.precision}: on CPU only fp32 is supported "
                        "(fp16 and int8 need --use_gpu True, int8 also --use_tensorrt True)")


def build_config(files: ModelFiles, opts: RuntimeOptions, img_size: int, input_name: str):  # -> paddle.inference.Config
    """A ``paddle.inference.Config`` for ``files`` with ``opts`` applied (explicit file paths)."""
    import paddle.inference as paddle_infer

    config = paddle_infer.Config(str(files.model_file), str(files.params_file))
    precision = {"fp32": paddle_infer.PrecisionType.Float32, "fp16": paddle_infer.PrecisionType.Half,
                 "int8": paddle_infer.PrecisionType.Int8}[opts.precision]
    if opts.use_gpu:
        gpu_precision = precision if (opts.precision == "fp16" and not opts.use_tensorrt) else paddle_infer.PrecisionType.Float32
        config.enable_use_gpu(opts.gpu_mem, opts.gpu_id, gpu_precision)
        if opts.use_tensorrt:
            config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=opts.max_batch_size, min_subgraph_size=3,
                                          precision_mode=precision, use_static=False, use_calib_mode=False)
            shape = lambda b: {input_name: [b, 3, img_size, img_size]}  # noqa: E731
            config.set_trt_dynamic_shape_info(shape(1), shape(opts.max_batch_size), shape(opts.max_batch_size))
    else:
        config.disable_gpu()
        if opts.enable_mkldnn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(10)
        else:
            config.disable_mkldnn()
        config.set_cpu_math_library_num_threads(opts.cpu_threads)
    config.switch_ir_optim(opts.ir_optim)
    if opts.memory_optim:
        if files.model_file.suffix == ".json":  # otherwise create_predictor fails (Paddle 3.3)
            config.enable_new_ir(True)
            config.enable_new_executor(True)
        config.enable_memory_optim()
    config.disable_glog_info()
    return config


def _paddle_reason(exc: BaseException) -> str:
    """The informative line of a Paddle C++ error (they span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    picked = next((ln for ln in lines if "Error" in ln and not ln.startswith("In user code")), lines[0] if lines else "")
    picked = picked or type(exc).__name__
    return picked if len(picked) <= 300 else picked[:297] + "..."


def stdout_to_stderr() -> Any:
    """Send file descriptor 1 to stderr for the block, without Paddle's stray oneDNN diagnostic.

    Paddle's oneDNN passes print ``ReduceMeanCheckIfOneDNNSupport`` straight to the C++
    stdout during the first run: that line is dropped, anything else printed there goes to
    stderr, so infer.py's stdout holds only prediction lines. Use as ``with stdout_to_stderr():``.
    """
    return filtered_fd(1, ONEDNN_REDUCE_MEAN, to_fd=2)


class Predictor(InferenceBackend):
    """One Paddle Inference predictor for an export, created once (the ``paddle`` backend).

    ``predictor(images float32 [B, 3, S, S]) -> probabilities float32 [B, C]``.
    """

    name = "paddle"

    def __init__(self, files: ModelFiles, opts: RuntimeOptions, deploy: DeployConfig) -> None:
        import paddle.inference as paddle_infer

        super().__init__(deploy, files.model_file)
        self.files, self.opts = files, opts
        retain_freed_memory()  # steady-state runs reuse their pages instead of faulting them in again
        self.config = build_config(files, opts, deploy.img_size, deploy.input_name)
        self.configure(self.config)
        try:
            with stdout_to_stderr():
                self.predictor = paddle_infer.create_predictor(self.config)
        except Exception as exc:
            raise UserError(self._mismatch_message("cannot load", exc)) from None
        names = self.predictor.get_input_names()
        if deploy.input_name not in names:
            raise UserError(f"{files.model_file} has inputs {names}, but inference.yml says '{deploy.input_name}': "
                            f"the files come from different exports; re-export ({EXPORT_HINT})")
        self.input = self.predictor.get_input_handle(deploy.input_name)
        self.output_names = self.predictor.get_output_names()
        self.output_name = self.output_names[0]

    def configure(self, config: Any) -> None:
        """Hook for subclasses: change the ``paddle.inference.Config`` before the predictor is created."""

    def _mismatch_message(self, what: str, exc: BaseException) -> str:
        return (f"{what} the model {self.files.model_file} with the weights {self.files.params_file}: they do not belong "
                f"together (weights from another export or another model?) or a file is damaged. Export both files again "
                f"into one folder with export_model.py. Paddle said: {_paddle_reason(exc)}")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One predictor run on a checked batch float32 [B, 3, S, S] -> float32 [B, C]."""
        try:
            self.input.reshape(list(batch.shape))
            self.input.copy_from_cpu(batch)
            with stdout_to_stderr():
                self.predictor.run()
            return self.predictor.get_output_handle(self.output_name).copy_to_cpu()
        except Exception as exc:
            raise UserError(self._mismatch_message("running", exc)) from None

    def run_with_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One run of a ``--with_heatmaps`` export: (float32 [B, C], class maps float32 [B, C, h, w])."""
        if len(self.output_names) < 2:
            raise UserError(f"{self.files.model_file} has one output but inference.yml says it has class maps: the files come "
                            f"from different exports; re-export ({EXPORT_HINT} --with_heatmaps)")
        probs = self.run(batch)
        return probs, self.predictor.get_output_handle(self.output_names[1]).copy_to_cpu()


# --------------------------------------------------------------------------- input pipeline
def load_and_preprocess(path: str, img_size: int, mean: Sequence[float], std: Sequence[float]) -> tuple[np.ndarray | None, str | None, float]:
    """``preprocess(load_rgb(path))`` as predict.py does; never raises a UserError.

    Returns:
        (float32 [3, S, S] or None, the reason it could not be read or None, seconds spent).
    """
    t0 = time.perf_counter()
    try:
        array = preprocess(load_rgb(path), img_size, mean, std)
        return array, None, time.perf_counter() - t0
    except UserError as exc:
        return None, str(exc), time.perf_counter() - t0


WORKER_NICENESS = 19
"""Scheduling priority drop of the loader processes. When the predictor keeps every core busy
(CPU inference on all cores) they decode in the idle moments instead of preempting one of the
predictor's threads (which would stall the others at the next barrier); when cores are idle
(GPU inference, fewer predictor threads than cores) they run at full speed. If they fall
behind, the main thread takes over the images that have not started (see ``_results``)."""


def _worker_init(niceness: int) -> None:
    """Loader process set-up: ignore Ctrl-C (the main process handles it) and lower priority."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass


class BatchPrefetcher:
    """Iterate over preprocessed batches of ``paths`` while the previous batch runs.

    Same contract as ``deploy.prediction.iter_batches``: batches of 1..batch_size images that
    loaded, in input order; unreadable files are appended to ``failures`` as (path, reason)
    and skipped. Use as a context manager (it owns the worker processes)::

        with BatchPrefetcher(paths, 448, mean, std, 8, failures, workers=1) as batches:
            for batch in batches: ...

    Args:
        paths: image files.
        img_size, mean, std: preprocessing (from inference.yml).
        batch_size: images per batch.
        failures: list receiving (path, reason).
        workers: worker processes (0: load in the calling thread).
        timer: optional ``deploy.benchlog.StageTimer``; per batch, the preprocessing seconds
            of its images are added to stage ``preprocess``.
        lookahead: images in flight (default ``2 * batch_size + workers``).
        niceness: priority drop of the worker processes (see ``WORKER_NICENESS``).
    Work starts in ``__enter__``, so creating the predictor afterwards overlaps with decoding.
    """

    def __init__(self, paths: Sequence[str], img_size: int, mean: Sequence[float], std: Sequence[float], batch_size: int,
                 failures: list[tuple[str, str]], workers: int = 1, timer: Any = None, lookahead: int | None = None,
                 niceness: int = WORKER_NICENESS) -> None:
        self.paths = list(paths)
        self.args = (img_size, tuple(float(v) for v in mean), tuple(float(v) for v in std))
        self.batch_size = batch_size
        self.failures = failures
        self.workers = max(0, workers)
        self.timer = timer
        self.niceness = niceness
        self.lookahead = max(1, lookahead if lookahead is not None else 2 * batch_size + self.workers)
        self._pool: Any = None
        self._pending: collections.deque = collections.deque()
        self._next = 0

    def __enter__(self) -> "BatchPrefetcher":
        if self.workers and len(self.paths) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            try:
                self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(self.paths)),
                                                 mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                                 initargs=(self.niceness,))
                self._fill()
            except (OSError, NotImplementedError, RuntimeError) as exc:  # e.g. no /dev/shm for the queues
                log.warning("no worker processes (%s): loading images in the main thread", exc)
                self._close_pool()
                self._pending.clear()
                self._next = 0
        return self

    def __exit__(self, *exc: Any) -> None:
        self._close_pool()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _fill(self) -> None:
        while self._pool is not None and self._next < len(self.paths) and len(self._pending) < self.lookahead:
            path = self.paths[self._next]
            self._pending.append((path, self._pool.submit(load_and_preprocess, path, *self.args)))
            self._next += 1

    def _results(self) -> Iterator[tuple[str, tuple[np.ndarray | None, str | None, float]]]:
        """(path, load result) in input order."""
        from concurrent.futures.process import BrokenProcessPool

        while self._pending:
            path, future = self._pending.popleft()
            if not future.done() and future.cancel():  # the workers are behind: load it here, now
                self._fill()
                yield path, load_and_preprocess(path, *self.args)
                continue
            try:
                result = future.result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): finish without workers
                log.warning("an image-loading worker process died: loading the remaining images in the main thread")
                rest = [path] + [p for p, _ in self._pending] + self.paths[self._next:]
                self._pending.clear()
                self._next = len(self.paths)
                self._close_pool()
                for p in rest:
                    yield p, load_and_preprocess(p, *self.args)
                return
            self._fill()
            yield path, result
        while self._next < len(self.paths):  # no pool
            path = self.paths[self._next]
            self._next += 1
            yield path, load_and_preprocess(path, *self.args)

    def __iter__(self) -> Iterator[Batch]:
        chunk: list[str] = []
        arrays: list[np.ndarray] = []
        seconds = 0.0
        for path, (array, reason, spent) in self._results():
            seconds += spent
            if array is None:
                self.failures.append((path, reason or "unreadable"))
            else:
                chunk.append(path)
                arrays.append(array)
            if len(chunk) == self.batch_size:
                yield self._batch(chunk, arrays, seconds)
                chunk, arrays, seconds = [], [], 0.0
        if chunk:
            yield self._batch(chunk, arrays, seconds)

    def _batch(self, chunk: list[str], arrays: list[np.ndarray], seconds: float) -> Batch:
        t0 = time.perf_counter()
        batch = Batch(chunk, np.stack(arrays))
        if self.timer is not None:
            self.timer.add("preprocess", seconds + time.perf_counter() - t0)
        return batch


def collect_input_files(input_file: str) -> list[str]:
    """``--input_file``: one image, or a folder (its images sorted by name, as predict.py's --img_dir)."""
    from deploy.prediction import collect_inputs

    path = Path(input_file)
    if path.is_dir():
        return collect_inputs(input_file)
    if path.is_file():
        return collect_inputs(None, [input_file])
    raise UserError(f"--input_file {input_file} not found: give an image file or a folder of images")


# --------------------------------------------------------------------------- infer.py
@dataclass(frozen=True)
class InferConfig:
    """infer.py's settings (``cli.settings.resolve_infer`` builds them from the flags).

    Attributes:
        input_file: an image, or a folder of images (not recursive).
        model_dir, model_file, params_file: the export (see ``find_model_files``).
        batch_size: images per predictor run.
        num_workers: processes decoding the next images (0: the main thread).
        threshold: report classes with score >= this (every class); None: inference.yml's.
        thresholds_file: a thresholds.json (per class) used instead of inference.yml's thresholds.
        heatmap_dir: draw the class-attention heatmaps there (needs an export ``--with_heatmaps``).
        topk: at most this many classes per line, or None.
        output: optional JSON file of all scores (predict.py's format).
        runtime: the runtime options (device, precision, threads, Paddle Inference switches).
        enable_benchmark: print an AutoLog-style timing block; warmup: untimed runs before it.
        backend: ``auto`` or a ``deploy.backends.REGISTRY`` name (paddle, openvino, onnxruntime).
    """

    input_file: str
    model_dir: str | None = None
    model_file: str | None = None
    params_file: str | None = None
    batch_size: int = 8
    num_workers: int = 1
    threshold: float | None = None
    thresholds_file: str | None = None
    heatmap_dir: str | None = None
    topk: int | None = None
    output: str | None = None
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    enable_benchmark: bool = False
    warmup: int = 1
    backend: str = "auto"


def run_infer(config: InferConfig) -> int:
    """infer.py: predict every image, print predict.py's lines, optional JSON and benchmark block.

    Returns:
        0, or 1 when some image could not be read (they are reported on stderr and skipped).
    """
    from deploy.benchlog import BenchInfo, StageTimer, print_report
    from utils.fileio import atomic_write_json
    from deploy.prediction import (HeatmapWriter, check_output_path, deploy_thresholds, prediction_line, prediction_record,
                                   report_failures, selected_classes)

    files = find_model_files(config.model_dir, config.model_file, config.params_file)
    if files.config_file is None:
        raise UserError(f"no inference.yml beside {files.model_file}: infer.py needs it for the image size, normalisation "
                        f"and class names; re-export with `{EXPORT_HINT}`")
    deploy = DeployConfig.load(files.config_file)
    threshold = deploy_thresholds(deploy, config.threshold, config.thresholds_file)
    if config.heatmap_dir and not deploy.heatmaps:
        raise UserError(f"--heatmap_dir needs an export with class maps, but {files.config_file} has none: export again with "
                        f"`{EXPORT_HINT} --with_heatmaps`")
    log.info("thresholds: %s", threshold.source)
    check_output_path(config.output)
    heatmaps = HeatmapWriter(config.heatmap_dir) if config.heatmap_dir else None
    paths = collect_input_files(config.input_file)
    opts = config.runtime
    from deploy.backends import choose_backend, create_backend

    backend = choose_backend(config.backend, files, deploy, opts)
    log.debug("backend: %s", backend)

    failures: list[tuple[str, str]] = []
    records: list[dict] = []
    timer = StageTimer()
    with BatchPrefetcher(paths, deploy.img_size, deploy.mean, deploy.std, config.batch_size, failures,
                         workers=config.num_workers, timer=timer) as batches:
        predictor = create_backend(backend, files, deploy, opts)  # created once; the workers decode meanwhile
        if config.enable_benchmark and config.warmup:
            predictor.warmup(config.batch_size, config.warmup)
        timer.start()
        for batch in batches:
            with timer.stage("inference"):
                if heatmaps is not None:
                    probs, maps = predictor.with_maps(batch.images)
                else:
                    probs = predictor(batch.images)
            with timer.stage("postprocess"):
                lines = []
                for path, row in zip(batch.paths, probs):
                    lines.append(prediction_line(path, row, deploy.class_names, threshold, config.topk))
                    if config.output:
                        records.append(prediction_record(path, row, deploy.class_names, threshold, config.topk))
                print("\n".join(lines), flush=True)
            if heatmaps is not None:
                for path, row, class_maps in zip(batch.paths, probs, maps):
                    heatmaps.write(path, class_maps, row, selected_classes(row, threshold, config.topk), deploy.class_names)
            timer.count(len(batch.paths))
        timer.stop()
    report_failures(failures)
    if config.output:
        atomic_write_json(config.output, records, indent=1)
    if config.enable_benchmark:
        info = BenchInfo(model_name=deploy.model_name, precision=opts.precision, batch_size=config.batch_size,
                         input_shape=f"3,{deploy.img_size},{deploy.img_size}", runtime_device="gpu" if opts.use_gpu else "cpu",
                         ir_optim=opts.ir_optim, enable_memory_optim=opts.memory_optim, enable_tensorrt=opts.use_tensorrt,
                         enable_mkldnn=opts.enable_mkldnn and not opts.use_gpu and backend in ("paddle", "openvino"),
                         cpu_math_library_num_threads=opts.cpu_threads, backend=backend)
        print_report(info, timer)
    return 1 if failures else 0
