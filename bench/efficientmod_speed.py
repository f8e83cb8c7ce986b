"""EfficientMod presets against ResNet-50/101 under the same CSRA head: params, GFLOPs, latency, images/s.

    OMP_NUM_THREADS=2 .venv/bin/python bench/efficientmod_speed.py                 # 448 px, batch 1 and 8
    OMP_NUM_THREADS=2 .venv/bin/python bench/efficientmod_speed.py --rounds 2 --batches 1 --modes predictor

Every model (random weights, 20 classes, 1 CSRA head) is exported with ``export_model.py`` and
then served by its own worker process holding both its Paddle Inference predictor (oneDNN,
``--threads`` threads, the class ``infer.py`` uses) and its dygraph model. The driver times them
INTERLEAVED: each round runs every (mode, batch) once on every model in turn, with a pause before
each run (Paddle's OpenMP threads spin for 200 ms after a run), so load from other processes on a
shared machine hits all models alike. It reports the median per model, images/s, and each
model's speed-up over ResNet-101 in the same setting (the ratio is what carries across machines).

GFLOPs are 2 x multiply-adds per image: every conv and Linear (forward hooks), the modulation
layers as a whole (``Modulation.modulation_macs``, which also counts its GELUs and product) and
the attention products (2 x N^2 x inner width per attention block), at the benchmark's input size.
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
sys.path.insert(0, str(ROOT))

from bench.infer_speed import PAUSE_S, cpu_name  # noqa: E402

MODELS = ("efficientmod_xxs", "efficientmod_xs", "efficientmod_s", "efficientmod_s_conv", "resnet50", "resnet101")
REFERENCE = "resnet101"


# --------------------------------------------------------------------------- worker (one process per model)
def count_gflops(model, img_size: int) -> float:
    """2 x multiply-adds of one ``img_size`` image through ``model`` (convs, Linears, attention products)."""
    import numpy as np
    import paddle

    from models.attention.emod import Modulation
    from models.efficientmod import ModulationBlock, MultiHeadSelfAttention

    macs = [0]

    def conv(layer, inputs, output):
        w = layer.weight.shape  # [out, in/groups, kh, kw]
        macs[0] += int(np.prod(output.shape[1:])) * w[1] * w[2] * w[3]

    def linear(layer, inputs, output):
        macs[0] += int(np.prod(output.shape[1:])) * layer.weight.shape[0]

    def modulation(layer, inputs, output):  # its fc2 and tiled g run as functional convs: counted as a whole
        _, _, h, w = inputs[0].shape
        mod = layer.mlp if isinstance(layer, ModulationBlock) else layer  # a block calls its layer's modulate()
        macs[0] += mod.modulation_macs(1, h, w)  # the count is per image (batch 1)

    def attention(layer, inputs, output):
        n = inputs[0].shape[1]
        macs[0] += 2 * n * n * layer.num_heads * layer.head_width  # q k^T and attn v

    hooks = []
    inside = {id(sub) for layer in model.sublayers() if isinstance(layer, Modulation) for sub in layer.sublayers()}
    for layer in model.sublayers():
        if id(layer) in inside:
            continue
        if isinstance(layer, (Modulation, ModulationBlock)):
            hooks.append(layer.register_forward_post_hook(modulation))
        elif isinstance(layer, paddle.nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv))
        elif isinstance(layer, paddle.nn.Linear):
            hooks.append(layer.register_forward_post_hook(linear))
        elif isinstance(layer, MultiHeadSelfAttention):
            hooks.append(layer.register_forward_post_hook(attention))
    with paddle.no_grad():
        model(paddle.zeros([1, 3, img_size, img_size]))
    for hook in hooks:
        hook.remove()
    return 2 * macs[0] / 1e9


def serve(args: argparse.Namespace) -> None:
    """Worker: load the export and the dygraph model, then answer ``MODE BATCH`` lines with one timed run (ms)."""
    from utils.memory import retain_freed_memory

    retain_freed_memory()
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    from deploy.backends import create_backend
    from deploy.inference_config import DeployConfig, find_model_files
    from deploy.predictor import RuntimeOptions
    from models import build_model

    files = find_model_files(args.model_dir)
    predictor = create_backend("paddle", files, DeployConfig.load(files.config_file),
                               RuntimeOptions(cpu_threads=args.threads, max_batch_size=max(args.batches)))
    paddle.seed(0)
    model = build_model(args.model, 20, 1, 0.1, img_size=args.img_size)
    model.eval()
    info = {"params": sum(int(np.prod(p.shape)) for p in model.parameters()), "gflops": count_gflops(model, args.img_size)}
    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, args.img_size, args.img_size), dtype=np.float32) for b in args.batches}

    def dygraph(x):
        with paddle.no_grad():
            return F.sigmoid(model(paddle.to_tensor(x))).numpy()

    runs = {"predictor": predictor.run, "dygraph": dygraph}
    for b, x in inputs.items():  # warm-up: oneDNN primitives, allocator growth
        for mode in args.modes:
            runs[mode](x)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        mode, batch = line.split()
        t0 = time.perf_counter()
        runs[mode](inputs[int(batch)])
        print(f"{1000 * (time.perf_counter() - t0):.3f}", flush=True)


# --------------------------------------------------------------------------- driver
def export(model: str, img_size: int, folder: Path) -> Path:
    """``export_model.py --random_init`` of ``model`` (20 VOC classes, 1 head) into ``folder/model``."""
    out = folder / model
    cmd = [sys.executable, "export_model.py", "--model", model, "--dataset", "voc07", "--num_heads", "1", "--lam", "0.1",
           "--img_size", str(img_size), "--random_init", "--save_dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"export of {model} failed:\n{proc.stderr[-3000:]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["predictor", "dygraph"], choices=["predictor", "dygraph"])
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per model and setting (interleaved)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--pause", type=float, default=PAUSE_S)
    parser.add_argument("--json", type=Path, help="also write every timed run here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        serve(args)
        return 0

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    times: dict[str, dict[str, list[float]]] = {m: {} for m in args.models}
    infos: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="emod-bench-") as tmp:
        workers = {}
        for model in args.models:
            folder = export(model, args.img_size, Path(tmp))
            cmd = [sys.executable, __file__, "--worker", "--model", model, "--model_dir", str(folder), "--img_size",
                   str(args.img_size), "--threads", str(args.threads), "--batches", *map(str, args.batches), "--modes", *args.modes]
            workers[model] = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True, env=env)
        for model, proc in workers.items():
            infos[model] = json.loads(proc.stdout.readline())
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for mode in args.modes:
                for batch in args.batches:
                    for model, proc in workers.items():
                        time.sleep(args.pause)
                        proc.stdin.write(f"{mode} {batch}\n")
                        proc.stdin.flush()
                        times[model].setdefault(f"{mode} {batch}", []).append(float(proc.stdout.readline()))
        load_after = os.getloadavg()
        for proc in workers.values():
            proc.stdin.close()
            proc.wait(timeout=60)

    settings = [f"{mode} {batch}" for mode in args.modes for batch in args.batches]
    median = {m: {s: statistics.median(times[m][s]) for s in settings} for m in args.models}
    print(f"CPU: {cpu_name()}, {args.threads} threads; {args.img_size} px; {args.rounds} interleaved rounds; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    head = "| model | params | GFLOPs | " + " | ".join(f"{s.replace('predictor', 'pred').replace('dygraph', 'dyg')} ms (img/s)"
                                                       for s in settings)
    print(head + " |")
    print("|" + " --- |" * (3 + len(settings)))
    for m in args.models:
        cells = [f"{median[m][s]:.0f} ({int(s.split()[1]) * 1000 / median[m][s]:.1f})" for s in settings]
        print(f"| {m} | {infos[m]['params'] / 1e6:.2f} M | {infos[m]['gflops']:.2f} | " + " | ".join(cells) + " |")
    if REFERENCE in args.models:
        print(f"\nspeed-up over {REFERENCE} in the same setting (median time ratio), and its FLOP ratio:")
        for m in args.models:
            if m == REFERENCE:
                continue
            ratios = "  ".join(f"{s}: {median[REFERENCE][s] / median[m][s]:.2f}x" for s in settings)
            print(f"  {m:20s} {ratios}  (FLOPs {infos[REFERENCE]['gflops'] / infos[m]['gflops']:.1f}x fewer)")
        if "efficientmod_xxs" in args.models and "predictor 1" in settings:
            ratio = median[REFERENCE]["predictor 1"] / median["efficientmod_xxs"]["predictor 1"]
            print(f"\ntarget: efficientmod_xxs + CSRA in the predictor at batch 1 >= 4x faster than {REFERENCE}: "
                  f"{ratio:.2f}x -> {'met' if ratio >= 4 else 'missed'}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads, "img_size": args.img_size,
                                         "info": infos, "times_ms": times}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
