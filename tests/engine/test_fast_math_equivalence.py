"""The faster CPU path (MKL's AVX2 kernels on AMD, ``utils.cpu_math``) trains the same model.

Two processes take the same reference-recipe step from the same seed, one with MKL's own kernel
choice (``MKL_DEBUG_CPU_TYPE`` set empty: the project leaves it alone) and one with the AVX2 path
(``5``); the weight updates and BatchNorm statistics must agree to float32 rounding. (Over many
steps two float32 runs drift apart the way any two summation orders do; one step shows whether
the kernels compute the same thing.) On a CPU
where MKL already picks AVX2 both runs take the same path and agree exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

STEPS = r"""
import sys
import numpy as np
import paddle
from models import build_model
from engine.trainer import build_optimizer, train_step
paddle.seed(0)
model = build_model("resnet18", 5, img_size=32)
model.train()
opt, sched = build_optimizer(model, 0.05, 0.9, 1e-4, 10, 0, 4)
init = {k: v.numpy().copy() for k, v in model.state_dict().items()}
rng = np.random.default_rng(0)
for _ in range(int(sys.argv[2])):
    x = paddle.to_tensor(rng.random((4, 3, 32, 32), dtype=np.float32))
    y = paddle.to_tensor((rng.random((4, 5)) > 0.6).astype(np.float32))
    train_step(model, opt, sched, x, y)
np.savez(sys.argv[1], **{k: v.numpy() - init[k] for k, v in model.state_dict().items()})
"""


def _train(tmp_path: Path, mkl_cpu_type: str, steps: int) -> dict[str, np.ndarray]:
    out = tmp_path / f"weights_{mkl_cpu_type or 'default'}_{steps}.npz"
    env = {**os.environ, "MKL_DEBUG_CPU_TYPE": mkl_cpu_type, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", STEPS, str(out), str(steps)], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def test_avx2_mkl_path_gives_the_same_update_as_mkls_default(tmp_path: Path) -> None:
    default, fast = _train(tmp_path, "", 1), _train(tmp_path, "5", 1)  # change of every weight and statistic
    assert default.keys() == fast.keys() and len(default) > 50
    for name, change in default.items():
        scale = float(np.abs(change).max())
        np.testing.assert_allclose(fast[name], change, rtol=0, atol=max(1e-3 * scale, 1e-9), err_msg=name)
    assert float(np.abs(default["conv1.weight"]).max()) > 1e-4  # the step did move the weights
