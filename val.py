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
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """val.py's arguments (the reference's, plus --save_scores, --threshold, --json_out)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load_from", required=True,
                        help="trained weights file (.pdparams or a reference .pth), e.g. RUN/best.pdparams; "
                        "a folder is refused with the list of its checkpoints")
    add_model_args(parser)
    add_data_args(parser)
    parser.add_argument("--threshold", type=unit_interval_float, default=0.5,
                        help="score threshold of CP/CR/CF1/OP/OR/OF1, in [0, 1] (default 0.5)")
    parser.add_argument("--save_scores", default=None, help="write predictions as JSON [{img_path, scores}] for evaluation.evaluate")
    parser.add_argument("--json_out", default=None, help="write all metrics as JSON")
    add_device_arg(parser)
    add_image_limit_arg(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate; prints the metric lines and the per-class table. Returns 0."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from pathlib import Path

    import paddle

    from datasets.config import dataset_defaults, label_policy
    from datasets.dataset import MultiLabelDataset
    from datasets.transforms import TestTransform
    from cli.args import read_run_config, set_device
    from utils.errors import UserError
    from utils.fileio import atomic_write_json
    from cli.loading import check_weights_path, load_trained_model
    from evaluation.metrics import evaluate, format_class_table, format_reference_lines
    from deploy.prediction import check_output_path
    from engine.scoring import predict_scores

    check_output_path(args.save_scores, "--save_scores")  # before the work, not after
    check_output_path(args.json_out, "--json_out")
    check_weights_path(args.load_from)
    set_device(args.device)
    args.dataset = args.dataset or read_run_config(args.load_from).get("dataset", "voc07")
    defaults = dataset_defaults(args.dataset)
    test_json = args.test_json or defaults.test_json
    if not Path(test_json).is_file():
        raise UserError(f"--test_json {test_json} not found; prepare the dataset first or pass --test_json")
    model, names = load_trained_model(args, extra_json=test_json)
    dataset = MultiLabelDataset(test_json, TestTransform(args.img_size, defaults.mean, defaults.std), classes=names)
    loader = paddle.io.DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers)
    scores = predict_scores(model, loader)
    policy = label_policy(args.dataset, bool((dataset.targets == -1).any()))
    result = evaluate(scores, dataset.targets, policy=policy, threshold=args.threshold, class_names=names)
    print(format_reference_lines(result))
    print(format_class_table(result))
    if args.save_scores:
        atomic_write_json(args.save_scores, [{"img_path": p, "scores": s.tolist()} for p, s in zip(dataset.img_paths, scores)])
    if args.json_out:
        atomic_write_json(args.json_out, result.to_dict(), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
