"""Export trained weights for Paddle Inference (infer.py) and, optionally, ONNX.

    python export_model.py --model_path output/voc07/best.pdparams --save_dir inference/voc07
    python export_model.py --model resnet101 --num_cls 20 --img_size 448 --random_init --save_dir /tmp/r101   # speed tests
    python export_model.py --model_path best.pdparams --save_dir inference/voc07 --onnx   # + model.onnx

Writes DIR/inference.json + DIR/inference.pdiparams (input ``x`` float32 [N, 3, S, S],
output sigmoid probabilities [N, C]) and DIR/inference.yml (model, image size,
normalisation, class names, threshold, attention block and stages) so that
``infer.py --model_dir DIR`` needs nothing else. Model flags left unset are read from the
config.json that train.py wrote beside the weights (the run's --attention_stages only
together with its --attention).
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from utils.cli import add_model_args, positive_int  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def _probability(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """export_model.py's arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", default=None, help="trained weights (.pdparams, or a reference .pth) including the classifier")
    parser.add_argument("--save_dir", default="./inference", help="output folder (default ./inference)")
    add_model_args(parser)
    parser.add_argument("--img_size", type=positive_int, default=None, help="input side S of the exported program (default: the training run's, else 448)")
    parser.add_argument("--dataset", default=None, help="dataset of the weights: normalisation and built-in class names (default: the training run's, else voc07)")
    parser.add_argument("--classes", default=None, help="class names file (default: classes.txt beside --model_path, else the built-in list)")
    parser.add_argument("--threshold", type=_probability, default=0.5, help="default score threshold stored for infer.py (default 0.5)")
    parser.add_argument("--random_init", action="store_true", help="export an untrained, randomly initialised model (speed tests only)")
    parser.add_argument("--onnx", action="store_true", help="also write DIR/model.onnx with paddle2onnx (pip install -r requirements-onnx.txt)")
    parser.add_argument("--opset", type=positive_int, default=13, help="ONNX opset version (default 13)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export; prints the written files. Returns 0 (errors are UserError -> exit 2)."""
    args = build_parser().parse_args(argv)
    from utils.export import check_weights_choice, export_model

    check_weights_choice(args.model_path, args.random_init)  # before importing paddle
    paths = export_model(args)
    from utils.deploy import DeployConfig

    cfg = DeployConfig.load(paths["config_file"])
    attention = f", attention {cfg.attention} in stage(s) {','.join(map(str, cfg.attention_stages or []))}" if cfg.attention else ""
    print(f"exported {cfg.model} + CSRA ({cfg.num_classes} classes, {cfg.num_heads} head(s), {cfg.img_size}px{attention}) "
          f"to {args.save_dir}:")
    for path in paths.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
