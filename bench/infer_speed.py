"""Inference speed on this CPU: dygraph vs Paddle Inference (oneDNN on/off, 1 and 2 threads)
vs ONNX Runtime (when installed), next to the machine's compute floor, plus end-to-end infer.py.

    .venv/bin/python bench/infer_speed.py            # ResNet-101 + CSRA at 448, batch 1 and 8 (~5 min on 2 cores)
    .venv/bin/python bench/infer_speed.py --model resnet18 --img_size 224 --iters 2   # quick look

What it does, in one run:
1. exports a randomly initialised model with export_model.py (--onnx too when paddle2onnx is
   installed) into a temporary folder;
2. measures float32 GEMM throughput with numpy (n x n matmul, best of several, 1 and 2
   threads) -- the machine's practical peak;
3. counts the model's FLOPs (2 x the multiply-adds of every convolution, counted with
   forward hooks) and derives the compute floor = FLOPs / GEMM rate;
4. times each setting in its own process (median of ``--iters`` runs after a warm-up run,
   per batch size) through the same ``deploy.predictor.Predictor`` infer.py uses;
5. runs infer.py on a folder of JPEGs (the shared VOC sample when present) with
   ``--enable_benchmark True`` and compares its images/s with the bare predictor's.
Random weights do not change the speed of a dense network.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOC_SAMPLE = ROOT.parent / "shared" / "data" / "voc2007_small" / "VOCdevkit" / "VOC2007" / "JPEGImages"


# --------------------------------------------------------------------------- workers (own process each)
def _time_runs(run, x, iters: int) -> dict:
    run(x)  # warm-up: oneDNN primitive creation, allocator growth
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times)}


def worker_gemm(args: argparse.Namespace) -> dict:
    import numpy as np

    n = args.gemm_n
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(args.gemm_reps))
    return {"gflops": 2 * n ** 3 / best / 1e9}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def worker_dygraph(args: argparse.Namespace) -> dict:
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from models import build_model

    paddle.seed(0)
    model = build_model(args.model, args.num_cls, args.num_heads, args.lam)
    model.eval()
    macs = [0]

    def count(layer, inputs, output):  # MACs of a convolution: output elements x (in/groups * kh * kw)
        w = layer.weight.shape
        macs[0] += int(np.prod(output.shape[1:])) * w[1] * w[2] * w[3]

    hooks = [m.register_forward_post_hook(count) for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    with paddle.no_grad():
        model(paddle.zeros([1, 3, args.img_size, args.img_size]))
    for h in hooks:
        h.remove()
    result = {"gflop_per_image": 2 * macs[0] / 1e9}
    with paddle.no_grad():
        run = lambda x: F.sigmoid(model(x)).numpy()  # noqa: E731
        for b in args.batches:
            x = paddle.rand([b, 3, args.img_size, args.img_size])
            result[str(b)] = _time_runs(run, x, args.iters if b == 1 else args.iters_big)
    return result


def worker_predictor(args: argparse.Namespace) -> dict:
    import numpy as np

    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import Predictor, RuntimeOptions

    files = find_model_files(args.model_dir)
    deploy = DeployConfig.load(files.config_file)
    opts = RuntimeOptions(enable_mkldnn=args.mkldnn, cpu_threads=args.threads, ir_optim=True, max_batch_size=max(args.batches))
    t0 = time.perf_counter()
    predictor = Predictor(files, opts, deploy)
    result = {"create_s": time.perf_counter() - t0}
    rng = np.random.default_rng(0)
    for b in args.batches:
        x = rng.random((b, 3, args.img_size, args.img_size), dtype=np.float32)
        result[str(b)] = _time_runs(predictor, x, args.iters if b == 1 else args.iters_big)
    return result


def worker_onnxruntime(args: argparse.Namespace) -> dict:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(Path(args.model_dir) / "model.onnx"), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    result = {}
    for b in args.batches:
        x = rng.random((b, 3, args.img_size, args.img_size), dtype=np.float32)
        result[str(b)] = _time_runs(lambda v: session.run(None, {"x": v}), x, args.iters if b == 1 else args.iters_big)
    return result


WORKERS = {"gemm": worker_gemm, "dygraph": worker_dygraph, "predictor": worker_predictor, "onnxruntime": worker_onnxruntime}


# --------------------------------------------------------------------------- driver
def _spawn(args: argparse.Namespace, kind: str, threads: int, **extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--worker", kind, "--threads", str(threads), "--model", args.model, "--num_cls", str(args.num_cls),
           "--num_heads", str(args.num_heads), "--lam", str(args.lam), "--img_size", str(args.img_size),
           "--iters", str(args.iters), "--iters_big", str(args.iters_big), "--gemm_n", str(args.gemm_n),
           "--gemm_reps", str(args.gemm_reps), "--batches", *map(str, args.batches)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, /proc/stat)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def _images(folder: Path, count: int) -> Path:
    """A folder of ``count`` JPEGs: copies of the shared VOC sample when present, else generated 500x375 pictures."""
    import shutil

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(VOC_SAMPLE.glob("*.jpg")) if VOC_SAMPLE.is_dir() else []
    rng = np.random.default_rng(0)
    for i in range(count):
        dest = folder / f"{i:04d}.jpg"
        if sources:
            shutil.copy(sources[i % len(sources)], dest)
        else:
            yy, xx = np.mgrid[0:375, 0:500]
            base = np.stack([xx * (1 + i % 3), yy * 2, xx + yy], axis=-1) % 256
            Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)).save(dest, quality=90)
    return folder


def _end_to_end(model_dir: Path, images: Path, batch: int, threads: int, workers: int) -> dict:
    from deploy.benchlog import parse_report

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "infer.py", "--model_dir", str(model_dir), "--input_file", str(images), "--batch_size", str(batch),
           "--enable_mkldnn", "True", "--cpu_threads", str(threads), "--num_workers", str(workers), "--enable_benchmark", "True"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"infer.py failed:\n{proc.stderr[-3000:]}")
    fields = parse_report(proc.stdout)
    n, total = int(fields["data_num"]), float(fields["total time spent(s)"])
    return {"images": n, "total_s": total, "img_per_s": n / total, "pre_ms": float(fields["preprocess_time(ms)"]),
            "inf_ms": float(fields["inference_time(ms)"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num_heads", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--num_cls", type=int, default=20)
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=5, help="timed runs at batch 1 (after one warm-up run)")
    parser.add_argument("--iters_big", type=int, default=2, help="timed runs at larger batches")
    parser.add_argument("--gemm_n", type=int, default=3072)
    parser.add_argument("--gemm_reps", type=int, default=6)
    parser.add_argument("--e2e_images", type=int, default=48, help="images for the end-to-end infer.py run")
    parser.add_argument("--worker", default=None, choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--mkldnn", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(WORKERS[args.worker](args)))
        return 0
    sys.path.insert(0, str(ROOT))
    import importlib.util

    cores = os.cpu_count() or 1
    thread_counts = sorted({1, min(2, cores)})
    load_before = _load()
    started = time.perf_counter()
    busy0, own0 = _cpu_busy_s(), _own_cpu_s()
    with tempfile.TemporaryDirectory(prefix="infer_speed_") as tmp:
        export = Path(tmp) / "export"
        has_onnx = all(importlib.util.find_spec(m) for m in ("paddle2onnx", "onnx", "onnxruntime"))
        cmd = [sys.executable, "export_model.py", "--model", args.model, "--num_heads", str(args.num_heads), "--lam", str(args.lam),
               "--num_cls", str(args.num_cls), "--img_size", str(args.img_size), "--random_init", "--save_dir", str(export)]
        proc = subprocess.run(cmd + (["--onnx"] if has_onnx else []), cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"export failed:\n{proc.stderr[-3000:]}")

        gemm = {t: _spawn(args, "gemm", t)["gflops"] for t in thread_counts}
        rows = []  # (label, threads, result)
        for t in thread_counts:
            dyg = _spawn(args, "dygraph", t)
            rows.append(("dygraph (eager, no_grad)", t, dyg))
        gflop = dyg["gflop_per_image"]
        for mk in (1, 0):
            for t in thread_counts:
                rows.append((f"predictor oneDNN {'on' if mk else 'off'}", t, _spawn(args, "predictor", t, mkldnn=mk, model_dir=export)))
        if has_onnx:
            for t in thread_counts:
                rows.append(("ONNX Runtime (CPU EP)", t, _spawn(args, "onnxruntime", t, model_dir=export)))
        big = max(args.batches)
        images = _images(Path(tmp) / "images", args.e2e_images)
        tmax = thread_counts[-1]
        e2e = {w: _end_to_end(export, images, big, tmax, w) for w in (1, 0)}
    elapsed = time.perf_counter() - started
    others = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s() - own0)) / elapsed

    print(f"{args.model} + CSRA ({args.num_heads} head(s), {args.num_cls} classes) at {args.img_size} px, float32, random weights; "
          f"{cores} cores; load average before {load_before}, after {_load()}; bench took {elapsed:.0f} s")
    print(f"other processes used {others:.2f} of the {cores} cores on average during the bench"
          + (" (a busy machine: times are inflated)" if others > 0.1 else " (a quiet machine)"))
    print("float32 GEMM (numpy, %d^2 matmul, best of %d): %s" % (
        args.gemm_n, args.gemm_reps, ", ".join(f"{t} thread(s) {g:.0f} GFLOP/s" for t, g in gemm.items())))
    print(f"model: {gflop:.1f} GFLOP per image (2 x conv multiply-adds) -> compute floor per image: "
          + ", ".join(f"{1000 * gflop / g:.0f} ms at {t} thread(s)" for t, g in gemm.items()))
    print()
    print(f"{'setting':<28}{'threads':>8}{'batch':>6}{'ms/batch':>10}{'(min)':>8}{'ms/img':>8}{'img/s':>7}{'x floor':>9}{'vs dygraph':>12}")
    dyg_ms = {(t, b): r[str(b)]["median_ms"] for label, t, r in rows if label.startswith("dygraph") for b in args.batches}
    for b in args.batches:
        for label, t, r in rows:
            ms = r[str(b)]["median_ms"]
            floor = 1000 * gflop * b / gemm[t]
            speedup = dyg_ms[(t, b)] / ms
            print(f"{label:<28}{t:>8}{b:>6}{ms:>10.0f}{r[str(b)]['min_ms']:>8.0f}{ms / b:>8.0f}{1000 * b / ms:>7.2f}"
                  f"{ms / floor:>9.2f}{speedup:>11.2f}x")
    print()
    bare = next(r for label, t, r in rows if label == "predictor oneDNN on" and t == tmax)
    bare_rate = 1000 * big / bare[str(big)]["median_ms"]
    for w, e in e2e.items():
        how = f"{w} worker process" if w else "no worker (main thread)"
        print(f"infer.py end to end, {e['images']} JPEGs, batch {big}, oneDNN, {tmax} threads, {how}: {e['img_per_s']:.2f} img/s "
              f"= {100 * e['img_per_s'] / bare_rate:.0f} % of the bare predictor ({bare_rate:.2f} img/s); "
              f"preprocess {e['pre_ms'] / big:.1f} ms/img, inference {e['inf_ms']:.0f} ms/batch")
    print()
    one = bare["1"]["median_ms"]
    floor1 = 1000 * gflop / gemm[tmax]
    speed = dyg_ms[(tmax, 1)] / one
    ratio = e2e[1]["img_per_s"] / bare_rate
    print(f"target: oneDNN predictor, {tmax} threads, batch 1 within 1.2x of the floor: {one / floor1:.2f}x -> {'met' if one / floor1 <= 1.2 else 'MISSED'}")
    print(f"target: >= 1.6x faster than dygraph ({tmax} threads, batch 1): {speed:.2f}x -> {'met' if speed >= 1.6 else 'MISSED'}")
    print(f"target: end-to-end >= 85 % of the bare predictor at batch {big}: {100 * ratio:.0f} % -> {'met' if ratio >= 0.85 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
