"""bench/attention_overhead.py end to end on a tiny setting (ResNet-18 at 64 px, one block)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_attention_overhead_bench_runs_every_model_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(ROOT / "bench" / "attention_overhead.py"), "--model", "resnet18", "--sizes", "64",
           "--batches", "1", "--modes", "predictor,dygraph", "--blocks", "ab", "--iters", "2", "--warmup", "0",
           "--pause", "0", "--replicas", "2", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert table[0].split(" | ")[:4] == ["| block", "params", "GMACs@64", "pred 64 b1"]
    assert table[1].startswith("| none | 11.19 M |") and table[2].startswith("| ab | +1,920 |")
    results = json.loads(out.read_text())
    for mode in ("predictor", "dygraph"):
        runs = results["runs_ms"][f"ab|{mode}|64|1"]
        assert len(runs) == 2 and all(len(r) == 2 and min(r) > 0 for r in runs)  # 2 processes x 2 runs
        assert len(results["runs_ms"][f"none|{mode}|64|1"]) == 2
        assert results["ms"][f"ab|{mode}|64|1"] > 0 and results["ms"][f"none-for-ab|{mode}|64|1"] > 0
    assert results["params"]["ab@64"] - results["params"]["none@64"] == 1920  # AB: one weight per channel
