"""Dygraph speed and memory of a CSRA model on this CPU.

Default: ResNet-101 + CSRA (1 head) at 448, batch 1 and 8, forward (eval, no grad) and
forward+backward (train mode, BCE loss), images/s and peak RSS, plus the CSRA head's share
of the forward time. Every setting runs in its own process so peak memory is its own.
``OMP_NUM_THREADS`` is honoured (Paddle would otherwise force 1 thread); set it before
running, e.g. ``OMP_NUM_THREADS=2 python bench/model_speed.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> dict:
    import resource

    sys.path.insert(0, str(ROOT))
    import numpy as np
    import paddle

    from models import build_model

    paddle.seed(0)
    model = build_model(args.model, args.num_cls, args.num_heads, args.lam)
    x = paddle.rand([args.batch, 3, args.img_size, args.img_size])
    target = paddle.cast(paddle.rand([args.batch, args.num_cls]) > 0.8, "float32")
    times, head_times = [], []
    if args.mode == "forward":
        model.eval()
        with paddle.no_grad():
            for i in range(args.warmup + args.iters):
                t0 = time.perf_counter()
                feats = model.forward_features(x)
                feats.numpy()
                t1 = time.perf_counter()
                model.classifier(feats).numpy()
                t2 = time.perf_counter()
                if i >= args.warmup:
                    times.append(t2 - t0)
                    head_times.append(t2 - t1)
    else:
        model.train()
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            loss = paddle.nn.functional.binary_cross_entropy_with_logits(model(x), target)
            loss.backward()
            model.clear_gradients()
            float(loss)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {
        "mode": args.mode,
        "batch": args.batch,
        "ms_per_batch": sec * 1000,
        "images_per_s": args.batch / sec,
        "head_share": float(np.median(head_times)) / sec if head_times else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": os.environ.get("OMP_NUM_THREADS", "1 (Paddle's default)"),
    }


def main() -> int:
    """Run every (mode, batch) setting in a subprocess and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet101")
    parser.add_argument("--num_heads", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--num_cls", type=int, default=20)
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="forward", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return 0
    print(f"{args.model} + CSRA ({args.num_heads} head(s)) at {args.img_size}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset (Paddle uses 1)')}, {os.cpu_count()} cores")
    print(f"{'mode':<16}{'batch':>6}{'ms/batch':>12}{'images/s':>10}{'peak RSS MB':>13}{'head share':>12}")
    for mode in args.modes:
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--worker", "--mode", mode, "--batch", str(batch), "--model", args.model,
                   "--num_heads", str(args.num_heads), "--lam", str(args.lam), "--num_cls", str(args.num_cls),
                   "--img_size", str(args.img_size), "--iters", str(args.iters), "--warmup", str(args.warmup)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            share = f"{100 * r['head_share']:.2f} %" if r["head_share"] is not None else "-"
            label = "forward" if mode == "forward" else "forward+backward"
            print(f"{label:<16}{batch:>6}{r['ms_per_batch']:>12.0f}{r['images_per_s']:>10.2f}{r['peak_rss_mb']:>13.0f}{share:>12}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
