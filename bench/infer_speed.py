"""Inference speed on this CPU, every backend side by side, next to the compute floor and PyTorch.

    .venv/bin/python bench/infer_speed.py                                   # ResNet-101 + CSRA at 448, batch 1
    .venv/bin/python bench/infer_speed.py --torch_python /path/to/torch/python   # + the PyTorch reference (eager)
    .venv/bin/python bench/infer_speed.py --model resnet18 --img_size 224 --iters 3   # quick look

What it does, in one run:
1. exports a randomly initialised model with export_model.py into a temporary folder, with
   ``--quantize int8`` (which also writes model.onnx) when requirements-onnx.txt is installed,
   calibrated on generated pictures (random weights: only the speed means anything);
2. loads, in ONE worker process with ``--threads`` threads: numpy's float32 GEMM (the
   machine's practical peak, n x n matmul), dygraph, the Paddle Inference predictor (oneDNN;
   ``--with_native`` adds oneDNN off), ONNX Runtime fp32 and int8 -- each through the class
   infer.py uses (``deploy.backends``) -- and, with ``--torch_python``, the reference model in
   PyTorch eager mode in a helper process (``bench/torch_reference_infer.py``);
3. times them INTERLEAVED: ``--iters`` rounds, each running every variant once in turn (with a
   short pause before each run so that the previous runtime's spinning threads have gone to
   sleep), so load from other processes on a shared machine hits all variants alike; reports
   medians, the ratios between variants, and the compute floor = model FLOPs (2 x conv
   multiply-adds, counted with forward hooks) / the best GEMM rate seen during the rounds;
4. runs infer.py end to end (``--backend auto``) on a folder of JPEGs and compares its
   images/s with the bare backend's.
Times go to stdout as a table, followed by the targets of the inference issue.
"""
from __future__ import annotations

import argparse
import importlib.util
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
PAUSE_S = 0.3
"""Idle time before each timed run: longer than OpenMP's default spin time (200 ms) and ONNX
Runtime's spin, so one variant's spinning threads never steal the cores of the next one."""


# --------------------------------------------------------------------------- the worker (one process)
def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (``?`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _gflop_per_image(model, img_size: int) -> float:
    """2 x the multiply-adds of every convolution of ``model`` for one image (forward hooks)."""
    import numpy as np
    import paddle

    macs = [0]

    def count(layer, inputs, output):  # output elements x (in/groups * kh * kw)
        w = layer.weight.shape
        macs[0] += int(np.prod(output.shape[1:])) * w[1] * w[2] * w[3]

    hooks = [m.register_forward_post_hook(count) for m in model.sublayers() if isinstance(m, paddle.nn.Conv2D)]
    with paddle.no_grad():
        model(paddle.zeros([1, 3, img_size, img_size]))
    for h in hooks:
        h.remove()
    return 2 * macs[0] / 1e9


class TorchServer:
    """The PyTorch reference in its own process, one forward pass per :meth:`__call__` (see torch_reference_infer.py)."""

    def __init__(self, python: str, args: argparse.Namespace, batch: int) -> None:
        cmd = [python, str(ROOT / "bench" / "torch_reference_infer.py"), "--model", args.model, "--num_heads", str(args.num_heads),
               "--lam", str(args.lam), "--num_cls", str(args.num_cls), "--img_size", str(args.img_size), "--batch", str(batch),
               "--threads", str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the torch helper did not start ({' '.join(cmd)})")
        self.info = json.loads(line)
        self.last_ms = float("nan")

    def __call__(self, _x) -> None:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        self.last_ms = json.loads(self.proc.stdout.readline())["ms"]

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def worker(args: argparse.Namespace) -> dict:
    """Build every variant in this process and time them interleaved; returns the raw times (JSON-able)."""
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from deploy.backends import create_backend, installed_backends
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from models import build_model

    files = find_model_files(args.model_dir)
    deploy = DeployConfig.load(files.config_file)
    paddle.seed(0)
    model = build_model(args.model, args.num_cls, args.num_heads, args.lam)
    model.eval()
    gflop = _gflop_per_image(model, args.img_size)

    rng = np.random.default_rng(0)
    n = args.gemm_n
    a, b = rng.random((n, n), dtype=np.float32), rng.random((n, n), dtype=np.float32)
    gemm_rates: list[float] = []

    def gemm(_x) -> None:
        t0 = time.perf_counter()
        a @ b
        gemm_rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)

    variants: dict[str, object] = {"numpy GEMM": gemm}
    if not args.skip_dygraph:
        def dygraph(x) -> None:
            with paddle.no_grad():
                F.sigmoid(model(paddle.to_tensor(x))).numpy()
        variants["dygraph (eager)"] = dygraph
    opts = RuntimeOptions(cpu_threads=args.threads, max_batch_size=max(args.batches))
    variants["paddle oneDNN fp32"] = create_backend("paddle", files, deploy, opts)
    if args.with_native:
        variants["paddle native fp32"] = create_backend("paddle", files, deploy, RuntimeOptions(
            enable_mkldnn=False, cpu_threads=args.threads, max_batch_size=max(args.batches)))
    if "onnxruntime" in installed_backends() and deploy.onnx_file:
        variants["onnxruntime fp32"] = create_backend("onnxruntime", files, deploy, opts)
        if deploy.int8:
            variants["onnxruntime int8"] = create_backend("onnxruntime", files, deploy, RuntimeOptions(
                precision="int8", cpu_threads=args.threads))
    result: dict = {"gflop_per_image": gflop, "cpu": cpu_name(), "threads": args.threads, "batches": {}, "torch": None,
                    "mkl_debug_cpu_type": os.environ.get("MKL_DEBUG_CPU_TYPE")}
    for batch in args.batches:
        x = rng.random((batch, 3, args.img_size, args.img_size), dtype=np.float32)
        torch_server = TorchServer(args.torch_python, args, batch) if args.torch_python else None
        runs = dict(variants)
        if torch_server is not None:
            runs["PyTorch eager (reference)"] = torch_server
            result["torch"] = torch_server.info
        outputs = {}
        for name, fn in runs.items():  # warm-up (oneDNN primitive creation, allocator growth)
            out = fn(x)
            if isinstance(out, np.ndarray):
                outputs[name] = out
        if "paddle oneDNN fp32" in outputs:
            ref = outputs["paddle oneDNN fp32"]
            result.setdefault("max_abs_diff_vs_paddle", {})[str(batch)] = {
                k: float(np.abs(v - ref).max()) for k, v in outputs.items() if k != "paddle oneDNN fp32"}
        times: dict[str, list[float]] = {name: [] for name in runs}
        gemm_rates.clear()
        for _ in range(args.iters if batch == 1 else args.iters_big):
            for name, fn in runs.items():
                time.sleep(args.pause)
                t0 = time.perf_counter()
                fn(x)
                wall = 1000 * (time.perf_counter() - t0)
                times[name].append(fn.last_ms if fn is torch_server else wall)  # torch: its own timer (no pipe latency)
        if torch_server is not None:
            torch_server.close()
        result["batches"][str(batch)] = {"times_ms": times, "gemm_gflops": list(gemm_rates)}
    return result


# --------------------------------------------------------------------------- driver
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


def _end_to_end(model_dir: Path, images: Path, batch: int, threads: int, precision: str) -> dict:
    from deploy.benchlog import parse_report

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "infer.py", "--model_dir", str(model_dir), "--input_file", str(images), "--batch_size", str(batch),
           "--cpu_threads", str(threads), "--num_workers", "1", "--enable_benchmark", "True", "--precision", precision]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"infer.py failed:\n{proc.stderr[-3000:]}")
    fields = parse_report(proc.stdout)
    n, total = int(fields["data_num"]), float(fields["total time spent(s)"])
    return {"images": n, "total_s": total, "img_per_s": n / total, "pre_ms": float(fields["preprocess_time(ms)"]),
            "inf_ms": float(fields["inference_time(ms)"]), "backend": fields.get("inference_backend", "?")}


def _export(args: argparse.Namespace, tmp: Path) -> tuple[Path, bool]:
    """Export the random model (+ ONNX and int8 when the extra is installed). Returns (folder, with int8)."""
    export = tmp / "export"
    cmd = [sys.executable, "export_model.py", "--model", args.model, "--num_heads", str(args.num_heads), "--lam", str(args.lam),
           "--num_cls", str(args.num_cls), "--img_size", str(args.img_size), "--random_init", "--save_dir", str(export)]
    tools = all(importlib.util.find_spec(m) for m in ("paddle2onnx", "onnx", "onnxruntime", "ml_dtypes"))
    if tools and not args.no_int8:
        calib = _images(tmp / "calib", args.calib_images)
        cmd += ["--quantize", "int8", "--calib_dir", str(calib), "--calib_images", str(args.calib_images)]
    elif tools:
        cmd += ["--onnx"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"export failed:\n{proc.stderr[-3000:]}")
    return export, tools and not args.no_int8


def report(args: argparse.Namespace, res: dict, e2e: dict, extra_lines: list[str]) -> None:
    """Print the side-by-side table, the ratios and the targets."""
    gflop, threads = res["gflop_per_image"], res["threads"]
    for line in extra_lines:
        print(line)
    if res["torch"]:
        print(f"PyTorch reference: torch {res['torch']['torch']}, {res['torch']['threads']} thread(s), eager, inference_mode")
    for batch, data in res["batches"].items():
        b = int(batch)
        rates = data["gemm_gflops"]
        best = max(rates)
        floor = 1000 * gflop * b / best
        print(f"\nbatch {b}: float32 GEMM (numpy, {args.gemm_n}^2) during the rounds: best {best:.0f} GFLOP/s, median "
              f"{statistics.median(rates):.0f} GFLOP/s -> compute floor {floor:.0f} ms/batch ({gflop:.1f} GFLOP per image)")
        med = {k: statistics.median(v) for k, v in data["times_ms"].items() if k != "numpy GEMM"}
        torch_ms = med.get("PyTorch eager (reference)")
        print(f"{'variant':<28}{'ms/batch':>10}{'(min)':>8}{'img/s':>7}{'x floor':>9}{'vs dygraph':>12}{'vs PyTorch':>12}")
        for name, ms in med.items():
            dyg = med.get("dygraph (eager)")
            print(f"{name:<28}{ms:>10.0f}{min(data['times_ms'][name]):>8.0f}{1000 * b / ms:>7.2f}{ms / floor:>9.2f}"
                  + (f"{dyg / ms:>11.2f}x" if dyg else f"{'-':>12}") + (f"{torch_ms / ms:>11.2f}x" if torch_ms else f"{'-':>12}"))
        if b == 1:
            fp32 = {k: v for k, v in med.items() if k.endswith("fp32")}
            best_name = min(fp32, key=fp32.get)
            ratio = fp32[best_name] / floor
            print(f"\ntarget: fp32 within 1.2x of the floor (batch 1, {threads} threads): {best_name} {ratio:.2f}x "
                  f"-> {'met' if ratio <= 1.2 else 'MISSED'}; paddle oneDNN {med['paddle oneDNN fp32'] / floor:.2f}x")
            if torch_ms:
                speed = torch_ms / fp32[best_name]
                print(f"target: fp32 >= 1.6x faster than PyTorch eager: {best_name} {speed:.2f}x -> {'met' if speed >= 1.6 else 'MISSED'}; "
                      f"paddle oneDNN {torch_ms / med['paddle oneDNN fp32']:.2f}x")
            if "onnxruntime int8" in med:
                speed = fp32[best_name] / med["onnxruntime int8"]
                print(f"target: int8 >= 1.5x faster than the fastest fp32 ({best_name}): {speed:.2f}x -> "
                      f"{'met' if speed >= 1.5 else 'MISSED'}; int8 vs onnxruntime fp32 "
                      f"{med.get('onnxruntime fp32', float('nan')) / med['onnxruntime int8']:.2f}x")
    if "max_abs_diff_vs_paddle" in res:
        for batch, diffs in res["max_abs_diff_vs_paddle"].items():
            print(f"max |probability - paddle oneDNN| at batch {batch}: "
                  + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    for precision, e in e2e.items():
        print(f"infer.py end to end ({precision}, backend {e['backend']}), {e['images']} JPEGs, batch {args.e2e_batch}, "
              f"1 worker process: {e['img_per_s']:.2f} img/s; preprocess {e['pre_ms'] / args.e2e_batch:.1f} ms/img, "
              f"inference {e['inf_ms']:.0f} ms/batch")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num_heads", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--num_cls", type=int, default=20)
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--threads", type=int, default=2, help="threads of every variant (default 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--iters", type=int, default=5, help="interleaved rounds at batch 1")
    parser.add_argument("--iters_big", type=int, default=2, help="interleaved rounds at larger batches")
    parser.add_argument("--pause", type=float, default=PAUSE_S, help="idle seconds before each timed run (default %(default)s)")
    parser.add_argument("--gemm_n", type=int, default=3072)
    parser.add_argument("--torch_python", default=None, help="a Python with torch: time the PyTorch reference (eager) side by side")
    parser.add_argument("--skip_dygraph", action="store_true", help="leave dygraph out (it is the slowest variant)")
    parser.add_argument("--with_native", action="store_true", help="add the predictor with oneDNN off")
    parser.add_argument("--no_int8", action="store_true", help="do not quantise (no onnxruntime int8 variant)")
    parser.add_argument("--calib_images", type=int, default=8, help="calibration images of the int8 export (speed only)")
    parser.add_argument("--e2e_images", type=int, default=16, help="images of the end-to-end infer.py runs (0: skip them)")
    parser.add_argument("--e2e_batch", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        import utils  # noqa: F401  (the project's CPU settings, as every script has them)

        print(json.dumps(worker(args)))
        return 0

    load_before = _load()
    started = time.perf_counter()
    busy0, own0 = _cpu_busy_s(), _own_cpu_s()
    with tempfile.TemporaryDirectory(prefix="infer_speed_") as tmp:
        export, with_int8 = _export(args, Path(tmp))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = [sys.executable, __file__, "--worker", "--model_dir", str(export)] + [
            a for a in sys.argv[1:] if a != "--worker"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        e2e = {}
        if args.e2e_images:
            images = _images(Path(tmp) / "images", args.e2e_images)
            e2e["fp32"] = _end_to_end(export, images, args.e2e_batch, args.threads, "fp32")
            if with_int8:
                e2e["int8"] = _end_to_end(export, images, args.e2e_batch, args.threads, "int8")
    elapsed = time.perf_counter() - started
    others = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s() - own0)) / elapsed
    cores = os.cpu_count() or 1
    lines = [
        f"{args.model} + CSRA ({args.num_heads} head(s), {args.num_cls} classes) at {args.img_size} px, random weights; "
        f"CPU: {res['cpu']}, {cores} cores, {args.threads} threads per variant; MKL_DEBUG_CPU_TYPE={res['mkl_debug_cpu_type']}",
        f"load average before {load_before}, after {_load()}; bench took {elapsed:.0f} s; other processes used {others:.2f} of the "
        f"{cores} cores on average" + (" (a busy machine: compare the ratios, not the times)" if others > 0.1 else " (a quiet machine)"),
        f"variants interleaved in one process ({args.iters} rounds at batch 1, {args.pause} s pause before each run); medians",
    ]
    report(args, res, e2e, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
