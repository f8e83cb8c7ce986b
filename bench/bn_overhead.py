"""Cost of the reference BatchNorm update (unbiased running variance) in a training step.

Run from the repository root::

    .venv/bin/python bench/bn_overhead.py [--settings resnet18:64:8 resnet50:224:8] [--repeats 7]

For each ``model:img_size:batch`` setting it builds the CSRA model twice from the same
weights: once as the project builds it (``models.norm.BatchNorm2D``, PyTorch's running
statistics) and once with every BatchNorm switched back to ``paddle.nn.BatchNorm2D``
(Paddle's biased update). It times one training step of each (forward, BCE-with-logits,
backward, SGD momentum step) alternately on the same random batch, after two warm-up steps,
and prints the median times, the overhead in percent and the CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from utils.threads import configure_threads  # noqa: E402

configure_threads()

from bench.load_speed import cpu_name  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The bench's arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["resnet18:64:8", "resnet50:224:8"],
                        help="model:img_size:batch settings (default resnet18:64:8 resnet50:224:8)")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per variant (default 7)")
    return parser


def _time_setting(name: str, size: int, batch: int, repeats: int) -> tuple[float, float]:
    """Median step time in ms of (reference BatchNorm, Paddle BatchNorm) for one setting."""
    import paddle

    from engine.trainer import train_step
    from models import build_model
    from models.norm import BatchNorm2D

    paddle.seed(0)
    variants = {}
    for kind in ("reference", "paddle"):
        model = build_model(name, 20, img_size=size)
        if kind == "paddle":
            for layer in model.sublayers():
                if isinstance(layer, BatchNorm2D):
                    layer.__class__ = paddle.nn.BatchNorm2D
        model.train()
        scheduler = paddle.optimizer.lr.StepDecay(0.01, 1000)
        optimizer = paddle.optimizer.Momentum(learning_rate=scheduler, momentum=0.9, parameters=model.parameters())
        variants[kind] = (model, optimizer, scheduler)
    images = paddle.rand([batch, 3, size, size])
    targets = (paddle.rand([batch, 20]) > 0.8).astype("float32")
    times: dict[str, list[float]] = {kind: [] for kind in variants}
    for step in range(repeats + 2):
        for kind, (model, optimizer, scheduler) in variants.items():
            start = time.perf_counter()
            train_step(model, optimizer, scheduler, images, targets)
            if step >= 2:
                times[kind].append(time.perf_counter() - start)
    return statistics.median(times["reference"]) * 1e3, statistics.median(times["paddle"]) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Time every setting; prints one line each."""
    args = build_parser().parse_args(argv)
    print(f"CPU: {cpu_name()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, median of {args.repeats} steps")
    for setting in args.settings:
        name, size, batch = setting.split(":")
        ours, plain = _time_setting(name, int(size), int(batch), args.repeats)
        print(f"{name} @ {size} px, batch {batch}: reference BN {ours:8.1f} ms | Paddle BN {plain:8.1f} ms | "
              f"overhead {100 * (ours / plain - 1):+.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
