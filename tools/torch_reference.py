"""PyTorch side of the equivalence check (needs torch; not imported by the project).

A plain PyTorch re-statement of the reference model (torchvision-layout ResNet + CSRA heads
as the reference code builds it), random weights with non-trivial BN statistics.
Writes ``ckpt.pth`` (torch.save, zip format), ``input.npy`` and ``logits.npy`` into --out.

    /path/to/torch/python tools/torch_reference.py --model resnet50 --num_heads 4 --lam 0.5 --num_cls 20 --out /tmp/ref
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import torch
    from torch import nn
except ModuleNotFoundError:  # torch is not a project dependency: this file runs under another Python
    if __name__ != "__main__":
        raise
    print("error: tools/torch_reference.py needs PyTorch, which this Python does not have; run it with an "
          "interpreter that has torch, e.g. /path/to/torchenv/bin/python tools/torch_reference.py --out /tmp/ref "
          "(or let tools/check_against_torch.py --torch_python /path/to/torchenv/bin/python run it)", file=sys.stderr)
    sys.exit(2)

SPECS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
         101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}
TEMPS = {1: [1], 2: [1, 99], 4: [1, 2, 4, 99], 6: [1, 2, 3, 4, 5, 99], 8: [1, 2, 3, 4, 5, 6, 7, 99]}


class Block(nn.Module):
    def __init__(self, kind: str, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.kind = kind
        cout = planes * (4 if kind == "bottleneck" else 1)
        if kind == "basic":
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.kind == "basic":
            out = self.bn2(self.conv2(out))
        else:
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        return self.relu(out + idt)


class Head(nn.Module):
    def __init__(self, d: int, c: int, t: int, lam: float) -> None:
        super().__init__()
        self.t, self.lam = t, lam
        self.head = nn.Conv2d(d, c, 1, bias=False)

    def forward(self, x):
        score = self.head(x) / torch.norm(self.head.weight, dim=1, keepdim=True).transpose(0, 1)
        score = score.flatten(2)
        base = score.mean(dim=2)
        att = score.max(dim=2)[0] if self.t == 99 else (score * torch.softmax(score * self.t, dim=2)).sum(dim=2)
        return base + self.lam * att


class MHA(nn.Module):
    def __init__(self, heads: int, lam: float, d: int, c: int) -> None:
        super().__init__()
        self.multi_head = nn.ModuleList([Head(d, c, t, lam) for t in TEMPS[heads]])

    def forward(self, x):
        return sum(h(x) for h in self.multi_head)


class Net(nn.Module):
    def __init__(self, depth: int, heads: int, lam: float, c: int) -> None:
        super().__init__()
        kind, layers = SPECS[depth]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(Block(kind, cin, planes, (1 if i == 0 else 2) if j == 0 else 1))
                cin = planes * (4 if kind == "bottleneck" else 1)
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.classifier = MHA(heads, lam, cin, c)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(x)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet101")
    p.add_argument("--num_heads", type=int, default=1)
    p.add_argument("--lam", type=float, default=0.1)
    p.add_argument("--num_cls", type=int, default=20)
    p.add_argument("--img_size", type=int, default=448)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--prefix", default="", help="e.g. 'module.' to imitate a DataParallel checkpoint")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    net = Net(int(a.model.replace("resnet", "")), a.num_heads, a.lam, a.num_cls)
    with torch.no_grad():  # non-trivial BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.1, 0.1)
    net.eval()
    a.out.mkdir(parents=True, exist_ok=True)
    x = torch.rand(a.batch, 3, a.img_size, a.img_size)
    with torch.no_grad():
        logits = net(x)
    torch.save({a.prefix + k: v for k, v in net.state_dict().items()}, a.out / "ckpt.pth")
    np.save(a.out / "input.npy", x.numpy())
    np.save(a.out / "logits.npy", logits.numpy())
    print(f"torch {torch.__version__}: wrote {a.out}/ckpt.pth, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
