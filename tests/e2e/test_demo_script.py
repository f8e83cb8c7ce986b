"""tools/demo.sh (what `make demo` runs) end to end, shrunk to a few images and one epoch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import REPO_ROOT


def test_demo_script_trains_tunes_plots_and_draws_heatmaps(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PY": sys.executable, "DEMO_DATA": str(tmp_path / "data"), "DEMO_OUT": str(out), "DEMO_IMAGES": "40",
           "DEMO_TEST_IMAGES": "10", "DEMO_VAL_IMAGES": "10", "DEMO_GEN_SIZE": "48", "DEMO_IMG_SIZE": "32", "DEMO_EPOCHS": "1",
           "DEMO_LR_STEP": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(["bash", "tools/demo.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for name in ("best.pdparams", "thresholds.json", "training_curves.png", "plots/pr_curves.png", "plots/ap_per_class.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "global threshold vs tuned per class" in result.stdout  # val.py compared the thresholds
    sheets = sorted((out / "heatmaps").glob("*__sheet.png"))
    assert len(sheets) == 5  # one per predicted sample image
    for sheet in sheets:
        with Image.open(sheet) as img:
            assert img.width >= 48
    assert "heatmaps:" in result.stdout and "total" in result.stdout
