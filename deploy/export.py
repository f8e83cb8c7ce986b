"""Export a trained CSRA model for Paddle Inference (and optionally ONNX).

``export_model(config)`` is export_model.py's logic for an :class:`ExportConfig` (which
``cli.settings.resolve_export`` builds from the flags and the training run's config.json):
build the model, load the weights (classifier included), wrap it so the program outputs
sigmoid probabilities, ``paddle.jit.save`` it with a dynamic batch, and write
``inference.yml`` (see :mod:`deploy.inference_config`); optionally convert it to ONNX and
quantise that to int8 (:mod:`deploy.quantize`), recording both files in the yml.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from datasets.transforms import DEFAULT_MEAN, DEFAULT_STD
from deploy.inference_config import (CONFIG_FILENAME, INPUT_NAME, INT8_FILENAME, MODEL_FILENAMES, ONNX_FILENAME, PARAMS_FILENAME,
                                     DeployConfig)
from deploy.quantize import DEFAULT_CALIB_IMAGES
from models.spec import ModelSettings
from utils.errors import UserError
from utils.logger import get_logger
from utils.quiet import PIR_OUT_TENSOR, filtered_fd

log = get_logger("export")

ONNX_INSTALL_HINT = "pip install -r requirements-onnx.txt"


@dataclass(frozen=True)
class ExportConfig:
    """What export_model.py writes.

    Attributes:
        model: the model (its ``img_size`` fixes the program's input [N, 3, S, S]).
        class_names: names in label order (``len == model.num_classes``), stored in inference.yml.
        dataset: recorded in inference.yml.
        mean, std: per-channel normalisation infer.py applies (the dataset's).
        save_dir: output folder.
        weights: trained weights with the classifier, or None for a seeded random model (speed tests).
        threshold: the default score threshold stored for infer.py.
        thresholds, thresholds_source: per-class thresholds stored for infer.py (used instead of
            ``threshold``) and where they came from; None when not tuned.
        with_heatmaps: the program also outputs the CSRA class maps [N, C, h, w] (``maps``).
        onnx: also write ``model.onnx``; opset: its ONNX opset.
        quantize: None, or ``int8``: also write ``model_int8.onnx`` (implies ``onnx``).
        calib_dir, calib_images: the calibration images for ``quantize`` (a folder, how many).
    """

    model: ModelSettings
    class_names: tuple[str, ...]
    dataset: str
    mean: tuple[float, ...] = DEFAULT_MEAN
    std: tuple[float, ...] = DEFAULT_STD
    save_dir: str = "./inference"
    weights: str | None = None
    threshold: float = 0.5
    thresholds: tuple[float, ...] | None = None
    thresholds_source: str = ""
    with_heatmaps: bool = False
    onnx: bool = False
    opset: int = 13
    quantize: str | None = None
    calib_dir: str | None = None
    calib_images: int = DEFAULT_CALIB_IMAGES


def _probability_model(model, with_maps: bool = False):  # -> paddle.nn.Layer
    """Wrap ``model`` (logits [B, C]) so that ``forward(x [B,3,S,S]) -> sigmoid probabilities [B, C]``.

    With ``with_maps`` the forward returns ``(probabilities [B, C], combined class maps [B, C, h, w])``
    (``CSRAModel.forward_with_maps``), from one pass.
    """
    import paddle
    from paddle import nn

    class ProbabilityModel(nn.Layer):
        """``model`` followed by a sigmoid: the exported program outputs probabilities."""

        def __init__(self, inner: nn.Layer) -> None:
            super().__init__()
            self.model = inner

        def forward(self, x: paddle.Tensor) -> paddle.Tensor:
            return paddle.nn.functional.sigmoid(self.model(x))

    class ProbabilityAndMapsModel(ProbabilityModel):
        """Probabilities and the class maps that explain their logits."""

        def forward(self, x: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
            logits, maps = self.model.forward_with_maps(x)
            return paddle.nn.functional.sigmoid(logits), maps

    wrapped = (ProbabilityAndMapsModel if with_maps else ProbabilityModel)(model)
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


def build_export_model(config: ExportConfig):  # -> paddle.nn.Layer
    """Build ``config.model`` and load ``config.weights`` (or keep a random init seeded with 0).

    Returns:
        the model in eval mode, logits [B, C]. UserError when the weights do not fit (the
        checkpoint must hold the classifier).
    """
    import paddle

    from models.weights import load_pretrained

    if config.weights:
        model = config.model.build()
        load_pretrained(model, config.weights, allow_missing_classifier=False)
    else:
        paddle.seed(0)
        model = config.model.build()
        log.warning("exporting a RANDOMLY INITIALISED %s (--random_init): its predictions are meaningless", config.model.name)
    model.eval()
    return model


def deploy_config(config: ExportConfig, model_config: dict | None = None) -> DeployConfig:
    """The ``inference.yml`` contents for ``config``.

    ``model_config`` is the built model's ``config`` (``build_model`` records the canonical
    attention name and the resolved stages, e.g. ``[1, 2, 3, 4]`` for a block's default);
    without it the settings are used as given.
    """
    import paddle

    model_config = model_config or {}
    spec = config.model
    stages = model_config.get("attention_stages", spec.attention_stages)
    return DeployConfig(
        model=model_config.get("model", spec.name), num_heads=spec.num_heads, lam=float(spec.lam),
        attention=model_config.get("attention", spec.attention),
        attention_stages=[int(v) for v in stages] if stages else None,
        num_classes=len(config.class_names), img_size=int(spec.img_size), mean=list(config.mean), std=list(config.std),
        class_names=list(config.class_names), threshold=float(config.threshold),
        thresholds=[float(v) for v in config.thresholds] if config.thresholds is not None else None,
        thresholds_source=config.thresholds_source, heatmaps=bool(config.with_heatmaps),
        dataset=config.dataset, input_name=INPUT_NAME,
        weights=str(Path(config.weights).resolve()) if config.weights else "random_init",
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
    out = Path(save_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        program = _jit_save(model, tmp, config)
        for stale in [*(out / n for n in MODEL_FILENAMES), out / ONNX_FILENAME, out / INT8_FILENAME]:
            stale.unlink(missing_ok=True)  # an older export's program or ONNX file must not survive
        for item in tmp.iterdir():
            os.replace(item, out / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    config.save(out / CONFIG_FILENAME)
    return {"model_file": out / program.name, "params_file": out / PARAMS_FILENAME, "config_file": out / CONFIG_FILENAME}


def _jit_save(model, folder: Path, config: DeployConfig) -> Path:
    """``paddle.jit.save`` the probability-wrapped ``model`` as ``folder/inference.*``; returns the program file."""
    import paddle
    from paddle.static import InputSpec

    wrapped = _probability_model(model, with_maps=config.heatmaps)
    spec = [InputSpec([None, 3, config.img_size, config.img_size], "float32", config.input_name)]
    with filtered_fd(2, PIR_OUT_TENSOR):  # a known-harmless glog line about Tensor.mean (see utils.quiet)
        paddle.jit.save(wrapped, str(folder / "inference"), input_spec=spec)
    program = next((folder / n for n in MODEL_FILENAMES if (folder / n).is_file()), None)
    if program is None or not (folder / PARAMS_FILENAME).is_file():
        raise UserError(f"paddle.jit.save wrote no program into {folder} (found: {sorted(p.name for p in folder.iterdir())})")
    return program


def export_model_onnx(model, paths: dict[str, Path], config: DeployConfig, save_file: Path, opset: int) -> Path:
    """Write ``save_file`` (ONNX) for ``model``, whose Paddle program ``paths`` were just saved.

    Models with layers in a form paddle2onnx cannot read (``models.portable``) are traced once
    more in their portable form into a temporary folder, and that program is converted; the
    others convert the saved program directly. Returns ``save_file``.
    """
    from models.portable import has_portable_form, portable_ops

    if not has_portable_form(model):
        return export_onnx(paths["model_file"], paths["params_file"], save_file, opset)
    tmp = Path(tempfile.mkdtemp(prefix=".export-onnx-", dir=save_file.parent))
    try:
        with portable_ops(model):
            program = _jit_save(model, tmp, config)
        return export_onnx(program, tmp / PARAMS_FILENAME, save_file, opset)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def export_model(config: ExportConfig) -> dict[str, Path]:
    """export_model.py: build + load, save the inference files (+ ONNX).

    Returns:
        {"model_file", "params_file", "config_file"[, "onnx_file"[, "int8_file"]]}: the written paths.
        With ONNX files the yml is written again at the end, naming them (``onnx_file``, ``int8``).
    """
    from deploy.quantize import calibration_images, check_quantize_request, quantize_int8

    with_onnx = config.onnx or config.quantize is not None
    check_quantize_request(config.quantize, config.calib_dir, config.calib_images if config.quantize else None)
    if with_onnx:
        require_onnx_tools()  # before the (slow) export, not after
    model = build_export_model(config)
    deploy = deploy_config(config, getattr(model, "config", None))
    paths = save_inference_model(model, config.save_dir, deploy)
    if with_onnx:
        paths["onnx_file"] = export_model_onnx(model, paths, deploy, Path(config.save_dir) / ONNX_FILENAME, config.opset)
        deploy.onnx_file = ONNX_FILENAME
    if config.quantize == "int8":
        assert config.calib_dir is not None  # check_quantize_request
        images = calibration_images(config.calib_dir, config.calib_images)
        deploy.int8 = quantize_int8(paths["onnx_file"], Path(config.save_dir) / INT8_FILENAME, images, deploy.input_name,
                                    deploy.img_size, deploy.mean, deploy.std)
        paths["int8_file"] = Path(config.save_dir) / INT8_FILENAME
    if with_onnx:
        deploy.save(paths["config_file"])
    return paths
