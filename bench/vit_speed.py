"""ViT-B/16 + CSRA inference speed on this CPU: dygraph, the Paddle Inference predictor (oneDNN on
and off) and ONNX Runtime, next to the compute floor; optionally a per-op profile of the predictor.

    .venv/bin/python bench/vit_speed.py                                  # 224 and 448, batch 1 and 8
    .venv/bin/python bench/vit_speed.py --sizes 224 --batches 1 --iters 5 --profile

For each size it exports a randomly initialised ``vit_b16`` (1 head, 20 classes) with
export_model.py (``--onnx`` when paddle2onnx is installed) into a temporary folder, then,
in this process and with ``--threads`` threads, times the variants INTERLEAVED (every round
times each variant once, after a short pause so that the previous runtime's spinning threads
sleep; ``--warm_runs 1`` adds an untimed run right before the timed one, so that every
variant and the floor's GEMM are timed in their steady state), as ``bench/infer_speed.py``
does for ResNet-101. The compute floor is the model's FLOPs (every matmul and the patch
convolution, counted from the shapes: 24·N·D² + 4·N²·D per block with N tokens of width D)
over the best numpy float32 GEMM rate seen in the same rounds. ``--profile`` prints the
predictor's time per operator type (Paddle's profiler). Random weights: only the times mean anything.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.infer_speed import PAUSE_S, cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL, NUM_CLS = "vit_b16", 20


def vit_gflop(img_size: int, dim: int = 768, depth: int = 12, mlp_ratio: float = 4.0, classes: int = NUM_CLS) -> float:
    """GFLOP (2 x multiply-adds) of one ViT + 1-head CSRA forward at ``img_size`` (square).

    Patch conv 2·P·D·768 (P = (S/16)² patches); per block with N = P + 1 tokens: qkv 6ND²,
    q·k^T and attn·v 4N²D, proj 2ND², MLP 4·mlp_ratio·ND²; the CSRA head 2·P·D·C.
    """
    patches = (img_size // 16) ** 2
    tokens = patches + 1
    block = (6 + 2 + 4 * mlp_ratio) * tokens * dim ** 2 + 4 * tokens ** 2 * dim
    return (2 * patches * dim * 768 + depth * block + 2 * patches * dim * classes) / 1e9


def export(img_size: int, folder: Path, onnx: bool) -> Path:
    """export_model.py --random_init for ``vit_b16`` at ``img_size`` into ``folder``; returns it."""
    cmd = [sys.executable, "export_model.py", "--model", MODEL, "--img_size", str(img_size), "--random_init",
           "--save_dir", str(folder)] + (["--onnx"] if onnx else [])
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"export failed: {result.stderr[-2000:]}")
    return folder


def variants(model_dir: Path, threads: int, max_batch: int, with_dygraph: bool) -> dict:
    """name -> callable(x [B,3,S,S] float32) for dygraph, the predictor (oneDNN on and off) and ONNX Runtime."""
    import paddle
    import paddle.nn.functional as F

    from deploy.backends import create_backend, installed_backends
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from models import build_model

    files = find_model_files(model_dir)
    deploy = DeployConfig.load(files.config_file)
    out: dict = {}
    if with_dygraph:
        paddle.seed(0)
        model = build_model(MODEL, NUM_CLS, img_size=deploy.img_size)
        model.eval()

        def dygraph(x):
            with paddle.no_grad():
                return F.sigmoid(model(paddle.to_tensor(x))).numpy()
        out["dygraph (eager)"] = dygraph
    opts = RuntimeOptions(cpu_threads=threads, max_batch_size=max_batch)
    out["paddle oneDNN fp32"] = create_backend("paddle", files, deploy, opts)
    out["paddle native fp32"] = create_backend("paddle", files, deploy, replace(opts, enable_mkldnn=False))
    if "onnxruntime" in installed_backends() and deploy.onnx_file:
        out["onnxruntime fp32"] = create_backend("onnxruntime", files, deploy, opts)
    return out


def profile(model_dir: Path, threads: int, batch: int, img_size: int, runs: int = 3) -> None:
    """Print the oneDNN predictor's time per operator type over ``runs`` runs (Paddle's op profiler)."""
    import numpy as np
    from paddle import inference

    config = inference.Config(str(model_dir / "inference.json"), str(model_dir / "inference.pdiparams"))
    config.disable_gpu()
    config.enable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    config.enable_profile()
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    x = np.random.default_rng(0).random((batch, 3, img_size, img_size), dtype=np.float32)
    for _ in range(runs + 1):
        handle.copy_from_cpu(x)
        predictor.run()
    print(f"# op profile: predictor oneDNN, batch {batch}, {img_size} px (printed by Paddle when the predictor is released)")
    del predictor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 448])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5, help="interleaved rounds at batch 1")
    parser.add_argument("--iters_big", type=int, default=2, help="interleaved rounds at larger batches")
    parser.add_argument("--warm_runs", type=int, default=0,
                        help="untimed runs after each pause, right before the timed one (default 0: the first run after "
                             "the pause is timed, its threads just woken). 1 times every variant, and the floor's GEMM, "
                             "in its steady state, as infer.py's stream of batches runs")
    parser.add_argument("--skip_dygraph", action="store_true")
    parser.add_argument("--gemm_n", type=int, default=1024)
    parser.add_argument("--profile", action="store_true", help="also print the predictor's per-op profile (first size, batch 1)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before Paddle's import, which would set 1 (dygraph's threads)
    import numpy as np

    onnx = importlib.util.find_spec("paddle2onnx") is not None
    rng = np.random.default_rng(0)
    a, b = rng.random((args.gemm_n, args.gemm_n), dtype=np.float32), rng.random((args.gemm_n, args.gemm_n), dtype=np.float32)
    print(f"# CPU: {cpu_name()}, {args.threads} threads; {MODEL} + CSRA (1 head, {NUM_CLS} classes), random weights")
    print("| size | batch | variant | median ms / batch | ms / image | x floor | vs predictor |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            model_dir = export(size, Path(tmp) / f"vit_{size}", onnx)
            runs = variants(model_dir, args.threads, max(args.batches), not args.skip_dygraph)
            for batch in args.batches:
                x = rng.random((batch, 3, size, size), dtype=np.float32)
                outs = {name: fn(x) for name, fn in runs.items()}  # warm-up
                ref = outs["paddle oneDNN fp32"]
                diffs = {k: float(np.abs(np.asarray(v) - ref).max()) for k, v in outs.items() if k != "paddle oneDNN fp32"}
                times: dict[str, list[float]] = {name: [] for name in runs}
                rates: list[float] = []
                for _ in range(args.iters if batch == 1 else args.iters_big):
                    time.sleep(PAUSE_S)
                    for _ in range(args.warm_runs):
                        a @ b
                    t0 = time.perf_counter()
                    a @ b
                    rates.append(2 * args.gemm_n ** 3 / (time.perf_counter() - t0) / 1e9)
                    for name, fn in runs.items():
                        time.sleep(PAUSE_S)
                        for _ in range(args.warm_runs):
                            fn(x)
                        t0 = time.perf_counter()
                        fn(x)
                        times[name].append(1000 * (time.perf_counter() - t0))
                floor_ms = vit_gflop(size) * batch / max(rates) * 1000
                pred = statistics.median(times["paddle oneDNN fp32"])
                print(f"| {size} | {batch} | compute floor ({vit_gflop(size):.1f} GFLOP/img at {max(rates):.0f} GFLOP/s) "
                      f"| {floor_ms:.1f} | {floor_ms / batch:.1f} | 1.00 | |")
                for name, values in times.items():
                    med = statistics.median(values)
                    print(f"| {size} | {batch} | {name} | {med:.1f} | {med / batch:.1f} | {med / floor_ms:.2f} | {med / pred:.2f} |")
                print(f"# {size} px batch {batch}: max |score - predictor| {diffs}")
            del runs
            if args.profile and size == args.sizes[0]:
                profile(model_dir, args.threads, 1, size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
