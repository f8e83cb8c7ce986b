"""Check that a converted PyTorch CSRA checkpoint gives the same logits in Paddle.

Runs ``tools/torch_reference.py`` under a Python that has torch (``--torch_python``),
converts its checkpoint with ``tools/convert_torch_weights.py`` and compares the logits
of the Paddle model on the same input. torch is not a dependency of the project; this is a
verification tool for maintainers (results are quoted in docs/models.md).

    python tools/check_against_torch.py --torch_python /tmp/torchenv/bin/python --model resnet101 --num_heads 1
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cli.args import add_model_args, model_fields  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; returns 0 when the max relative difference is below --rtol."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch_python", required=True, help="a Python interpreter with torch installed")
    parser.add_argument("--img_size", type=int, default=448)
    parser.add_argument("--prefix", default="", help="key prefix written by the torch side, e.g. 'module.'")
    parser.add_argument("--rtol", type=float, default=1e-5)
    add_model_args(parser, num_cls_default=20, defaults_from=None)
    args = parser.parse_args(argv)
    model = model_fields(vars(args))  # unset model flags -> their defaults; args is not changed
    import numpy as np
    import paddle

    from models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        flags = ["--model", model["model"], "--num_heads", str(model["num_heads"]), "--lam", str(model["lam"]),
                 "--num_cls", str(args.num_cls)]
        subprocess.run([args.torch_python, str(ROOT / "tools/torch_reference.py"), *flags, "--img_size", str(args.img_size),
                        "--prefix", args.prefix, "--out", str(out)], check=True)
        subprocess.run([sys.executable, str(ROOT / "tools/convert_torch_weights.py"), "--src", str(out / "ckpt.pth"),
                        "--dst", str(out / "ckpt.pdparams"), *flags], check=True)
        net = build_model(model["model"], args.num_cls, model["num_heads"], model["lam"], pretrained=str(out / "ckpt.pdparams"))
        net.eval()
        with paddle.no_grad():
            got = net(paddle.to_tensor(np.load(out / "input.npy"))).numpy()
        want = np.load(out / "logits.npy")
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    print(f"{model['model']} heads={model['num_heads']} lam={model['lam']} size={args.img_size}: "
          f"max |paddle - torch| / max |torch| = {rel:.2e}")
    return 0 if rel < args.rtol else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
