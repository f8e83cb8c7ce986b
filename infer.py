"""Predict labels with an exported model through Paddle Inference.

    python infer.py --model_dir inference/voc07 --input_file images/
    python infer.py --model_dir inference/voc07 --input_file dog.jpg --threshold 0.3 --output preds.json
    python infer.py --model_dir inference/voc07 --input_file images/ --heatmap_dir heatmaps/   # export --with_heatmaps
    python infer.py --model_dir inference/voc07 --input_file images/ --batch_size 8 --enable_benchmark True

The engine is chosen with --backend (default auto: Paddle Inference for fp32, ONNX Runtime for
--precision int8 on CPU; see deploy/backends). Prints exactly predict.py's lines (``<dir>/<file> prediction: dog,person,``), one per image,
sorted by file name. Image size, normalisation, class names and the default threshold come
from DIR/inference.yml (written by export_model.py). Files that cannot be read are reported
on stderr and skipped; the exit status is then 1. Boolean flags take a value (True/False).
Settings that cannot be honoured (--use_gpu/--use_tensorrt without CUDA or TensorRT, fp16 on
CPU, int8 without an int8 export, a backend that is not installed) are refused with exit
status 2, never silently replaced.
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

_THREADS = configure_threads()

from cli.args import non_negative_int, positive_int, unit_interval_float  # noqa: E402
from deploy.inference_config import str2bool  # noqa: E402
from deploy.predictor import PRECISIONS, InferConfig, RuntimeOptions  # noqa: E402  (infer.py's defaults live there)
from cli.args import add_backend_arg, add_heatmap_dir_arg, add_image_limit_arg, add_thresholds_arg, apply_image_limit  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """infer.py's arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model_dir", default=None, help="folder written by export_model.py")
    model.add_argument("--model_file", default=None, help="program file (default DIR/inference.json, else DIR/inference.pdmodel)")
    model.add_argument("--params_file", default=None, help="weights file (default DIR/inference.pdiparams)")
    data = parser.add_argument_group("input and output")
    data.add_argument("--input_file", required=True, help="an image, or a folder of images (not recursive)")
    data.add_argument("--batch_size", type=positive_int, default=InferConfig.batch_size,
                      help="images per predictor run (default %(default)s)")
    data.add_argument("--num_workers", type=non_negative_int, default=InferConfig.num_workers,
                      help="processes decoding/preprocessing the next images during inference (default %(default)s; 0: none)")
    data.add_argument("--threshold", type=unit_interval_float, default=None,
                      help="report classes with score >= this, in [0, 1] (default: inference.yml's, 0.5)")
    add_thresholds_arg(data)
    data.add_argument("--topk", type=positive_int, default=None, help="report at most the K best classes above the threshold")
    add_heatmap_dir_arg(data)
    data.add_argument("--output", default=None,
                      help="also write all scores and labels to this JSON file (predict.py's format; checked before any work)")
    run = parser.add_argument_group("runtime")
    opts = RuntimeOptions  # the class's field defaults
    run.add_argument("--use_gpu", type=str2bool, default=opts.use_gpu,
                     help="run on the GPU (needs a CUDA build of Paddle; default %(default)s)")
    run.add_argument("--gpu_id", type=non_negative_int, default=opts.gpu_id, help="GPU index (default %(default)s)")
    run.add_argument("--gpu_mem", type=positive_int, default=opts.gpu_mem, help="initial GPU memory pool in MB (default %(default)s)")
    run.add_argument("--use_tensorrt", type=str2bool, default=opts.use_tensorrt,
                     help="TensorRT subgraphs (GPU build with TensorRT; default %(default)s)")
    add_backend_arg(run)
    run.add_argument("--precision", default=opts.precision, choices=list(PRECISIONS),
                     help="fp32 (default); int8 on CPU: the onnxruntime backend on an export made with "
                     "export_model.py --quantize int8; fp16 on GPU; int8 on GPU with TensorRT and a quantised model")
    run.add_argument("--enable_mkldnn", type=str2bool, default=opts.enable_mkldnn, help="oneDNN kernels on CPU (default %(default)s)")
    run.add_argument("--cpu_threads", type=positive_int, default=_THREADS,
                     help="CPU math threads (default: $OMP_NUM_THREADS, else the number of cores: %(default)s here)")
    run.add_argument("--ir_optim", type=str2bool, default=opts.ir_optim, help="graph optimisation passes (default %(default)s)")
    run.add_argument("--memory_optim", type=str2bool, default=opts.memory_optim, help="reuse buffers (less memory; default %(default)s)")
    bench = parser.add_argument_group("benchmark")
    bench.add_argument("--enable_benchmark", type=str2bool, default=InferConfig.enable_benchmark,
                       help="print an AutoLog-style timing/memory block after the predictions (default %(default)s)")
    bench.add_argument("--warmup", type=non_negative_int, default=InferConfig.warmup,
                       help="untimed warm-up runs before a benchmark (default %(default)s)")
    add_image_limit_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run inference; returns 0, or 1 when some image could not be read."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from deploy.prediction import check_output_path

    check_output_path(args.output)  # before the model and the images are loaded
    from utils.quiet import quiet_paddle

    quiet_paddle()
    from cli.settings import resolve_infer
    from deploy.predictor import run_infer

    return run_infer(resolve_infer(args))

if __name__ == "__main__":
    sys.exit(run_cli(main))
