"""``utils.quiet``: Paddle's known-harmless noise is silenced at its source, real warnings are kept."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO_ROOT

NOISE = ("No ccache found", "PLEASE USE OMP_NUM_THREADS WISELY", "OMP_NUM_THREADS set to", "Skip loading for",
         "we now always track global mean and variance", "not support input out tensor", "ReduceMeanCheckIfOneDNNSupport")

PROGRAM = r'''
import os, warnings
from utils.quiet import ONEDNN_REDUCE_MEAN, PIR_OUT_TENSOR, filtered_fd, quiet_paddle
paddle = quiet_paddle()
from models.spec import ModelSettings
from models.weights import load_state
model = ModelSettings("resnet18", 3, img_size=32).build()
model.train()
model(paddle.rand([2, 3, 32, 32]))  # BatchNorm in training mode
load_state(model, {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}, "backbone-only")
with filtered_fd(1, ONEDNN_REDUCE_MEAN, to_fd=2):
    os.write(1, b"ReduceMeanCheckIfOneDNNSupport\nC++ stdout that is kept\n")
with filtered_fd(2, PIR_OUT_TENSOR):
    os.write(2, b"W1129 eager_utils.cc:3584] Paddle static graph(PIR) not support input out tensor for now!!!!!\nC++ stderr that is kept\n")
warnings.warn("a real warning is still shown", UserWarning)
print("stdout line")
'''


def test_known_noise_is_silenced_and_the_rest_kept() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # > 1 makes Paddle print its OMP notice at import
    proc = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for noise in NOISE:
        assert noise not in proc.stderr and noise not in proc.stdout, (noise, proc.stderr[-3000:])
    assert proc.stdout == "stdout line\n"
    assert "C++ stdout that is kept" in proc.stderr and "C++ stderr that is kept" in proc.stderr
    assert "UserWarning: a real warning is still shown" in proc.stderr


def test_without_quiet_paddle_the_noise_is_there() -> None:
    """The filters matter: the same program without them shows Paddle's notices (else the test above proves nothing)."""
    program = PROGRAM.replace("paddle = quiet_paddle()", "import paddle")
    proc = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PLEASE USE OMP_NUM_THREADS WISELY" in proc.stderr and "Skip loading for" in proc.stderr
