"""Predict labels for images with trained weights (dygraph).

    python predict.py --load_from output/voc07/best.pdparams --img_dir images/
    python predict.py --load_from best.pdparams a.jpg b.png --threshold 0.3 --topk 3 --output preds.json
    python predict.py --load_from output/voc07/best.pdparams --img_dir images/ --heatmap_dir heatmaps/

Thresholds: a thresholds.json beside --load_from (written by ``val.py --tune_thresholds``)
gives each class its own; ``--thresholds FILE`` picks another file; ``--threshold X`` uses X
for every class. stderr says which were used.

Prints one line per image, sorted: ``<img_dir>/<file> prediction: dog,person,``. Files that
cannot be read are reported on stderr and skipped; the exit status is 1 if any was skipped.
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import (FROM_RUN, MIN_IMG_SIZE, add_device_arg, add_model_args, default_text, image_size,  # noqa: E402
                      positive_int, unit_interval_float)
from cli.args import add_heatmap_dir_arg, add_image_limit_arg, add_thresholds_arg, apply_image_limit  # noqa: E402
from cli.settings import PredictSettings  # noqa: E402  (predict.py's defaults live there)
from datasets.config import DEFAULT_DATASET  # noqa: E402
from models.spec import DEFAULT_IMG_SIZE  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """predict.py's arguments; unset ones are None (``cli.settings.resolve_predict`` fills them)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="*", help="image files (in addition to --img_dir)")
    parser.add_argument("--img_dir", default=None, help="folder of images (not recursive)")
    parser.add_argument("--load_from", required=True,
                        help="trained weights file (.pdparams or a reference .pth), e.g. RUN/best.pdparams; "
                        "a folder is refused with the list of its checkpoints")
    add_model_args(parser)
    parser.add_argument("--dataset", default=None, help="dataset of the weights: built-in class names and normalisation "
                        f"{default_text(DEFAULT_DATASET, FROM_RUN)}")
    parser.add_argument("--classes", default=None, help="class names file (default: classes.txt beside --load_from)")
    parser.add_argument("--img_size", type=image_size, default=None,
                        help=f"input side in pixels, >= {MIN_IMG_SIZE} {default_text(DEFAULT_IMG_SIZE, FROM_RUN)}")
    parser.add_argument("--batch_size", type=positive_int, default=None,
                        help=f"images per forward pass (default {PredictSettings.batch_size})")
    parser.add_argument("--threshold", type=unit_interval_float, default=None,
                        help="report classes with sigmoid score >= this, in [0, 1], for every class (default: the tuned "
                        f"per-class thresholds.json beside --load_from when present, else {PredictSettings.threshold})")
    add_thresholds_arg(parser)
    parser.add_argument("--topk", type=positive_int, default=None, help="report at most the K best classes above the threshold")
    parser.add_argument("--output", default=None,
                        help="also write all scores and labels to this JSON file (checked before any image is predicted)")
    add_heatmap_dir_arg(parser)
    add_device_arg(parser)
    add_image_limit_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Predict; prints one line per image. Returns 0, or 1 when some file could not be read."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from deploy.prediction import check_output_path

    check_output_path(args.output)
    from utils.quiet import quiet_paddle

    paddle = quiet_paddle()
    import paddle.nn.functional as F

    from cli.loading import load_trained_model
    from cli.settings import resolve_predict
    from deploy.prediction import (HeatmapWriter, collect_inputs, iter_batches, prediction_line, prediction_record,
                                   report_failures, selected_classes)
    from engine.device import select_device
    from utils.fileio import atomic_write_json

    settings = resolve_predict(args)
    paths = collect_inputs(settings.img_dir, settings.images)
    select_device(settings.device)
    model = load_trained_model(settings.weights, settings.model)
    names = list(settings.class_names)
    thresholds = settings.thresholds
    print(f"thresholds: {thresholds.source}", file=sys.stderr)
    heatmaps = HeatmapWriter(settings.heatmap_dir) if settings.heatmap_dir else None
    failures: list[tuple[str, str]] = []
    records = []
    with paddle.no_grad():
        for batch in iter_batches(paths, settings.model.img_size, settings.mean, settings.std, settings.batch_size, failures):
            x = paddle.to_tensor(batch.images)
            if heatmaps is not None:  # one pass gives the logits and the class maps
                maps = model.class_maps(x)
                scores, class_maps = F.sigmoid(maps.logits).numpy(), maps.combined.numpy()
            else:
                scores = F.sigmoid(model(x)).numpy()
            for i, (path, row) in enumerate(zip(batch.paths, scores)):
                print(prediction_line(path, row, names, thresholds, settings.topk), flush=True)
                records.append(prediction_record(path, row, names, thresholds, settings.topk))
                if heatmaps is not None:
                    heatmaps.write(path, class_maps[i], row, selected_classes(row, thresholds, settings.topk), names)
    report_failures(failures)
    if heatmaps is not None:
        print(f"heatmaps written to {heatmaps.out_dir}", file=sys.stderr)
    if settings.output:
        atomic_write_json(settings.output, records, indent=1)
    return 1 if failures else 0

if __name__ == "__main__":
    sys.exit(run_cli(main))
