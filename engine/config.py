"""``TrainConfig``: every setting of a training run, typed, resolved and frozen (no Paddle import).

The command line (``cli.settings.resolve_train``) builds one from train.py's flags, the
resumed run's ``config.json`` and the defaults; Python code can build one directly::

    from engine.config import TrainConfig
    from models.spec import ModelSettings
    config = TrainConfig(model=ModelSettings("resnet18", 8, img_size=64), dataset="demo",
                         train_json="data/demo/trainval_voc07.json", test_json="data/demo/test_voc07.json",
                         classes=tuple(names), save_dir="output/demo", epochs=8)

The field defaults are the reference recipe and the one home of train.py's defaults (its
``--help`` reads them from here). ``to_run_config`` gives the ``config.json`` the trainer
writes; its keys are train.py's flag names (``RUN_CONFIG_KEYS``), so a resumed run can restore
every setting, and older runs' files keep their meaning.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from models.spec import ModelSettings

DEFAULT_GEMM_CONV_SIDE = 8
"""``TrainConfig.gemm_conv_side``: of 8, 16 and 32, 8 gave the fastest ResNet-18 step at 64 px (``engine.gemm_conv``)."""

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class TrainConfig:
    """A training run's settings.

    Attributes:
        model: the model to build (``model.num_classes`` == ``len(classes)``).
        dataset: ``--dataset`` name: label policy, normalisation, WIDER's crop rule.
        train_json, test_json: prepared split files.
        classes: class names, in label order.
        save_dir: folder of checkpoints, metrics.jsonl, best.*, classes.txt, config.json.
        epochs: total epochs (a resumed run continues up to it).
        batch_size: global images per step (split among data-parallel processes).
        lr: backbone learning rate (the classifier trains at 10x).
        momentum, weight_decay: SGD momentum and L2 weight decay.
        warmup_epochs: linear warm-up length in epochs (fractions allowed, 0 = none).
        lr_step: epochs between x0.1 decays; None = the dataset's (4 voc07/demo/custom, 5 coco/wider).
        loss: ``--loss``, a name of ``engine.losses.LOSSES``: ``bce`` (the reference) or ``asl``.
        asl_gamma_neg, asl_gamma_pos, asl_clip: the Asymmetric Loss's focusing exponents of
            negatives / positives and probability shift of negatives (its published 4, 0, 0.05).
        ignore_unknown: targets -1/99 of the training split are unknown labels and add no loss.
        seed: seed of initialisation, shuffling and augmentation.
        eval_interval: evaluate every N epochs and after the last.
        threshold: score threshold of CP/CR/CF1/OP/OR/OF1.
        print_freq: a log line every N batches (0 = none).
        num_workers, shared_memory: data-loader processes and their /dev/shm use.
        freeze_bn: BatchNorm in inference mode while training.
        amp: mixed precision (GPU only).
        ema: decay of an exponential moving average of the weights (``engine.ema``), in (0, 1),
            which is evaluated, saved as best.pdparams and checkpointed; None = off (the reference).
        device: ``auto``, ``cpu`` or ``gpu`` (``Trainer.from_config`` selects it).
        pretrained: initial weights (path, URL or ``imagenet``); not loaded when resuming.
        resume: a save_dir or checkpoint file to continue, or None.
        classes_file: the ``--classes`` file the names came from, if any (recorded only).
        val_json: a validation split (``--val_json``), or None; used by ``tune_thresholds``.
        tune_thresholds: after training, tune per-class thresholds of best.pdparams on ``val_json``
            and write ``thresholds.json`` into save_dir (train.py does it after ``train``).
        visualdl: log scalars to VisualDL in ``save_dir/vdl`` (``engine.visual_log``).
        gemm_conv_side: on the CPU, training convolutions on input maps of at most this side
            run as one GEMM over the batch (``engine.gemm_conv``; same math to float rounding,
            faster on small maps); 0: Paddle's conv2d kernel everywhere.
    """

    model: ModelSettings
    dataset: str
    train_json: str
    test_json: str
    classes: tuple[str, ...]
    save_dir: str
    epochs: int = 30
    batch_size: int = 16
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 2.0
    lr_step: int | None = None
    loss: str = "bce"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    ignore_unknown: bool = False
    seed: int = 0
    eval_interval: int = 1
    threshold: float = 0.5
    print_freq: int = 100
    num_workers: int = 0
    shared_memory: bool = True
    freeze_bn: bool = False
    amp: bool = False
    ema: float | None = None
    device: str = "auto"
    pretrained: str | None = None
    resume: str | None = None
    classes_file: str | None = None
    val_json: str | None = None
    tune_thresholds: bool = False
    visualdl: bool = False
    gemm_conv_side: int = DEFAULT_GEMM_CONV_SIDE

    def to_run_config(self) -> dict[str, Any]:
        """The settings as ``config.json`` records them: keys are train.py's flag names.

        Returns:
            a JSON-able dict (model fields flattened: ``model``, ``num_cls``, ``num_heads``,
            ``lam``, ``attention``, ``attention_stages``, ``img_size``).
        """
        out: dict[str, Any] = {
            "model": self.model.name, "num_cls": self.model.num_classes, "num_heads": self.model.num_heads,
            "lam": self.model.lam, "attention": self.model.attention,
            "attention_stages": list(self.model.attention_stages) if self.model.attention_stages else None,
            "img_size": self.model.img_size, "drop_rate": self.model.drop_rate, "drop_path_rate": self.model.drop_path_rate,
        }
        for f in fields(self):
            if f.name in ("model", "classes"):
                continue
            out[RUN_CONFIG_KEYS.get(f.name, f.name)] = getattr(self, f.name)
        return out


#: TrainConfig field -> config.json key (= train.py flag name) where they differ.
RUN_CONFIG_KEYS: dict[str, str] = {
    "epochs": "total_epoch", "weight_decay": "w_d", "warmup_epochs": "warmup_epoch", "classes_file": "classes",
}

