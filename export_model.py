"""Export trained weights for Paddle Inference (infer.py) and, optionally, ONNX.

    python export_model.py --model_path output/voc07/best.pdparams --save_dir inference/voc07
    python export_model.py --model resnet101 --num_cls 20 --img_size 448 --random_init --save_dir /tmp/r101   # speed tests
    python export_model.py --model_path best.pdparams --save_dir inference/voc07 --onnx   # + model.onnx
    python export_model.py --model_path best.pdparams --save_dir inference/voc07 --quantize int8 --calib_dir train_images/
                                                          # + model.onnx + model_int8.onnx (infer.py --precision int8)

Writes DIR/inference.json + DIR/inference.pdiparams (input ``x`` float32 [N, 3, S, S],
output sigmoid probabilities [N, C]) and DIR/inference.yml (model, image size,
normalisation, class names, threshold (or the tuned per-class thresholds of the thresholds.json
beside the weights), attention block and stages) so that
``infer.py --model_dir DIR`` needs nothing else. Model flags left unset are read from the
config.json that train.py wrote beside the weights (the run's --attention_stages only
together with its --attention).
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import (FROM_RUN, MIN_IMG_SIZE, add_model_args, add_quantize_args, add_thresholds_arg, default_text,  # noqa: E402
                      image_size, positive_int, unit_interval_float)
from datasets.config import DEFAULT_DATASET  # noqa: E402
from deploy.export import ExportConfig  # noqa: E402  (export_model.py's defaults live there)
from models.spec import DEFAULT_IMG_SIZE  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """export_model.py's arguments; unset ones are None (``cli.settings.resolve_export`` fills them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=None,
                        help="trained weights file (.pdparams, or a reference .pth) including the classifier, e.g. RUN/best.pdparams; "
                        "a folder is refused with the list of its checkpoints")
    parser.add_argument("--save_dir", default=None, help=f"output folder (default {ExportConfig.save_dir})")
    add_model_args(parser)
    parser.add_argument("--img_size", type=image_size, default=None,
                        help=f"input side S of the exported program, >= {MIN_IMG_SIZE} {default_text(DEFAULT_IMG_SIZE, FROM_RUN)}")
    parser.add_argument("--dataset", default=None, help="dataset of the weights: normalisation and built-in class names "
                        f"{default_text(DEFAULT_DATASET, FROM_RUN)}")
    parser.add_argument("--classes", default=None, help="class names file (default: classes.txt beside --model_path, else the built-in list)")
    parser.add_argument("--threshold", type=unit_interval_float, default=None,
                        help=f"score threshold stored for infer.py, in [0, 1], for every class (default: the tuned per-class "
                        f"thresholds.json beside --model_path when present, else {ExportConfig.threshold})")
    add_thresholds_arg(parser, "store for infer.py")
    parser.add_argument("--with_heatmaps", action="store_true",
                        help="the program also outputs the CSRA class maps [N, C, S/s, S/s] (output 'maps'), so that "
                        "infer.py --heatmap_dir can draw heatmaps")
    parser.add_argument("--random_init", action="store_true", help="export an untrained, randomly initialised model (speed tests only)")
    parser.add_argument("--onnx", action="store_true", help="also write DIR/model.onnx with paddle2onnx (pip install -r requirements-onnx.txt)")
    parser.add_argument("--opset", type=positive_int, default=None, help=f"ONNX opset version (default {ExportConfig.opset})")
    add_quantize_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export; prints the written files. Returns 0 (errors are UserError -> exit 2)."""
    args = build_parser().parse_args(argv)
    from deploy.export import check_weights_choice

    from deploy.quantize import check_quantize_request

    check_weights_choice(args.model_path, args.random_init)  # before importing paddle
    check_quantize_request(args.quantize, args.calib_dir, args.calib_images)
    from utils.quiet import quiet_paddle

    quiet_paddle()
    from cli.settings import resolve_export
    from deploy.export import export_model
    from deploy.inference_config import DeployConfig

    config = resolve_export(args)
    paths = export_model(config)
    cfg = DeployConfig.load(paths["config_file"])
    attention = f", attention {cfg.attention} in stage(s) {','.join(map(str, cfg.attention_stages or []))}" if cfg.attention else ""
    print(f"exported {cfg.model} + CSRA ({cfg.num_classes} classes, {cfg.num_heads} head(s), {cfg.img_size}px{attention}) "
          f"to {config.save_dir}:")
    print(f"  thresholds: {cfg.thresholds_source or f'global {cfg.threshold:g}'}; class maps: {'yes' if cfg.heatmaps else 'no'}")
    for path in paths.values():
        print(f"  {path}")
    return 0

if __name__ == "__main__":
    sys.exit(run_cli(main))
