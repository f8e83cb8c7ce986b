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

from cli.args import (DEFAULT_TRAIN_SAVE_DIR, FROM_RESUMED_RUN, add_data_args, add_device_arg,  # noqa: E402
                      add_image_limit_arg, add_loss_args, add_model_args, apply_image_limit, drop_rate_float,
                      finite_non_negative_float,
                      ema_decay, finite_positive_float, momentum_float, non_negative_int, positive_int, unit_interval_float)
from engine.config import TrainConfig as T  # noqa: E402  (the recipe's defaults live there)
from utils.errors import run_cli  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """train.py's arguments: the reference's flags plus resume, seeds, checkpoints and devices.

    Every default is None ("not given"): ``cli.settings.resolve_train`` fills them from the
    resumed run's config.json (with --resume) or the defaults named in the help.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, defaults_from=FROM_RESUMED_RUN)
    add_data_args(parser, train=True, batch_size=T.batch_size, num_workers=T.num_workers, defaults_from=FROM_RESUMED_RUN)
    opt = parser.add_argument_group("optimisation (reference defaults)")
    opt.add_argument("--lr", type=finite_positive_float, default=None,
                     help=f"backbone learning rate, finite > 0; the classifier uses 10x (default {T.lr})")
    opt.add_argument("--momentum", type=momentum_float, default=None, help=f"SGD momentum, in [0, 1) (default {T.momentum})")
    opt.add_argument("--w_d", type=finite_non_negative_float, default=None,
                     help=f"weight decay on all parameters, >= 0 (default {T.weight_decay:g})")
    opt.add_argument("--warmup_epoch", type=finite_non_negative_float, default=None,
                     help=f"linear warm-up epochs, 0 for none; fractions allowed, e.g. 0.25 (default {T.warmup_epochs:g})")
    opt.add_argument("--lr_step", type=positive_int, default=None,
                     help="epochs between x0.1 learning-rate decays (default: per --dataset, 4 voc07/demo/custom, 5 coco/wider)")
    opt.add_argument("--total_epoch", type=positive_int, default=None,
                     help=f"epochs (default {T.epochs}; with --resume the run's, and it may be raised to train longer)")
    opt.add_argument("--freeze_bn", action="store_true", default=None,
                     help="keep BatchNorm in inference mode while training (running statistics fixed; affine still trained)")
    opt.add_argument("--amp", action="store_true", default=None, help="mixed precision (GPU only; ignored with a note on CPU)")
    opt.add_argument("--ema", type=ema_decay, default=None, metavar="DECAY",
                     help="keep an exponential moving average of the weights with this decay, in (0, 1), e.g. 0.999: it is "
                     "evaluated, saved as best.pdparams and checkpointed (default: off, the reference)")
    opt.add_argument("--drop_rate", type=drop_rate_float, default=None,
                     help="dropout rate inside the backbone, ViT only (default 0, the reference)")
    opt.add_argument("--drop_path_rate", type=drop_rate_float, default=None,
                     help="stochastic depth of the last block, rising linearly from 0, ViT only (default 0, the reference)")
    opt.add_argument("--gemm_conv_side", type=non_negative_int, default=None, metavar="N",
                     help="on the CPU, convolutions on input maps of at most N x N run as one GEMM over the batch while "
                     "training (the same convolution to float rounding; 1.4x faster ResNet-18 steps at 64 px); 0: Paddle's "
                     f"conv2d kernel everywhere (default {T.gemm_conv_side})")
    add_loss_args(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--save_dir", default=None,
                     help=f"checkpoints, metrics.jsonl, config (created if missing; locked while a run uses it) "
                     f"(default {DEFAULT_TRAIN_SAVE_DIR}; with --resume the resumed run's folder)")
    run.add_argument("--pretrained", default=None, help="initial weights: .pdparams/.pth path, http(s) URL, or 'imagenet'")
    run.add_argument("--cutmix", dest="pretrained", help="the reference's flag for a CutMix backbone: same as --pretrained")
    run.add_argument("--resume", default=None,
                     help="continue a run from its save_dir (or a last.*/interrupted.* file): every setting is restored from "
                     "its config.json; only --total_epoch, --eval_interval, --print_freq, --num_workers, --shared_memory, "
                     "--device and --threshold may be changed")
    run.add_argument("--seed", type=non_negative_int, default=None, help=f"seed of init, shuffling and augmentation (default {T.seed})")
    run.add_argument("--eval_interval", type=positive_int, default=None,
                     help=f"evaluate every N epochs and at the end (default {T.eval_interval})")
    run.add_argument("--threshold", type=unit_interval_float, default=None,
                     help=f"score threshold of CP/CR/CF1/OP/OR/OF1, in [0, 1] (default {T.threshold})")
    run.add_argument("--print_freq", type=non_negative_int, default=None,
                     help=f"log a line every N batches, 0 for none (default {T.print_freq})")
    run.add_argument("--shared_memory", action=argparse.BooleanOptionalAction, default=None,
                     help="loader workers pass batches through /dev/shm (disable where it is small, e.g. Docker) (default: on)")
    add_device_arg(run, defaults_from=FROM_RESUMED_RUN)
    add_image_limit_arg(run)
    after = parser.add_argument_group("reporting")
    after.add_argument("--val_json", default=None,
                       help="validation split for --tune_thresholds (default: the dataset's, e.g. data/voc07/val_voc07.json); "
                       "it should hold images the model does not train on (e.g. --train_json train_voc07.json)")
    after.add_argument("--tune_thresholds", action="store_true", default=None,
                       help="after training, tune one threshold per class (best F1) of best.pdparams on --val_json and write "
                       "save_dir/thresholds.json, which predict.py, infer.py and export_model.py then use")
    after.add_argument("--visualdl", action="store_true", default=None,
                       help="log loss, lr, throughput and the evaluation metrics to VisualDL in save_dir/vdl "
                       "(pip install -r requirements-vdl.txt; view with: visualdl --logdir save_dir/vdl)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, resolve the settings once and train; returns 0 on success, 130 after
    SIGINT and 143 after SIGTERM (both save ``interrupted.*`` first)."""
    args = build_parser().parse_args(argv)
    apply_image_limit(args.max_image_pixels)
    from utils.quiet import quiet_paddle

    quiet_paddle()
    from cli.settings import resolve_train
    from engine.trainer import TrainingInterrupted, train

    config = resolve_train(args)
    try:
        train(config)
    except TrainingInterrupted as exc:
        print(f"interrupted by {exc.signal_name}: resume with --resume {config.save_dir}", file=sys.stderr)
        return exc.exit_code
    finish_run(config)
    return 0


def finish_run(config) -> None:
    """After training (main process only): plot metrics.jsonl and, with --tune_thresholds, tune thresholds."""
    import paddle.distributed as dist

    from engine.after_training import finish_training

    if dist.get_rank() == 0:
        finish_training(config)


if __name__ == "__main__":
    sys.exit(run_cli(main))
