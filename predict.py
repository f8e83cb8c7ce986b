"""Predict labels for images with trained weights (dygraph).

    python predict.py --load_from output/voc07/best.pdparams --img_dir images/
    python predict.py --load_from best.pdparams a.jpg b.png --threshold 0.3 --topk 3 --output preds.json

Prints one line per image, sorted: ``<img_dir>/<file> prediction: dog,person,``. Files that
cannot be read are reported on stderr and skipped; the exit status is 1 if any was skipped.
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import MIN_IMG_SIZE, add_device_arg, add_model_args, image_size, positive_int, unit_interval_float  # noqa: E402
from cli.args import add_image_limit_arg, apply_image_limit  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """predict.py's arguments."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="image files (in addition to --img_dir)")
    parser.add_argument("--img_dir", default=None, help="folder of images (not recursive)")
    parser.add_argument("--load_from", required=True,
                        help="trained weights file (.pdparams or a reference .pth), e.g. RUN/best.pdparams; "
                        "a folder is refused with the list of its checkpoints")
    add_model_args(parser)
    parser.add_argument("--dataset", default=None, help="dataset of the weights: built-in class names and normalisation")
    parser.add_argument("--classes", default=None, help="class names file (default: classes.txt beside --load_from)")
    parser.add_argument("--img_size", type=image_size, default=None,
                        help=f"input side in pixels, >= {MIN_IMG_SIZE} (default: the training run's, else 448)")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--threshold", type=unit_interval_float, default=0.5,
                        help="report classes with sigmoid score >= this, in [0, 1] (default 0.5)")
    parser.add_argument("--topk", type=positive_int, default=None, help="report at most the K best classes above the threshold")
    parser.add_argument("--output", default=None,
                        help="also write all scores and labels to this JSON file (checked before any image is predicted)")
    add_device_arg(parser)
    add_image_limit_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Predict; prints one line per image. Returns 0, or 1 when some file could not be read."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    import paddle
    import paddle.nn.functional as F

    from datasets.config import DATASETS
    from cli.args import read_run_config, set_device
    from utils.fileio import atomic_write_json
    from cli.loading import check_weights_path, load_trained_model
    from deploy.prediction import (check_output_path, collect_inputs, iter_batches, prediction_line, prediction_record,
                                  report_failures)

    check_output_path(args.output)
    check_weights_path(args.load_from)
    paths = collect_inputs(args.img_dir, args.images)
    set_device(args.device)
    args.dataset = args.dataset or read_run_config(args.load_from).get("dataset", "voc07")
    model, names = load_trained_model(args)
    defaults = DATASETS.get(args.dataset, DATASETS["voc07"])
    failures: list[tuple[str, str]] = []
    records = []
    with paddle.no_grad():
        for batch in iter_batches(paths, args.img_size, defaults.mean, defaults.std, args.batch_size, failures):
            scores = F.sigmoid(model(paddle.to_tensor(batch.images))).numpy()
            for path, row in zip(batch.paths, scores):
                print(prediction_line(path, row, names, args.threshold, args.topk), flush=True)
                records.append(prediction_record(path, row, names, args.threshold, args.topk))
    report_failures(failures)
    if args.output:
        atomic_write_json(args.output, records, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
