"""Export a trained CSRA model for Paddle Inference (and optionally ONNX).

``export_model(args)`` is export_model.py's logic: build the model from the flags (unset
ones from the ``config.json`` beside the weights), load the weights (classifier included),
wrap it so the program outputs sigmoid probabilities, ``paddle.jit.save`` it with a
dynamic batch, and write ``inference.yml`` (see :mod:`deploy.inference_config`).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from deploy.inference_config import CONFIG_FILENAME, INPUT_NAME, MODEL_FILENAMES, ONNX_FILENAME, PARAMS_FILENAME, DeployConfig
from utils.errors import UserError
from utils.logger import get_logger

log = get_logger("export")

ONNX_INSTALL_HINT = "pip install -r requirements-onnx.txt"


def _probability_model(model):  # -> paddle.nn.Layer
    """Wrap ``model`` (logits [B, C]) so that ``forward(x [B,3,S,S]) -> sigmoid probabilities [B, C]``."""
    import paddle
    from paddle import nn

    class ProbabilityModel(nn.Layer):
        """``model`` followed by a sigmoid: the exported program outputs probabilities."""

        def __init__(self, inner: nn.Layer) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: paddle.Tensor) -> paddle.Tensor:
            return paddle.nn.functional.sigmoid(self.model(x))

    wrapped = ProbabilityModel(model)
    wrapped.eval()
    return wrapped


def check_weights_choice(model_path: str | None, random_init: bool) -> None:
    """Refuse an export without weights unless ``--random_init`` (and refuse both).

    Cheap: called before paddle is imported.
    """
    if model_path and random_init:
        raise UserError("--model_path and --random_init exclude each other: drop --random_init to export the trained weights")
    if not model_path and not random_init:
        raise UserError("no weights to export: pass --model_path WEIGHTS.pdparams (trained weights, e.g. output/voc07/best.pdparams); "
                        "--random_init exports an untrained model, for speed tests only")


def build_export_model(args: argparse.Namespace):  # -> tuple[nn.Layer, list[str]]
    """Build the model named by the flags and load ``args.model_path`` (or keep a seeded random init).

    Unset model flags and ``img_size``/``dataset`` come from the training run's
    ``config.json`` beside the weights, else the reference defaults. Class names: ``--classes``,
    else ``classes.txt`` beside the weights, else the built-in list of ``--dataset``.
    Returns (model in eval mode, class names); ``args`` is completed in place.
    """
    import paddle

    from models import build_model
    from cli.args import fill_model_defaults, model_kwargs, resolve_num_classes
    from cli.loading import find_class_names, load_trained_model

    args.load_from = args.model_path
    if args.model_path:
        return load_trained_model(args)  # checks that the checkpoint holds the classifier
    fill_model_defaults(args, {})
    if args.dataset is None:
        args.dataset = "voc07"
    names, source = find_class_names(args)
    args.num_cls = resolve_num_classes(args, names, source)
    paddle.seed(0)
    model = build_model(**model_kwargs(args))
    model.eval()
    log.warning("exporting a RANDOMLY INITIALISED %s (--random_init): its predictions are meaningless", args.model)
    return model, names


def deploy_config(args: argparse.Namespace, names: list[str], model_config: dict | None = None) -> DeployConfig:
    """The ``inference.yml`` contents for a completed ``args`` (after :func:`build_export_model`).

    ``model_config`` is the built model's ``config`` (``build_model`` records the canonical
    attention name and the resolved stages, e.g. ``[1, 2, 3, 4]`` for a block's default);
    without it the flags are used as given.
    """
    import paddle

    from datasets.config import DATASETS

    model_config = model_config or {}
    norm = DATASETS.get(args.dataset, DATASETS["voc07"])  # as predict.py does
    stages = model_config.get("attention_stages", getattr(args, "attention_stages", None))
    return DeployConfig(
        model=model_config.get("model", args.model), num_heads=args.num_heads, lam=float(args.lam),
        attention=model_config.get("attention", args.attention),
        attention_stages=[int(v) for v in stages] if stages else None,
        num_classes=len(names), img_size=int(args.img_size), mean=list(norm.mean), std=list(norm.std),
        class_names=list(names), threshold=float(args.threshold), dataset=args.dataset, input_name=INPUT_NAME,
        weights=str(Path(args.model_path).resolve()) if args.model_path else "random_init",
        paddle_version=paddle.__version__,
    )


def save_inference_model(model, save_dir: str | Path, config: DeployConfig) -> dict[str, Path]:
    """``paddle.jit.save`` the probability-wrapped ``model`` into ``save_dir`` and write ``inference.yml``.

    Args:
        model: the CSRA model (eval mode), logits [B, C].
        save_dir: output folder (created).
        config: the yml contents; its ``img_size`` fixes the input spec [None, 3, S, S].
    Returns:
        {"model_file", "params_file", "config_file"}. Files are written to a temporary folder
        first and moved into place, the yml last, so a failed export never leaves a new
        program beside an old yml.
    """
    import paddle
    from paddle.static import InputSpec

    out = Path(save_dir)
    out.mkdir(parents=True, exist_ok=True)
    wrapped = _probability_model(model)
    spec = [InputSpec([None, 3, config.img_size, config.img_size], "float32", config.input_name)]
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        paddle.jit.save(wrapped, str(tmp / "inference"), input_spec=spec)
        program = next((tmp / n for n in MODEL_FILENAMES if (tmp / n).is_file()), None)
        if program is None or not (tmp / PARAMS_FILENAME).is_file():
            raise UserError(f"paddle.jit.save wrote no program into {tmp} (found: {sorted(p.name for p in tmp.iterdir())})")
        for stale in [*(out / n for n in MODEL_FILENAMES), out / ONNX_FILENAME]:
            stale.unlink(missing_ok=True)  # an older export's program or ONNX file must not survive
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config.save(out / CONFIG_FILENAME)
    return {"model_file": out / program.name, "params_file": out / PARAMS_FILENAME, "config_file": out / CONFIG_FILENAME}


def onnx_tools_missing() -> list[str]:
    """Modules ``--onnx`` needs that are not installed (empty when all are)."""
    return [name for name in ("paddle2onnx", "onnx") if importlib.util.find_spec(name) is None]


def require_onnx_tools() -> None:
    """UserError naming the install command when paddle2onnx/onnx are missing."""
    missing = onnx_tools_missing()
    if missing:
        raise UserError(f"--onnx needs {' and '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
                        f"run `{ONNX_INSTALL_HINT}` (paddle2onnx 2.1.0 + onnxruntime), or export without --onnx")


def export_onnx(model_file: str | Path, params_file: str | Path, save_file: str | Path, opset: int = 13) -> Path:
    """Convert an exported program to ONNX with paddle2onnx (``optimize_tool=None``: its default
    optimiser would try to pip-install packages at run time).

    Args:
        model_file: ``inference.json``.
        params_file: ``inference.pdiparams``.
        save_file: the ``.onnx`` file to write (atomically).
        opset: ONNX opset version.
    Returns:
        ``save_file`` as a Path. UserError if the tools are missing or the conversion fails.
    """
    require_onnx_tools()
    import paddle2onnx

    dest = Path(save_file)
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        paddle2onnx.export(str(model_file), str(params_file), save_file=str(tmp), opset_version=opset,
                           enable_onnx_checker=True, optimize_tool="None")
    except Exception as exc:  # paddle2onnx logs most failures itself and writes nothing
        tmp.unlink(missing_ok=True)
        raise UserError(f"paddle2onnx could not convert {model_file} ({type(exc).__name__}: {exc}); "
                        "the Paddle Inference files are fine, only model.onnx is missing") from None
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"paddle2onnx wrote no ONNX file for {model_file} (see its log above); "
                        "the Paddle Inference files are fine, only model.onnx is missing")
    os.replace(tmp, dest)
    return dest


def export_model(args: argparse.Namespace) -> dict[str, Path]:
    """export_model.py: build + load, save the inference files (+ ONNX). Returns the written paths."""
    check_weights_choice(args.model_path, args.random_init)
    if args.onnx:
        require_onnx_tools()  # before the (slow) export, not after
    model, names = build_export_model(args)
    config = deploy_config(args, names, getattr(model, "config", None))
    paths = save_inference_model(model, args.save_dir, config)
    if args.onnx:
        paths["onnx_file"] = export_onnx(paths["model_file"], paths["params_file"], Path(args.save_dir) / ONNX_FILENAME, args.opset)
    return paths
