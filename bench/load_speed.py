"""Checkpoint loading speed: the safe reader against ``paddle.load``, side by side.

Run from the repository root::

    .venv/bin/python bench/load_speed.py [--model resnet101] [--classes 20] [--repeats 7]

Saves the state dict of a CSRA model (ResNet-101, 20 classes by default: the VOC model,
about 170 MB) with ``paddle.save`` into a temporary folder, then loads it alternately with
``paddle.load`` and ``utils.paddle_io.load_paddle``, both with tensors and with
``return_numpy``, and prints the median time of each, their ratio, and the CPU it ran on.
The file is read once before timing so that both readers find it in the page cache.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from utils.errors import run_cli  # noqa: E402
from utils.cpu_math import cpu_model_name as cpu_name  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The bench's arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet101", help="backbone of the saved CSRA model (default resnet101)")
    parser.add_argument("--classes", type=int, default=20, help="classes of the head (default 20)")
    parser.add_argument("--repeats", type=int, default=7, help="loads per reader and mode (default 7)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Time both readers; prints one line per mode and the ratios."""
    args = build_parser().parse_args(argv)
    import paddle

    from models import build_model
    from utils.paddle_io import load_paddle

    model = build_model(args.model, num_classes=args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pdparams"
        paddle.save(model.state_dict(), str(path))
        size_mb = path.stat().st_size / 1e6
        path.read_bytes()
        print(f"{args.model} + CSRA ({args.classes} classes): {size_mb:.1f} MB checkpoint; CPU: {cpu_name()}")
        for return_numpy in (False, True):
            readers = {
                "paddle.load": lambda: paddle.load(str(path), return_numpy=return_numpy),
                "safe reader": lambda: load_paddle(path, return_numpy=return_numpy),
            }
            times: dict[str, list[float]] = {name: [] for name in readers}
            for _ in range(args.repeats):
                for name, read in readers.items():  # interleaved, so both see the same machine load
                    start = time.perf_counter()
                    read()
                    times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            mode = "numpy arrays" if return_numpy else "paddle tensors"
            print(f"{mode:>15}: paddle.load {medians['paddle.load']:7.1f} ms | safe reader {medians['safe reader']:7.1f} ms"
                  f" | ratio {medians['safe reader'] / medians['paddle.load']:.2f}x (median of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
