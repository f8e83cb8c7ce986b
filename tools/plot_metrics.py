"""Plot a training run's curves from its metrics.jsonl (headless PNG).

Reads RUN_DIR/metrics.jsonl (one row per epoch, written by train.py) and writes
training_curves.png (loss, learning rate, mAP/CF1/OF1 and throughput by epoch) into RUN_DIR,
or into --out. Prints the written paths. A resumed run's repeated epochs count once (the
last row); epochs without evaluation only leave gaps in the mAP/CF1/OF1 panel.

    python -m tools.plot_metrics output/voc_r101
    python -m tools.plot_metrics output/voc_r101 --out plots/voc_r101
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.plots import plot_training_curves, read_metrics_jsonl  # noqa: E402
from utils.errors import UserError, run_cli  # noqa: E402
from utils.fileio import prepare_output_dir  # noqa: E402

METRICS_NAME = "metrics.jsonl"


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m tools.plot_metrics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR",
                        help=f"a training run's --save_dir (holding {METRICS_NAME}), or the {METRICS_NAME} file itself")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="folder for the plots (created if missing; default: RUN_DIR)")
    return parser


def metrics_file(run_dir: Path) -> Path:
    """The metrics.jsonl of ``run_dir`` (a run folder, or the file itself).

    Raises:
        UserError: ``run_dir`` does not exist.
    """
    if not run_dir.exists():
        raise UserError(f"run folder {run_dir} does not exist; pass the --save_dir of a training run "
                        f"(the folder holding {METRICS_NAME})")
    return run_dir if run_dir.is_file() else run_dir / METRICS_NAME


def main(argv: list[str] | None = None) -> int:
    """Write the training curves of RUN_DIR; prints each written path. Returns 0.

    Raises:
        UserError: missing folder or metrics.jsonl, a corrupt line, no rows, unwritable --out.
    """
    args = build_parser().parse_args(argv)
    source = metrics_file(args.run_dir)
    rows = read_metrics_jsonl(source)
    if not rows:
        raise UserError(f"metrics file {source} has no rows: the run has not finished an epoch yet; "
                        f"plot it after its first epoch")
    out_dir = prepare_output_dir(args.out, "--out") if args.out is not None else source.parent
    for path in plot_training_curves(rows, out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
