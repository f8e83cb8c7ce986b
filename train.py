"""Train a CSRA model (the reference recipe), evaluating and checkpointing as it goes.

    python train.py --dataset voc07 --model resnet101 --num_heads 1 --lam 0.1 --pretrained imagenet
    python train.py --dataset demo --model resnet18 --img_size 128 --batch_size 16 --total_epoch 8
    python -m paddle.distributed.launch --nproc_per_node 2 train.py ...   (data parallel)
"""
from __future__ import annotations

import argparse
import sys

from utils.threads import configure_threads

configure_threads()

from cli.args import (add_data_args, add_device_arg, add_model_args, finite_non_negative_float, finite_positive_float,  # noqa: E402
                       momentum_float, non_negative_int, positive_int, unit_interval_float)
from cli.args import add_image_limit_arg, apply_image_limit  # noqa: E402
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """train.py's arguments: the reference's flags plus resume, seeds, checkpoints and devices."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser)
    add_data_args(parser, train=True)
    opt = parser.add_argument_group("optimisation (reference defaults)")
    opt.add_argument("--lr", type=finite_positive_float, default=0.01,
                     help="backbone learning rate, finite > 0; the classifier uses 10x (default 0.01)")
    opt.add_argument("--momentum", type=momentum_float, default=0.9, help="SGD momentum, in [0, 1) (default 0.9)")
    opt.add_argument("--w_d", type=finite_non_negative_float, default=1e-4, help="weight decay on all parameters, >= 0 (default 1e-4)")
    opt.add_argument("--warmup_epoch", type=finite_non_negative_float, default=2,
                     help="linear warm-up epochs, 0 for none; fractions allowed, e.g. 0.25 (default 2)")
    opt.add_argument("--lr_step", type=positive_int, default=None,
                     help="epochs between x0.1 learning-rate decays (default: per --dataset, 4 voc07/demo/custom, 5 coco/wider)")
    opt.add_argument("--total_epoch", type=positive_int, default=30, help="epochs (default 30)")
    opt.add_argument("--freeze_bn", action="store_true",
                     help="keep BatchNorm in inference mode while training (running statistics fixed; affine still trained)")
    opt.add_argument("--amp", action="store_true", help="mixed precision (GPU only; ignored with a note on CPU)")
    run = parser.add_argument_group("run")
    run.add_argument("--save_dir", default="output/train",
                     help="checkpoints, metrics.jsonl, config (created if missing; locked while a run uses it)")
    run.add_argument("--pretrained", default=None, help="initial weights: .pdparams/.pth path, http(s) URL, or 'imagenet'")
    run.add_argument("--cutmix", dest="pretrained", help="the reference's flag for a CutMix backbone: same as --pretrained")
    run.add_argument("--resume", default=None, help="resume from a save_dir or a checkpoint file (last/interrupted)")
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of init, shuffling and augmentation (default 0)")
    run.add_argument("--eval_interval", type=positive_int, default=1, help="evaluate every N epochs and at the end (default 1)")
    run.add_argument("--threshold", type=unit_interval_float, default=0.5,
                     help="score threshold of CP/CR/CF1/OP/OR/OF1, in [0, 1] (default 0.5)")
    run.add_argument("--print_freq", type=non_negative_int, default=100, help="log a line every N batches, 0 for none (default 100)")
    run.add_argument("--shared_memory", action=argparse.BooleanOptionalAction, default=True,
                     help="loader workers pass batches through /dev/shm (disable where it is small, e.g. Docker)")
    add_device_arg(run)
    add_image_limit_arg(run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and train; returns 0 on success, 130 after SIGINT and 143 after SIGTERM
    (both save ``interrupted.*`` first)."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from engine.trainer import TrainingInterrupted, train

    try:
        train(args)
    except TrainingInterrupted as exc:
        print(f"interrupted by {exc.signal_name}: resume with --resume {args.save_dir}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
