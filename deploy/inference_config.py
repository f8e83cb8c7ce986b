"""The exported-model format shared by export_model.py and infer.py.

An export folder holds

* ``inference.json`` + ``inference.pdiparams``: the static program (Paddle 3 format; older
  exports may have ``inference.pdmodel`` instead of the ``.json``) and its weights. Input
  ``x`` float32 [N, 3, S, S] (normalised as below), output float32 [N, C]: sigmoid
  probabilities (the sigmoid is inside the program);
* ``inference.yml``: everything else infer.py needs (model, image size S, mean/std, class
  names, default threshold, per-class thresholds when they were tuned, dataset), read into a
  :class:`DeployConfig`;
* with ``export_model.py --with_heatmaps`` the program has a second output ``maps`` float32
  [N, C, S/s, S/s]: the CSRA head's combined class maps (``models.csra``), used by
  ``infer.py --heatmap_dir``;
* optionally ``model.onnx`` (``export_model.py --onnx``) and ``model_int8.onnx``
  (``export_model.py --quantize int8``: static post-training quantisation, run by infer.py's
  ``onnxruntime`` backend with ``--precision int8``); the yml records both.

This module imports neither paddle nor numpy, so scripts can check their inputs before
paying for ``import paddle``.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets.config import DEFAULT_DATASET
from utils.errors import UserError

MODEL_FILENAMES: tuple[str, ...] = ("inference.json", "inference.pdmodel")
"""Program file names, in order of preference (Paddle 3 writes ``.json``)."""
PARAMS_FILENAME = "inference.pdiparams"
CONFIG_FILENAME = "inference.yml"
ONNX_FILENAME = "model.onnx"
INT8_FILENAME = "model_int8.onnx"
INPUT_NAME = "x"
EXPORT_HINT = "python export_model.py --model_path WEIGHTS.pdparams --save_dir DIR"

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def str2bool(text: str | bool) -> bool:
    """argparse type for True/False-valued flags (TIPC passes ``--enable_mkldnn True``).

    Args:
        text: ``true/false``, ``1/0``, ``yes/no`` (also ``y/n``, ``on/off``), any case,
            surrounding spaces ignored; a bool is returned unchanged.
    Returns:
        the boolean.
    Raises:
        argparse.ArgumentTypeError: anything else (argparse turns it into a usage error).
    """
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False, 1/0, yes/no), got {text!r}")


@dataclass
class DeployConfig:
    """Contents of ``inference.yml``.

    Attributes:
        model: registered backbone name, e.g. ``resnet101``.
        num_heads: CSRA heads.
        lam: CSRA attention weight.
        attention: attention block name or None.
        attention_stages: ResNet stages holding the attention block (None without one).
            Informational: the program already contains the blocks, infer.py needs neither.
        num_classes: C, the length of the output and of ``class_names``.
        img_size: S, the square input side the program was exported for.
        mean, std: per-channel normalisation used by ``datasets.transforms.preprocess``.
        class_names: C names in output order.
        threshold: default score threshold of infer.py (every class).
        thresholds: C per-class thresholds (tuned with ``val.py --tune_thresholds``), used
            instead of ``threshold`` when present; None otherwise.
        thresholds_source: where ``thresholds`` came from (the thresholds.json and its split).
        heatmaps: the program also outputs the class maps [N, C, h, w] (``--with_heatmaps``).
        dataset: the ``--dataset`` of the weights (informational).
        input_name: the program's input name.
        output: what the program outputs (always ``probabilities``).
        weights: the weights file exported, or ``random_init``.
        paddle_version: Paddle version that wrote the export.
        onnx_file: the fp32 ONNX file beside the yml (``model.onnx``), or None without ``--onnx``.
        int8: the quantised model, or None: ``{"file": "model_int8.onnx", "runtime": "onnxruntime",
            "method": ..., "format": ..., "calib_images": N, "calib_dir": ...}``.
    """

    model: str
    num_heads: int
    lam: float
    num_classes: int
    img_size: int
    mean: list[float]
    std: list[float]
    class_names: list[str]
    attention: str | None = None
    attention_stages: list[int] | None = None
    threshold: float = 0.5
    thresholds: list[float] | None = None
    thresholds_source: str = ""
    heatmaps: bool = False
    dataset: str = DEFAULT_DATASET
    input_name: str = INPUT_NAME
    output: str = "probabilities"
    weights: str = ""
    paddle_version: str = ""
    onnx_file: str | None = None
    int8: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        """Name used in logs and benchmark reports, e.g. ``resnet101_csra``."""
        return f"{self.model}_csra"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for YAML (``extra`` merged in at the end)."""
        data = asdict(self)
        extra = data.pop("extra")
        data["mean"] = [float(v) for v in self.mean]
        data["std"] = [float(v) for v in self.std]
        first = ("model", "num_heads", "lam", "attention", "attention_stages")
        return {**{k: data[k] for k in first}, **{k: v for k, v in data.items() if k not in first}, **extra}

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML (atomically). Returns the path."""
        import yaml

        from utils.fileio import atomic_write_text

        header = "# Written by export_model.py; read by infer.py. Output: sigmoid probabilities.\n"
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
        written = atomic_write_text(path, header + body)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)  # a deployable file, not a private temp file (mkstemp makes 0600)
        return written

    @classmethod
    def load(cls, path: str | Path) -> "DeployConfig":
        """Read and validate ``inference.yml``.

        Raises:
            UserError: missing file, not YAML, missing or invalid fields (names the file and
                says to re-export).
        """
        import yaml

        p = Path(path)
        fix = f"re-export the model ({EXPORT_HINT})"
        if not p.is_file():
            raise UserError(f"{p} not found: infer.py needs the inference.yml written by export_model.py; {fix}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UserError(f"cannot read {p} as YAML ({type(exc).__name__}); {fix}") from None
        if not isinstance(data, dict):
            raise UserError(f"{p} is not a mapping of settings; {fix}")
        required = ("model", "num_heads", "lam", "num_classes", "img_size", "mean", "std", "class_names")
        missing = [k for k in required if k not in data]
        if missing:
            raise UserError(f"{p} lacks {', '.join(missing)}; {fix}")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        config = cls(**{k: v for k, v in data.items() if k in known},
                     extra={k: v for k, v in data.items() if k not in known})
        config._validate(p, fix)
        return config

    def _validate(self, path: Path, fix: str) -> None:
        def bad(what: str) -> UserError:
            return UserError(f"{path}: {what}; {fix}")

        if not isinstance(self.img_size, int) or isinstance(self.img_size, bool) or self.img_size < 1:
            raise bad(f"img_size must be a positive integer, got {self.img_size!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise bad(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not isinstance(self.class_names, list) or len(self.class_names) != self.num_classes:
            raise bad(f"class_names must list num_classes={self.num_classes} names")
        self.class_names = [str(n) for n in self.class_names]
        for key in ("mean", "std"):
            values = getattr(self, key)
            if not (isinstance(values, list) and len(values) == 3 and all(isinstance(v, (int, float)) for v in values)):
                raise bad(f"{key} must be a list of 3 numbers, got {values!r}")
        if not all(v != 0 for v in self.std):
            raise bad("std must not contain 0")
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise bad(f"threshold must be a number, got {self.threshold!r}")
        if self.thresholds is not None:
            values = self.thresholds
            if not (isinstance(values, list) and len(values) == self.num_classes
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in values)):
                raise bad(f"thresholds must list num_classes={self.num_classes} numbers in [0, 1] or be null")
            self.thresholds = [float(v) for v in values]
        if not isinstance(self.thresholds_source, str):
            raise bad(f"thresholds_source must be text, got {self.thresholds_source!r}")
        if not isinstance(self.heatmaps, bool):
            raise bad(f"heatmaps must be true or false, got {self.heatmaps!r}")
        stages = self.attention_stages
        if stages is not None and not (isinstance(stages, list) and all(isinstance(v, int) and 1 <= v <= 4 for v in stages)):
            raise bad(f"attention_stages must be a list of stages 1..4 or null, got {stages!r}")
        if not isinstance(self.input_name, str) or not self.input_name:
            raise bad(f"input_name must be a name, got {self.input_name!r}")
        def is_file_name(value: Any) -> bool:  # a plain name: the yml never points outside its folder
            return isinstance(value, str) and bool(value) and Path(value).name == value

        if self.onnx_file is not None and not is_file_name(self.onnx_file):
            raise bad(f"onnx_file must name a file beside inference.yml, got {self.onnx_file!r}")
        if self.int8 is not None and not (isinstance(self.int8, dict) and is_file_name(self.int8.get("file"))):
            raise bad(f"int8 must be a mapping whose 'file' names a file beside inference.yml, got {self.int8!r}")


@dataclass
class ModelFiles:
    """Paths of one export: program, weights, and the yml (None if absent)."""

    model_file: Path
    params_file: Path
    config_file: Path | None


def find_model_files(model_dir: str | None, model_file: str | None = None, params_file: str | None = None) -> ModelFiles:
    """Locate the program, weights and ``inference.yml`` of an export.

    Args:
        model_dir: export folder (``inference.json``, falling back to ``inference.pdmodel``,
            plus ``inference.pdiparams``); may be None when both files are given.
        model_file: explicit program file (overrides the folder's).
        params_file: explicit weights file (overrides the folder's).
    Returns:
        ``ModelFiles``; ``config_file`` is ``inference.yml`` in ``model_dir`` or beside
        ``model_file`` when it exists, else None.
    Raises:
        UserError: the folder or a file is missing (says to run export_model.py).
    """
    folder = Path(model_dir) if model_dir else None
    if folder is None and not (model_file and params_file):
        raise UserError("give --model_dir DIR (an export_model.py output folder), or both --model_file and --params_file")
    if folder is not None and not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise UserError(f"model folder {folder} {what}: export a model first with `{EXPORT_HINT.replace('DIR', str(folder))}`")
    if model_file:
        program = Path(model_file)
    else:
        assert folder is not None
        candidates = [folder / name for name in MODEL_FILENAMES]
        program = next((c for c in candidates if c.is_file()), candidates[0])
    params = Path(params_file) if params_file else (folder / PARAMS_FILENAME if folder else Path(PARAMS_FILENAME))
    for path, what in ((program, "model program"), (params, "model weights")):
        if not path.is_file():
            where = f" in {folder}" if folder is not None and path.parent == folder else ""
            raise UserError(f"{what} file {path} not found{where}: run `{EXPORT_HINT}` to create "
                            f"{'/'.join(MODEL_FILENAMES)} + {PARAMS_FILENAME} + {CONFIG_FILENAME}")
    yml = (folder if folder is not None else program.parent) / CONFIG_FILENAME
    if not yml.is_file() and folder is not None and model_file:
        yml = program.parent / CONFIG_FILENAME
    return ModelFiles(program, params, yml if yml.is_file() else None)
