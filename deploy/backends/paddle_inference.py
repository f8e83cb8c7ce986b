"""The ``paddle`` backend: Paddle Inference (``deploy.predictor.Predictor``, oneDNN on CPU)."""
from __future__ import annotations

from typing import Any

from deploy.inference_config import DeployConfig, ModelFiles


def check(files: ModelFiles, deploy: DeployConfig, opts: Any) -> None:
    """Refuse what this Paddle build cannot honour (``deploy.predictor.check_runtime_options``):
    GPU/TensorRT without CUDA, fp16/int8 on CPU. UserError otherwise nothing."""
    from deploy.predictor import check_runtime_options
    from utils.errors import UserError

    if opts.precision == "int8" and not opts.use_gpu:
        raise UserError("--precision int8 on CPU runs on --backend onnxruntime (or auto) with an export made with "
                        "export_model.py --quantize int8; the Paddle predictor runs only fp32 on CPU "
                        "(int8 needs --use_gpu True --use_tensorrt True)")
    check_runtime_options(opts)


def create(files: ModelFiles, deploy: DeployConfig, opts: Any):  # -> deploy.predictor.Predictor
    """The Paddle Inference predictor for the export's program and weights."""
    from deploy.predictor import Predictor

    return Predictor(files, opts, deploy)
