"""Evaluate trained weights on a prepared split: the reference's metric lines + per-class AP.

    python val.py --load_from output/voc07/best.pdparams --dataset voc07
    python val.py --load_from csra_voc.pdparams --model resnet101 --num_heads 1 --lam 0.1 --save_scores scores.json
    python val.py --load_from output/voc07/best.pdparams --tune_thresholds --val_json data/voc07/val_voc07.json --plots plots/

--tune_thresholds picks, on the validation split, the threshold of each class that maximises
its F1 and writes them to thresholds.json beside the weights (predict.py, infer.py and
export_model.py then use them). Whenever per-class thresholds exist (just tuned, --thresholds
FILE, or thresholds.json beside the weights) the test split's CP/CR/CF1/OP/OR/OF1 are shown at
the global threshold and at the tuned ones side by side.
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import add_data_args, add_device_arg, add_model_args, unit_interval_float  # noqa: E402
from cli.args import add_image_limit_arg, add_thresholds_arg, apply_image_limit  # noqa: E402
from cli.settings import EvalSettings  # noqa: E402  (val.py's defaults live there)
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """val.py's arguments (the reference's, plus --save_scores, --threshold, --json_out); unset ones are None."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_from", required=True,
                        help="trained weights file (.pdparams or a reference .pth), e.g. RUN/best.pdparams; "
                        "a folder is refused with the list of its checkpoints")
    add_model_args(parser)
    add_data_args(parser, batch_size=EvalSettings.batch_size, num_workers=EvalSettings.num_workers)
    parser.add_argument("--threshold", type=unit_interval_float, default=None,
                        help=f"score threshold of CP/CR/CF1/OP/OR/OF1, in [0, 1] (default {EvalSettings.threshold})")
    parser.add_argument("--save_scores", default=None, help="write predictions as JSON [{img_path, scores}] for evaluation.evaluate")
    parser.add_argument("--json_out", default=None, help="write all metrics as JSON")
    tune = parser.add_argument_group("per-class thresholds")
    tune.add_argument("--tune_thresholds", action="store_true", default=None,
                      help="tune one threshold per class (best F1; ties: the lower) on the validation split --val_json and "
                      "write them to thresholds.json beside --load_from")
    tune.add_argument("--val_json", default=None,
                      help="validation split for --tune_thresholds (default: the dataset's, e.g. data/voc07/val_voc07.json "
                      "written by datasets/prepare_voc.py); never the test split unless --tune_on_test")
    tune.add_argument("--tune_on_test", action="store_true", default=None,
                      help="allow tuning on the test split (its tuned metrics are then optimistic)")
    add_thresholds_arg(tune, "compare with")
    parser.add_argument("--plots", default=None, metavar="DIR",
                        help="write per-class precision-recall curves (pr_curves.png) and a per-class AP bar chart "
                        "(ap_per_class.png) of the test split into DIR")
    add_device_arg(parser)
    add_image_limit_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate; prints the metric lines and the per-class table. Returns 0."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from deploy.prediction import check_output_path

    check_output_path(args.save_scores, "--save_scores")  # before the work, not after
    check_output_path(args.json_out, "--json_out")
    from utils.quiet import quiet_paddle

    paddle = quiet_paddle()
    from cli.loading import load_trained_model
    from cli.settings import resolve_eval
    from datasets.config import label_policy
    from datasets.dataset import MultiLabelDataset
    from datasets.loader import make_loader
    from datasets.transforms import TestTransform
    from engine.device import select_device
    from engine.scoring import predict_scores
    from evaluation.metrics import evaluate, format_class_table, format_reference_lines, thresholded_metrics
    from evaluation.thresholds import format_side_by_side
    from utils.fileio import atomic_write_json

    settings = resolve_eval(args)
    select_device(settings.device)
    names = list(settings.class_names)
    model = load_trained_model(settings.weights, settings.model)
    dataset = MultiLabelDataset(settings.test_json, TestTransform(settings.model.img_size, settings.mean, settings.std), classes=names)
    loader = make_loader(dataset, settings.batch_size, shuffle=False, num_workers=settings.num_workers)
    scores = predict_scores(model, loader)
    policy = label_policy(settings.dataset, bool((dataset.targets == -1).any()))
    result = evaluate(scores, dataset.targets, policy=policy, threshold=settings.threshold, class_names=names)
    print(format_reference_lines(result))
    print(format_class_table(result))
    tuned = settings.thresholds
    if settings.tune_thresholds:
        tuned = tune_on_split(model, settings, names)
    if tuned is not None and tuned.per_class:
        tuned_metrics = thresholded_metrics(scores, dataset.targets, policy, threshold=tuned.as_array(len(names)))
        print(f"\ntest split {settings.test_json}: global threshold vs {tuned.source}")
        print(format_side_by_side(result.thresholded, tuned_metrics, settings.threshold))
    if settings.plots_dir:
        for path in write_eval_plots(scores, dataset.targets, names, policy, result.ap, settings.plots_dir):
            print(f"wrote {path}")
    if settings.save_scores:
        atomic_write_json(settings.save_scores, [{"img_path": p, "scores": s.tolist()} for p, s in zip(dataset.img_paths, scores)])
    if settings.json_out:
        atomic_write_json(settings.json_out, result.to_dict(), indent=2)
    return 0


def tune_on_split(model, settings, names: list[str]):  # -> DecisionThresholds
    """Tune per-class thresholds on ``settings.val_json``, print the table and write thresholds.json.

    Returns:
        the tuned ``deploy.prediction.DecisionThresholds``.
    """
    from deploy.prediction import DecisionThresholds
    from engine.threshold_tuning import tune_model_thresholds

    outcome = tune_model_thresholds(model, settings.val_json, names, settings.dataset, settings.model.img_size, settings.mean,
                                    settings.std, settings.thresholds_out, checkpoint=settings.weights,
                                    global_threshold=settings.threshold, batch_size=settings.batch_size,
                                    num_workers=settings.num_workers)
    print(f"\nper-class thresholds tuned on {settings.val_json} ({outcome.n_images} images):")
    print(outcome.table)
    print(f"wrote {outcome.thresholds.source} (predict.py, infer.py and export_model.py use it; --threshold X overrides it)")
    return DecisionThresholds(tuple(float(v) for v in outcome.thresholds.thresholds),
                              f"tuned per class: {outcome.thresholds.source} (tuned on {settings.val_json})")


def write_eval_plots(scores, targets, names: list[str], policy, ap, out_dir: str) -> list:
    """PR curves and the per-class AP bar chart of one evaluation into ``out_dir``; returns the paths."""
    from pathlib import Path

    from evaluation.plots import plot_ap_bars, plot_pr_curves

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return [plot_pr_curves(scores, targets, names, policy, folder / "pr_curves.png", ap=ap),
            plot_ap_bars(ap, names, folder / "ap_per_class.png")]


if __name__ == "__main__":
    sys.exit(run_cli(main))
