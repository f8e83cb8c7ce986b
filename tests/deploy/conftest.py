"""Shared fixtures of the backend and int8 tests: a tiny trained-looking run, its images, its
predict.py output, and one export with model.onnx + model_int8.onnx (made once per session).

ResNet-18 + CSRA (5 classes) at 64 px with random weights saved like train.py saves them, so
export_model.py, predict.py and infer.py run exactly as on real checkpoints, in seconds.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ok, run_script  # noqa: F401  (ok: re-exported for the deploy tests)

CLASSES = ["cat", "dog", "bird", "car", "tree"]
ONNX_EXTRA = ("paddle2onnx", "onnx", "onnxruntime", "ml_dtypes")


def onnx_extra_installed() -> bool:
    """requirements-onnx.txt is installed (paddle2onnx, onnx, onnxruntime, ml_dtypes)."""
    return all(importlib.util.find_spec(m) is not None for m in ONNX_EXTRA)


def user_error(result, *needles: str) -> str:
    """Assert a clean refusal: exit status 2, one `error: ...` line naming ``needles``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]



def hide_modules(folder: Path, *names: str) -> dict[str, str]:
    """Environment for run_script in which ``names`` cannot be imported (a sitecustomize in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"sys.modules[{n!r}] = None  # find_spec -> None, import fails" for n in names]
    (folder / "sitecustomize.py").write_text("import sys\n" + "\n".join(lines) + "\n")
    return {"PYTHONPATH": str(folder)}


@pytest.fixture(scope="session")
def deploy_images(tmp_path_factory) -> Path:
    """6 JPEGs of different sizes (smooth patterns + noise)."""
    folder = tmp_path_factory.mktemp("deploy_imgs")
    rng = np.random.default_rng(1)
    for i in range(6):
        h, w = 44 + 7 * i, 80 - 5 * i
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * (2 + i), yy * (6 - i), (xx + yy) * 3], axis=-1) % 256
        Image.fromarray(np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)).save(folder / f"im_{i}.jpg")
    return folder


@pytest.fixture(scope="session")
def deploy_run(tmp_path_factory, deploy_images) -> dict:
    """A run folder (best.pdparams, classes.txt, config.json) and a threshold that splits its scores."""
    import paddle
    import paddle.nn.functional as F

    from datasets.image_io import load_rgb
    from datasets.transforms import preprocess
    from models import build_model

    run = tmp_path_factory.mktemp("deploy_run")
    paddle.seed(3)
    model = build_model("resnet18", len(CLASSES), 1, 0.1)
    model.eval()
    paddle.save(model.state_dict(), str(run / "best.pdparams"))
    (run / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (run / "config.json").write_text(json.dumps({"model": "resnet18", "num_heads": 1, "lam": 0.1, "attention": None,
                                                 "img_size": 64, "dataset": "demo"}))
    x = np.stack([preprocess(load_rgb(p), 64, (0, 0, 0), (1, 1, 1)) for p in sorted(deploy_images.iterdir())])
    with paddle.no_grad():
        scores = np.sort(F.sigmoid(model(paddle.to_tensor(x))).numpy().ravel())
    mid = len(scores) // 2
    k = max(range(mid - 3, mid + 4), key=lambda j: scores[j] - scores[j - 1])  # the widest gap near the median
    return {"dir": run, "weights": run / "best.pdparams", "threshold": round(float(scores[k - 1] + scores[k]) / 2, 6)}


@pytest.fixture(scope="session")
def predicted(deploy_run, deploy_images, tmp_path_factory) -> tuple[str, list[dict]]:
    """predict.py's stdout and JSON records for the run at its threshold (the reference of every backend)."""
    js = tmp_path_factory.mktemp("deploy_predict") / "predict.json"
    result = run_script("predict.py", "--load_from", str(deploy_run["weights"]), "--img_dir", str(deploy_images),
                        "--threshold", f"{deploy_run['threshold']}", "--output", str(js))
    ok(result)
    return result.stdout, json.loads(js.read_text())


@pytest.fixture(scope="session")
def quantized_export(deploy_run, deploy_images, tmp_path_factory) -> Path:
    """export_model.py --quantize int8 (writes model.onnx + model_int8.onnx), calibrated on the 6 images."""
    if not onnx_extra_installed():
        pytest.skip("requirements-onnx.txt is not installed")
    save = tmp_path_factory.mktemp("deploy_exports") / "q"
    result = run_script("export_model.py", "--model_path", str(deploy_run["weights"]), "--save_dir", str(save),
                        "--threshold", f"{deploy_run['threshold']}", "--quantize", "int8", "--calib_dir", str(deploy_images),
                        "--calib_images", "4")
    ok(result)
    return save


@pytest.fixture(scope="session")
def fp32_export(quantized_export, tmp_path_factory) -> Path:
    """A copy of the export without any ONNX file, its yml naming none (as a plain export_model.py run writes it)."""
    import shutil

    from deploy.inference_config import DeployConfig

    save = tmp_path_factory.mktemp("deploy_exports_fp32") / "plain"
    save.mkdir()
    for name in ("inference.json", "inference.pdiparams"):
        shutil.copy(quantized_export / name, save / name)
    cfg = DeployConfig.load(quantized_export / "inference.yml")
    cfg.onnx_file, cfg.int8 = None, None
    cfg.save(save / "inference.yml")
    return save
