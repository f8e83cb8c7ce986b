"""Shared pytest setup: make the repository root importable; shared fixtures."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest workers on two cores: one thread each (and in the scripts
    # they start), instead of two OpenMP teams per core spinning against each other.
    os.environ["OMP_NUM_THREADS"] = "1"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


# Fixtures that build something expensive (a training run, an export, the TIPC chain), and the
# xdist group of the tests that use them: under `make test` (--dist loadgroup) a group runs on one
# worker, so each is built once instead of once per worker. The first fixture a test uses decides.
SHARED_FIXTURE_GROUPS: dict[str, str] = {
    "lite_chain": "tipc_lite_chain",
    "recipe_runs": "recipe_runs",
    "vit_run": "vit_run",
    "ema_run": "ema_run",
    "exports": "export_infer", "runs": "export_infer", "attention_run": "export_infer",
    "quantized_export": "deploy_export", "fp32_export": "deploy_export", "deploy_run": "deploy_export",
    "two_epochs": "two_epochs",
}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the marks
def pytest_collection_modifyitems(config, items) -> None:
    """Mark every test that uses a fixture of ``SHARED_FIXTURE_GROUPS`` with that fixture's xdist group."""
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            group = SHARED_FIXTURE_GROUPS.get(name)
            if group:
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


def ok(result) -> None:
    """Assert that a script run (``run_script``'s CompletedProcess) succeeded: exit 0, no traceback."""
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def run_script(*args: str, cwd: Path = REPO_ROOT, timeout: float = 600, env: dict | None = None):
    """Run ``python <args>`` from the repository root; returns the CompletedProcess (text)."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> dict:
    """A 40-image demo dataset at 64 px, prepared: {'root', 'train', 'test', 'classes', 'images'}."""
    from datasets.make_demo import generate_demo
    from datasets.prepare.voc import prepare_voc

    root = tmp_path_factory.mktemp("tiny_demo")
    summary = generate_demo(root, num_images=40, seed=0, img_size=64)
    prepare_voc(str(root / "VOCdevkit"), str(root), classes_file=str(summary["classes_file"]))
    return {
        "root": root,
        "train": root / "trainval_voc07.json",
        "test": root / "test_voc07.json",
        "classes": root / "classes.txt",
        "images": Path(summary["voc_root"]) / "JPEGImages",
    }


def train_flags(demo: dict, save_dir: Path, epochs: int, *extra: str) -> list[str]:
    """train.py arguments for a resnet18 run at 64 px on the tiny demo data."""
    return [
        "train.py", "--dataset", "demo", "--train_json", str(demo["train"]), "--test_json", str(demo["test"]),
        "--model", "resnet18", "--img_size", "64", "--batch_size", "8", "--warmup_epoch", "1",
        "--total_epoch", str(epochs), "--save_dir", str(save_dir), "--print_freq", "1", *extra,
    ]


@pytest.fixture(scope="session")
def two_epochs(tiny_demo, tmp_path_factory) -> tuple:
    """A finished 2-epoch training run: (save_dir, CompletedProcess)."""
    save = tmp_path_factory.mktemp("run") / "two"
    result = run_script(*train_flags(tiny_demo, save, 2))
    assert result.returncode == 0, result.stderr[-3000:]
    return save, result


