"""The reference recipe's training step in PyTorch eager mode, timed (run by a Python that has torch).

    /path/to/torch-python bench/torch_reference_step.py --model resnet18 --img_size 64 --batch 8 --iters 5

Builds the reference model as ``tools/torch_reference.py`` states it in PyTorch (torchvision-layout
ResNet + one CSRA head, lam 0.1, 20 classes) and times the reference step: BCE-with-logits (mean over B x C),
backward, SGD (momentum 0.9, weight decay 1e-4, the classifier at 10x the backbone lr),
``zero_grad``. ``--keep_freed_memory`` applies the project's ``utils.memory.retain_freed_memory``
(glibc keeps freed pages) to PyTorch too, for a like-for-like comparison. Prints one JSON
line: ``{"model", "img_size", "batch", "threads", "step_s": [...]}`` (every timed step, warm-up
step excluded). It imports only the torch-only ``tools.torch_reference`` (and the ctypes-only
``utils.memory``) from the project, so it runs in a Python that has torch and NumPy;
``bench/train_speed.py --torch_python PY`` calls it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
except ModuleNotFoundError:  # torch is not a project dependency: this file runs under another Python
    print("error: bench/torch_reference_step.py needs PyTorch, which this Python does not have; let "
          "bench/train_speed.py --torch_python /path/to/torchenv/bin/python run it", file=sys.stderr)
    sys.exit(2)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools.torch_reference import SPECS, Net  # noqa: E402  (the reference model in PyTorch; torch-only imports)
from utils.memory import retain_freed_memory  # noqa: E402  (ctypes only)

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=[f"resnet{d}" for d in SPECS], default="resnet18")
    parser.add_argument("--img_size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--keep_freed_memory", action="store_true",
                        help="keep freed heap pages in the process, as the project's Trainer does (utils.memory)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        retain_freed_memory()
    torch.manual_seed(0)
    model = Net(int(args.model.removeprefix("resnet")), 1, 0.1, 20).train()
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    backbone = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    opt = torch.optim.SGD([{"params": backbone, "lr": 0.01}, {"params": head, "lr": 0.1}], lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.rand(args.batch, 3, args.img_size, args.img_size)
    y = (torch.rand(args.batch, 20) > 0.8).float()
    times = []
    for i in range(args.iters + 1):
        t0 = time.perf_counter()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())
        if i:
            times.append(time.perf_counter() - t0)
    print(json.dumps({"model": args.model, "img_size": args.img_size, "batch": args.batch,
                      "threads": torch.get_num_threads(), "step_s": times}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
