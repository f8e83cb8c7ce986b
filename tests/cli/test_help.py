"""``--help`` of the five scripts never imports Paddle, and says where each default comes from.

Paddle takes seconds to import and prints warnings; ``--help`` must not pay for it. The
model/attention names in the help come from ``models.spec``, a Paddle-free copy of the
registries that the test below keeps equal to them.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

SCRIPTS = ("train", "val", "predict", "infer", "export_model")

# A sitecustomize that makes any import of paddle fail, and a --help run that reports
# whether paddle ended up in sys.modules.
NO_PADDLE = '''
import importlib.abc, sys
class _NoPaddle(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "paddle" or name.startswith("paddle."):
            raise ImportError("paddle is blocked: --help must not import it")
        return None
sys.meta_path.insert(0, _NoPaddle())
'''
RUN_HELP = '''
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("PADDLE_IMPORTED" if "paddle" in sys.modules else "PADDLE_NOT_IMPORTED", file=sys.stderr)
sys.exit(code)
'''


@pytest.fixture(scope="module")
def no_paddle_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("no_paddle")
    (site / "sitecustomize.py").write_text(NO_PADDLE)
    return site


def help_run(script: str, site: Path | None = None) -> subprocess.CompletedProcess:
    env = None
    if site is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", RUN_HELP.format(script=f"{script}.py")], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_does_not_import_paddle(script: str, no_paddle_site: Path) -> None:
    proc = help_run(script)
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "PADDLE_NOT_IMPORTED", proc.stderr[-2000:]
    assert "ccache" not in proc.stderr and "OMP_NUM_THREADS" not in proc.stderr
    blocked = help_run(script, no_paddle_site)  # with `import paddle` failing, --help still works
    assert blocked.returncode == 0 and blocked.stdout == proc.stdout, blocked.stderr[-2000:]


def test_the_block_works(no_paddle_site: Path) -> None:
    """The sitecustomize really blocks paddle (else the test above proves nothing)."""
    proc = subprocess.run([sys.executable, "-c", "import paddle"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, "PYTHONPATH": str(no_paddle_site)})
    assert proc.returncode != 0 and "paddle is blocked" in proc.stderr


def test_static_names_equal_the_registries() -> None:
    from models import MODELS
    from models.attention import ATTENTIONS
    from models.spec import ATTENTION_ALIASES, ATTENTION_NAMES, MODEL_NAMES, canonical_attention

    # the registry's order is the order the family modules happened to be imported in
    assert sorted(MODEL_NAMES) == sorted(MODELS.names()) and len(set(MODEL_NAMES)) == len(MODEL_NAMES)
    assert ATTENTION_NAMES == tuple(ATTENTIONS.names())
    for alias, name in ATTENTION_ALIASES.items():
        assert ATTENTIONS.canonical(alias) == name
    for name in ATTENTIONS.names():
        assert canonical_attention(name.upper()) == ATTENTIONS.canonical(name)
    aliases = getattr(ATTENTIONS, "_aliases", None)
    if isinstance(aliases, dict):
        assert aliases == ATTENTION_ALIASES


def _help_of(script: str, dest: str) -> str:
    parser = importlib.import_module(script).build_parser()
    for action in parser._actions:
        if action.dest == dest:
            return " ".join(str(action.help).split())
    raise KeyError(dest)


@pytest.mark.parametrize("script", ["val", "predict", "export_model"])
def test_help_says_defaults_come_from_the_runs_config(script: str) -> None:
    assert "(default: the training run's config.json, else resnet101)" in _help_of(script, "model")
    assert "(default: the training run's config.json, else 448)" in _help_of(script, "img_size")
    assert "(default: the training run's config.json, else voc07)" in _help_of(script, "dataset")
    assert "else 1)" in _help_of(script, "num_heads") and "else 0.1)" in _help_of(script, "lam")
    attention = _help_of(script, "attention")
    assert "se, srm, ge, ab, multise, eca, prm, at, emod" in attention and "else none)" in attention


def test_train_help_names_its_defaults_and_the_resumed_run() -> None:
    from engine.config import TrainConfig

    assert "(default output/train; with --resume the resumed run's folder)" in _help_of("train", "save_dir")
    assert "the resumed run's config.json with --resume, else resnet101" in _help_of("train", "model")
    assert f"(default {TrainConfig.lr})" in _help_of("train", "lr") and f"(default {TrainConfig.batch_size})" in _help_of(
        "train", "batch_size")
    resume = _help_of("train", "resume")
    assert "restored" in resume and "--total_epoch" in resume
    assert "(default ./inference)" in _help_of("export_model", "save_dir")


@pytest.mark.parametrize("script", ["train", "val", "predict", "export_model"])
def test_flags_that_a_run_or_settings_fill_default_to_none(script: str) -> None:
    """None means "not given": the settings resolution (not argparse) supplies the defaults."""
    parser = importlib.import_module(script).build_parser()
    for dest in ("model", "num_heads", "lam", "attention", "attention_stages", "img_size", "dataset", "threshold", "batch_size"):
        if dest in {a.dest for a in parser._actions}:
            assert parser.get_default(dest) is None, (script, dest)
    if script == "train":
        for dest in ("lr", "momentum", "w_d", "warmup_epoch", "total_epoch", "seed", "save_dir", "device", "freeze_bn",
                     "amp", "shared_memory", "num_workers", "print_freq", "eval_interval"):
            assert parser.get_default(dest) is None, dest
