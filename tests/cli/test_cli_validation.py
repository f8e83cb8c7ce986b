"""Bad values are refused at the command line, and every runnable file runs as a file.

Range checks go through the real scripts' ``build_parser()``: argparse exits with status 2
and a message naming the flag before any work starts. The file-form check runs each
``python <dir>/<file>.py --help`` from a foreign working directory.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from cli import args as cli

# Arguments each parser requires, so that only the flag under test can fail.
REQUIRED = {
    "train": [],
    "val": ["--load_from", "w.pdparams"],
    "predict": ["--load_from", "w.pdparams"],
    "infer": ["--input_file", "images"],
    "export_model": [],
}

BAD_VALUES = [
    ("train", "--lr", "inf"), ("train", "--lr", "nan"), ("train", "--lr", "0"), ("train", "--lr", "-0.1"),
    ("train", "--lr", "fast"),
    ("train", "--momentum", "-5"), ("train", "--momentum", "1"), ("train", "--momentum", "nan"),
    ("train", "--w_d", "-1e-4"), ("train", "--w_d", "inf"),
    ("train", "--warmup_epoch", "inf"), ("train", "--warmup_epoch", "nan"), ("train", "--warmup_epoch", "-1"),
    ("train", "--threshold", "2"), ("train", "--threshold", "-0.1"),
    ("train", "--img_size", "1"), ("train", "--img_size", "31"), ("train", "--img_size", "64.5"),
    ("train", "--lam", "inf"), ("train", "--lam", "0"),
    ("val", "--threshold", "2"), ("val", "--threshold", "nan"), ("val", "--img_size", "1"), ("val", "--lam", "-1"),
    ("predict", "--threshold", "2"), ("predict", "--img_size", "1"), ("predict", "--lam", "nan"),
    ("infer", "--threshold", "2"), ("infer", "--threshold", "-1"),
    ("export_model", "--threshold", "2"), ("export_model", "--img_size", "16"), ("export_model", "--lam", "inf"),
]


def parser_of(script: str):
    """The real ``build_parser()`` of ``<script>.py``."""
    return importlib.import_module(script).build_parser()


@pytest.mark.parametrize("script,flag,value", BAD_VALUES)
def test_bad_value_exits_2_naming_the_flag(script: str, flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parser_of(script).parse_args([*REQUIRED[script], f"{flag}={value}"])  # '=': argparse takes -1e-4 for a flag
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be" in err and value in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("script", list(REQUIRED))
def test_edge_values_are_accepted(script: str) -> None:
    parser = parser_of(script)
    flags = {a for action in parser._actions for a in action.option_strings}
    good = {"--threshold": ["0", "1", "0.5"], "--img_size": ["32", "64", "448"], "--lam": ["0.1", "1e-3"],
            "--lr": ["1e-5"], "--momentum": ["0", "0.99"], "--w_d": ["0"], "--warmup_epoch": ["0", "0.25"]}
    checked = 0
    for flag, values in good.items():
        if flag not in flags:
            continue
        for value in values:
            args = parser.parse_args([*REQUIRED[script], flag, value])
            assert getattr(args, flag[2:]) == (int(value) if flag == "--img_size" else float(value))
            checked += 1
    assert checked >= 1


def test_type_helpers() -> None:
    assert cli.unit_interval_float("0") == 0.0 and cli.unit_interval_float("1") == 1.0
    assert cli.momentum_float("0") == 0.0 and cli.finite_positive_float("1e-8") == 1e-8
    assert cli.finite_non_negative_float("0") == 0.0 and cli.image_size(str(cli.MIN_IMG_SIZE)) == cli.MIN_IMG_SIZE
    for helper, text in [(cli.unit_interval_float, "1.0001"), (cli.momentum_float, "1"), (cli.finite_positive_float, "inf"),
                         (cli.finite_positive_float, "-inf"), (cli.finite_non_negative_float, "nan"),
                         (cli.image_size, str(cli.MIN_IMG_SIZE - 1)), (cli.positive_int, "x"), (cli.non_negative_int, "-1")]:
        with pytest.raises(Exception) as exc:
            helper(text)
        assert type(exc.value).__name__ == "ArgumentTypeError" and "must be" in str(exc.value), (helper, text)
    assert math.isfinite(cli.positive_float("3")) and cli.positive_float is cli.finite_positive_float


# --------------------------------------------------------------------------- run as a file


def runnable_files() -> list[str]:
    """Every module directly under datasets/, evaluation/, tools/, bench/ with an ``if __name__ == "__main__":`` block."""
    found = []
    for folder in ("datasets", "evaluation", "tools", "bench"):
        for path in sorted((REPO_ROOT / folder).glob("*.py")):
            text = path.read_text(encoding="utf-8")
            if "__main__" not in text:
                continue
            tree = ast.parse(text)
            for node in tree.body:
                if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
                    found.append(path.relative_to(REPO_ROOT).as_posix())
                    break
    return found


def test_runnable_files_are_found() -> None:
    files = runnable_files()
    assert {"datasets/make_demo.py", "evaluation/evaluate.py", "datasets/prepare_voc.py", "tools/convert_torch_weights.py"} <= set(files)


@pytest.mark.parametrize("script", runnable_files())
def test_file_form_runs_from_another_folder(script: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / script), "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, proc.stderr[-2000:]
    if script in ("tools/torch_reference.py", "bench/torch_reference_step.py", "bench/torch_reference_infer.py") and importlib.util.find_spec("torch") is None:
        # the PyTorch sides of the equivalence check and the benchmarks: say how to run them instead of crashing
        assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "torch" in proc.stderr
        return
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("module", ["datasets.prepare.voc", "datasets.prepare.coco", "datasets.prepare.wider",
                                    "datasets.prepare.custom", "evaluation.evaluate"])
def test_module_form_runs_from_the_repository_root(module: str) -> None:
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
