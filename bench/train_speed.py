"""Training throughput vs data-loading throughput on this machine.

Prints, side by side:
- training images/s (forward + backward + SGD step, dygraph) for ResNet-101 + CSRA at 448
  and ResNet-18 + CSRA at 224 (and at 64, the demo's setting);
- data-loader images/s with the training transforms (JPEG decode, flip, RandomResizedCrop,
  resize, scaling) at the same sizes, for 0, 1 and 2 workers, on VOC-sized (500x375) JPEGs.
If the loader rate is far above the training rate, training is compute-bound.

    OMP_NUM_THREADS=2 python bench/train_speed.py [--iters 3]
"""
from __future__ import annotations

import argparse
import os
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
from engine.trainer import build_optimizer, train_step  # noqa: E402


def train_rate(model_name: str, img_size: int, batch: int, iters: int) -> float:
    """Median training images/s over ``iters`` steps (after one warm-up step)."""
    paddle.seed(0)
    model = build_model(model_name, 20)
    model.train()
    opt, sched = build_optimizer(model, 0.01, 0.9, 1e-4, 100, 0, 4)
    x = paddle.rand([batch, 3, img_size, img_size])
    y = paddle.cast(paddle.rand([batch, 20]) > 0.8, "float32")
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter()
        loss = train_step(model, opt, sched, x, y)  # the Trainer's step
        float(loss)
        if i:
            times.append(time.perf_counter() - t0)
    return batch / float(np.median(times))


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
    args = parser.parse_args()
    settings = [("resnet101", 448, 4), ("resnet18", 224, 16), ("resnet18", 64, 8)]  # the last: make demo
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        summary = generate_demo(root, num_images=176, seed=0, img_size=375, test_images=16)  # 160 to load
        prepare_voc(str(root / "VOCdevkit"), str(root), classes_file=str(summary["classes_file"]))
        train_json = root / "trainval_voc07.json"
        print(f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} cores, paddle {paddle.__version__}")
        print(f"{'setting':<22}{'batch':>6}{'train img/s':>13}{'loader 0w':>11}{'loader 1w':>11}{'loader 2w':>11}")
        for name, size, batch in settings:
            rate = train_rate(name, size, batch, args.iters)
            loads = [loader_rate(train_json, size, batch, w, args.loader_batches) for w in (0, 1, 2)]
            print(f"{name + ' @ ' + str(size):<22}{batch:>6}{rate:>13.2f}" + "".join(f"{r:>11.1f}" for r in loads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
