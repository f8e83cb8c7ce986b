"""What train.py does once training has finished: training-curve plots and threshold tuning.

Both run in the main process only, after ``engine.trainer.train`` returned; a failure here
never touches the checkpoints already written.
"""
from __future__ import annotations

from pathlib import Path

from engine.config import TrainConfig
from engine.threshold_tuning import TuningOutcome, tune_model_thresholds
from evaluation.plots import plot_training_curves, read_metrics_jsonl
from evaluation.thresholds import THRESHOLDS_FILENAME
from engine.progress import echo
from utils.errors import UserError
from utils.logger import attach_log_file, detach_log_file, get_logger

log = get_logger("train")


def write_training_plots(save_dir: str | Path) -> list[Path]:
    """Plot ``save_dir/metrics.jsonl`` (loss, lr, mAP, CF1, OF1 by epoch) into ``save_dir``; returns the PNG paths.

    A run without metrics.jsonl (nothing trained) gets no plot and a log line.
    """
    metrics = Path(save_dir) / "metrics.jsonl"
    if not metrics.is_file():
        log.info("no %s: no training curves to plot", metrics)
        return []
    return plot_training_curves(read_metrics_jsonl(metrics), save_dir)


def tuning_checkpoint(save_dir: str | Path) -> Path:
    """The weights to tune: ``best.pdparams`` (best test mAP), else ``last.pdparams``.

    Raises:
        UserError: the run folder holds neither.
    """
    for name in ("best.pdparams", "last.pdparams"):
        path = Path(save_dir) / name
        if path.is_file():
            return path
    raise UserError(f"--tune_thresholds: {save_dir} has neither best.pdparams nor last.pdparams; train first")


def tune_after_training(config: TrainConfig) -> TuningOutcome:
    """Tune per-class thresholds of the run's best checkpoint on ``config.val_json``.

    Writes ``save_dir/thresholds.json`` (beside best.pdparams, where predict.py, val.py and
    export_model.py look for it).
    """
    from models.weights import load_pretrained

    if not config.val_json:
        raise UserError("--tune_thresholds needs a validation split: pass --val_json FILE")
    weights = tuning_checkpoint(config.save_dir)
    model = config.model.build()
    load_pretrained(model, str(weights), allow_missing_classifier=False)
    model.eval()
    from datasets.config import dataset_defaults

    recipe = dataset_defaults(config.dataset)
    return tune_model_thresholds(model, config.val_json, config.classes, config.dataset, config.model.img_size, recipe.mean,
                                 recipe.std, Path(config.save_dir) / THRESHOLDS_FILENAME, checkpoint=str(weights),
                                 global_threshold=config.threshold, batch_size=config.batch_size,
                                 num_workers=config.num_workers)


def finish_training(config: TrainConfig) -> None:
    """train.py's last steps, in the main process: the training curves and, with
    ``config.tune_thresholds``, the tuned thresholds; what they print also goes to train.log."""
    handler = attach_log_file(Path(config.save_dir) / "train.log")
    try:
        for path in write_training_plots(config.save_dir):
            echo(f"training curves: {path}")
        if config.tune_thresholds:
            outcome = tune_after_training(config)
            echo(f"per-class thresholds of {outcome.thresholds.checkpoint} tuned on {config.val_json} "
                 f"({outcome.n_images} images):\n{outcome.table}")
            echo(f"wrote {outcome.thresholds.source} (predict.py, infer.py and export_model.py use it)")
    finally:
        detach_log_file(handler)
