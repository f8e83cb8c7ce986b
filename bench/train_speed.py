"""Training throughput vs data-loading throughput, and against the PyTorch reference step.

Prints, side by side:
- training images/s (forward + backward + SGD step, dygraph) for ResNet-101 + CSRA at 448
  and ResNet-18 + CSRA at 224 (and at 64, the demo's setting);
- data-loader images/s with the training transforms (JPEG decode, flip, RandomResizedCrop,
  resize, scaling) at the same sizes, for 0, 1 and 2 workers, on VOC-sized (500x375) JPEGs.
If the loader rate is far above the training rate, training is compute-bound.

With ``--torch_python PY`` (a Python that has torch; torch is not a requirement of this
project) it instead times one training step of this project (dygraph, the Trainer's
``train_step``) and of the reference recipe in PyTorch eager mode
(``bench/torch_reference_step.py``) for ResNet-18 @ 64 px batch 8, ResNet-50 @ 224 px batch 8
and ResNet-101 @ 448 px batch 2, alternating the two frameworks round by round so that both
see the same machine load, and prints the medians and their ratio.

    OMP_NUM_THREADS=2 python bench/train_speed.py [--iters 3]
    OMP_NUM_THREADS=2 python bench/train_speed.py --torch_python /path/to/venv/bin/python [--rounds 3 --iters 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from datasets.dataset import MultiLabelDataset  # noqa: E402
from datasets.loader import make_loader  # noqa: E402
from datasets.make_demo import generate_demo  # noqa: E402
from datasets.prepare.voc import prepare_voc  # noqa: E402
from datasets.transforms import TrainTransform  # noqa: E402
from models import build_model  # noqa: E402
from engine.config import DEFAULT_GEMM_CONV_SIDE  # noqa: E402
from engine.gemm_conv import use_gemm_convs  # noqa: E402
from engine.trainer import build_optimizer, train_step  # noqa: E402
from utils.cpu_math import cpu_model_name as cpu_name  # noqa: E402
from utils.memory import retain_freed_memory  # noqa: E402


COMPARED = [("resnet18", 64, 8), ("resnet50", 224, 8), ("resnet101", 448, 2)]
"""The settings timed against PyTorch: (model, image size, batch)."""


class PaddleStep:
    """This project's training step on a fixed random batch (20 classes, the reference recipe);
    ``gemm_conv_side`` > 0: small-map convolutions as one GEMM, as the Trainer runs them on the CPU."""

    def __init__(self, model_name: str, img_size: int, batch: int, gemm_conv_side: int = DEFAULT_GEMM_CONV_SIDE) -> None:
        retain_freed_memory()  # as the Trainer does
        paddle.seed(0)
        self.model = build_model(model_name, 20)
        use_gemm_convs(self.model, gemm_conv_side)
        self.model.train()
        self.opt, self.sched = build_optimizer(self.model, 0.01, 0.9, 1e-4, 100, 0, 4)
        self.x = paddle.rand([batch, 3, img_size, img_size])
        self.y = paddle.cast(paddle.rand([batch, 20]) > 0.8, "float32")

    def time_steps(self, iters: int) -> list[float]:
        """Seconds of each of ``iters`` steps (forward, BCE, backward, SGD update, loss read back)."""
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            float(train_step(self.model, self.opt, self.sched, self.x, self.y))  # the Trainer's step
            times.append(time.perf_counter() - t0)
        return times


def train_rate(model_name: str, img_size: int, batch: int, iters: int, gemm_conv_side: int = DEFAULT_GEMM_CONV_SIDE) -> float:
    """Median training images/s over ``iters`` steps (after one warm-up step)."""
    step = PaddleStep(model_name, img_size, batch, gemm_conv_side)
    step.time_steps(1)
    return batch / float(np.median(step.time_steps(iters)))


def torch_steps(torch_python: str, model_name: str, img_size: int, batch: int, iters: int, keep_memory: bool = False) -> list[float]:
    """Seconds of ``iters`` reference steps in PyTorch eager mode (a warm-up step excluded), in a subprocess;
    ``keep_memory``: with glibc keeping freed pages, as this project's Trainer runs."""
    script = Path(__file__).with_name("torch_reference_step.py")
    cmd = [torch_python, str(script), "--model", model_name, "--img_size", str(img_size), "--batch", str(batch), "--iters", str(iters)]
    cmd += ["--keep_freed_memory"] if keep_memory else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy()).stdout
    return json.loads(out.strip().splitlines()[-1])["step_s"]


def compare_with_torch(torch_python: str, rounds: int, iters: int, gemm_conv_side: int) -> None:
    """Print PyTorch's median step time per setting of ``COMPARED`` next to this project's, with the
    plain convolutions and with the Trainer's small-map GEMM convolutions, alternating round by round.
    PyTorch runs as is ("torch") and with freed heap pages kept as the Trainer keeps them ("torch kept")."""
    print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} cores, paddle {paddle.__version__}, "
          f"MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset')}, {cpu_name()}, gemm_conv_side {gemm_conv_side}")
    print(f"{'setting':<20}{'batch':>6}{'plain s/step':>14}{'trainer s/step':>16}{'torch s/step':>14}{'torch kept':>12}"
          f"{'torch/plain':>13}{'torch/trainer':>15}{'kept/trainer':>14}")
    for name, size, batch in COMPARED:
        steps = {"plain": PaddleStep(name, size, batch, 0), "trainer": PaddleStep(name, size, batch, gemm_conv_side)}
        times: dict[str, list[float]] = {key: [] for key in (*steps, "torch", "torch kept")}
        for step in steps.values():
            step.time_steps(1)
        for _ in range(rounds):
            for key, step in steps.items():
                times[key] += step.time_steps(iters)
            times["torch"] += torch_steps(torch_python, name, size, batch, iters)
            times["torch kept"] += torch_steps(torch_python, name, size, batch, iters, keep_memory=True)
        p, g, t, k = (float(np.median(times[key])) for key in ("plain", "trainer", "torch", "torch kept"))
        print(f"{name + ' @ ' + str(size):<20}{batch:>6}{p:>14.3f}{g:>16.3f}{t:>14.3f}{k:>12.3f}{t / p:>12.2f}x{t / g:>14.2f}x"
              f"{k / g:>13.2f}x", flush=True)
        del steps


def loader_rate(json_path: Path, img_size: int, batch: int, workers: int, batches: int) -> float:
    """Images/s delivered by the training DataLoader (first batch excluded: worker start-up)."""
    ds = MultiLabelDataset(json_path, TrainTransform(img_size), seed=0)
    loader = make_loader(ds, batch, shuffle=True, num_workers=workers, seed=0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        images, _ = next(it)
        n += int(images.shape[0])
    rate = n / (time.perf_counter() - t0)
    del it  # stop the workers now: they would keep prefetching from a folder about to be deleted
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3, help="timed training steps per setting")
    parser.add_argument("--loader_batches", type=int, default=6, help="timed loader batches per setting")
    parser.add_argument("--torch_python", default=None, help="a Python with torch: time the PyTorch reference step side by side")
    parser.add_argument("--rounds", type=int, default=3, help="with --torch_python: alternating rounds of --iters steps each")
    parser.add_argument("--gemm_conv_side", type=int, default=DEFAULT_GEMM_CONV_SIDE,
                        help="the Trainer's small-map GEMM convolutions up to this map side, 0: plain (default: train.py's)")
    args = parser.parse_args()
    if args.torch_python:
        compare_with_torch(args.torch_python, args.rounds, args.iters, args.gemm_conv_side)
        return 0
    settings = [("resnet101", 448, 4), ("resnet18", 224, 16), ("resnet18", 64, 8)]  # the last: make demo
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = generate_demo(root, num_images=176, seed=0, img_size=375, test_images=16)  # 160 to load
        prepare_voc(str(root / "VOCdevkit"), str(root), classes_file=str(summary["classes_file"]))
        train_json = root / "trainval_voc07.json"
        print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} cores, paddle {paddle.__version__}")
        print(f"{'setting':<22}{'batch':>6}{'train img/s':>13}{'loader 0w':>11}{'loader 1w':>11}{'loader 2w':>11}")
        for name, size, batch in settings:
            rate = train_rate(name, size, batch, args.iters, args.gemm_conv_side)
            loads = [loader_rate(train_json, size, batch, w, args.loader_batches) for w in (0, 1, 2)]
            print(f"{name + ' @ ' + str(size):<22}{batch:>6}{rate:>13.2f}" + "".join(f"{r:>11.1f}" for r in loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
