"""The reference model's inference in PyTorch eager mode, timed on request (run by a Python that has torch).

    /path/to/torch-python bench/torch_reference_infer.py --model resnet101 --img_size 448 --batch 1 --threads 2

Builds the reference model as ``tools/torch_reference.py`` states it (torchvision-layout ResNet +
CSRA heads, random weights, eval mode) and then serves timing requests so that
``bench/infer_speed.py --torch_python PY`` can interleave it with its own variants: every line
``run`` on stdin runs one forward pass under ``torch.inference_mode()`` (sigmoid included, like
the exported program) and answers one JSON line ``{"ms": ...}``; ``quit`` or end of input stops.
The first line printed is ``{"ready": true, "threads": N, "torch": version}``.

The helper keeps freed heap memory the way the project's predictor does
(``utils.memory.retain_freed_memory``): otherwise every request after an idle gap pays for
page-faulting its activations in again (about twice the steady-state time here), and the
interleaved comparison would be unfair to PyTorch.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import torch
except ModuleNotFoundError:  # torch is not a project dependency: this file runs under another Python
    print("error: bench/torch_reference_infer.py needs PyTorch, which this Python does not have; let "
          "bench/infer_speed.py --torch_python /path/to/torchenv/bin/python run it", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.torch_reference import SPECS, Net  # noqa: E402  (the reference model in PyTorch; torch-only imports)
from utils.memory import retain_freed_memory  # noqa: E402  (ctypes only)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[f"resnet{d}" for d in SPECS], default="resnet101")
    parser.add_argument("--num_heads", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--num_cls", type=int, default=20)
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retain_freed_memory()
    torch.manual_seed(0)
    model = Net(int(args.model.removeprefix("resnet")), args.num_heads, args.lam, args.num_cls).eval()
    x = torch.rand(args.batch, 3, args.img_size, args.img_size)
    with torch.inference_mode():
        torch.sigmoid(model(x))  # warm-up
    print(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        with torch.inference_mode():
            t0 = time.perf_counter()
            torch.sigmoid(model(x)).numpy()
            ms = 1000 * (time.perf_counter() - t0)
        print(json.dumps({"ms": ms}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
