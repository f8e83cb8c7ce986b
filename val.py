"""Evaluate trained weights on a prepared split: the reference's metric lines + per-class AP.

    python val.py --load_from output/voc07/best.pdparams --dataset voc07
    python val.py --load_from csra_voc.pdparams --model resnet101 --num_heads 1 --lam 0.1 --save_scores scores.json
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import add_data_args, add_device_arg, add_model_args, unit_interval_float  # noqa: E402
from cli.args import add_image_limit_arg, apply_image_limit  # noqa: E402
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
    from evaluation.metrics import evaluate, format_class_table, format_reference_lines
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
    if settings.save_scores:
        atomic_write_json(settings.save_scores, [{"img_path": p, "scores": s.tolist()} for p, s in zip(dataset.img_paths, scores)])
    if settings.json_out:
        atomic_write_json(settings.json_out, result.to_dict(), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
