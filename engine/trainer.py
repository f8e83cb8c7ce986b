"""Training: the reference CSRA recipe with evaluation, checkpoints, resume and data parallel.

The reference recipe: BCE-with-logits (mean over B x C); SGD momentum 0.9 with weight
decay on all parameters; classifier parameters at 10x the learning rate; per-iteration
linear warm-up from 0 over ``warmup_epoch`` epochs; x0.1 every 4 (voc07) or 5 (coco,
wider) epochs; flip + RandomResizedCrop(0.7-1.0) + resize; pixels scaled to [0, 1].
Other losses (``--loss asl``) and label masking (``--ignore_unknown``) come from
``engine.losses``; the default stays the reference's BCE. With ``--ema`` (``engine.ema``)
the evaluations score a moving average of the weights, best.pdparams holds it and every
checkpoint set carries it; without it nothing of the recipe changes.

Files written to ``save_dir`` (rank 0 only): ``last.*`` and ``interrupted.*`` checkpoint
sets (see ``engine.checkpoint``), ``best.pdparams`` + ``best.json`` (highest mAP so far),
``metrics.jsonl`` (one row per epoch), ``classes.txt``, ``config.json`` and ``train.log`` (what
the run prints and logs, appended to on resume; not written when stdout or stderr already
goes to that file). Progress lines: ``engine.progress``. Rank 0 checks the
folder is writable and holds its run lock (``.lock``, see ``utils.fileio.lock_run_dir``) from
the start to the end of the run; write errors (disk full...) stop the run with a UserError
that keeps the previous checkpoint. SIGINT and SIGTERM save ``interrupted.*`` after the
current step and raise ``TrainingInterrupted`` (exit status 130 and 143 in ``train.py``).

Python API: every step is :func:`train_step` (usable on its own in a custom loop);
``Trainer.from_config(TrainConfig(...))`` builds what train.py trains with (datasets, seeded
sampler, loaders, model, optimizer); ``Trainer(config, model=..., train_loader=...,
test_loader=...)`` trains parts built elsewhere. Neither reads command-line flags: the
settings are an ``engine.config.TrainConfig`` (train.py makes it with
``cli.settings.resolve_train``).
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import signal
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from tqdm import tqdm

from datasets.classes import write_class_file
from datasets.config import dataset_defaults, label_policy
from datasets.dataset import MultiLabelDataset
from datasets.loader import make_loader
from datasets.samplers import SeededBatchSampler, ShardedBatchSampler
from engine.checkpoint import (EMA_SUFFIX, find_resume_checkpoint, load_checkpoint, load_checkpoint_file, remove_checkpoint,
                               save_checkpoint, set_rng_state)
from engine.config import TrainConfig
from engine.ema import ModelEMA
from engine.gemm_conv import use_gemm_convs
from engine.device import select_device
from utils.errors import UserError
from utils.fileio import (RunLock, atomic_paddle_save, atomic_write_json, atomic_write_text, clean_stale_temps, describe_os_error,
                          lock_run_dir, prepare_output_dir)
from utils.logger import attach_log_file, detach_log_file, get_logger, record_in_log_files
from utils.memory import retain_freed_memory
from engine.lr import WarmupStepDecay
from engine.losses import UNKNOWN_VALUES, LossFn, build_loss
from engine.progress import ProgressLog, echo
from evaluation.metrics import evaluate, format_reference_lines
from engine.scoring import predict_scores
from engine.visual_log import VisualLog

log = get_logger("train")
CLASSIFIER_LR_SCALE = 10.0


class TrainingDiverged(UserError):
    """The loss became NaN or Inf."""


@dataclass
class TrainState:
    """Progress that a checkpoint must carry to resume exactly."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # batches done inside the current (incomplete) epoch
    best_map: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving ``interrupted.*``; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.signal_name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        super().__init__(f"stopped by {self.signal_name}")


class _StopRequest:
    """SIGINT/SIGTERM handler: the first signal asks the loop to save and stop; a second one
    aborts at once (Ctrl-C raises KeyboardInterrupt, SIGTERM terminates)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum = signal.SIGINT.value
        self._unannounced = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopRequest":
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # no logging here: the handler may interrupt a write to the same stream or log file,
        # and a nested write fails ("reentrant call"); ``check`` announces the request instead
        self.requested, self.signum, self._unannounced = True, signum, True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def check(self) -> bool:
        """Whether a stop was requested; logs the request once, from the training loop."""
        if self._unannounced:
            self._unannounced = False
            again = "Ctrl-C" if self.signum == signal.SIGINT else "SIGTERM"
            log.warning("%s received: saving a resumable checkpoint after this step (%s again to abort)",
                        signal.Signals(self.signum).name, again)
        return self.requested

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            fallback = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, previous if previous is not None else fallback)


def no_weight_decay_names(model: paddle.nn.Layer) -> set[str]:
    """Names of parameters in sublayers marked ``no_weight_decay`` (e.g. SRM's, as its reference)."""
    names: set[str] = set()
    for prefix, layer in model.named_sublayers(include_self=True):
        if getattr(layer, "no_weight_decay", False):
            names.update(f"{prefix}.{name}" if prefix else name for name, _ in layer.named_parameters())
    return names


def split_parameters(model: paddle.nn.Layer) -> tuple[list[paddle.Tensor], list[paddle.Tensor], list[paddle.Tensor]]:
    """(backbone, classifier, no-decay) trainable parameters.

    The classifier's train at 10x lr; the no-decay list holds backbone parameters of blocks
    marked ``no_weight_decay`` (SRM), which train without weight decay.
    """
    no_decay_names = no_weight_decay_names(model)
    backbone, classifier, no_decay = [], [], []
    for name, param in model.named_parameters():
        if param.stop_gradient:
            continue
        if name.startswith("classifier."):
            classifier.append(param)
        elif name in no_decay_names:
            no_decay.append(param)
        else:
            backbone.append(param)
    return backbone, classifier, no_decay


def build_optimizer(
    model: paddle.nn.Layer, lr: float, momentum: float, weight_decay: float, iters_per_epoch: int, warmup_epochs: float, step_epochs: int
) -> tuple[paddle.optimizer.Momentum, WarmupStepDecay]:
    """SGD with momentum, L2 weight decay on every parameter except those of blocks marked
    ``no_weight_decay`` (SRM: their group has weight decay 0), classifier at 10x lr.

    Returns (optimizer, scheduler); call ``scheduler.step()`` once per iteration.
    """
    scheduler = WarmupStepDecay(lr, iters_per_epoch, warmup_epochs, step_epochs)
    backbone, classifier, no_decay = split_parameters(model)
    groups: list[dict[str, Any]] = [{"params": backbone}, {"params": classifier, "learning_rate": CLASSIFIER_LR_SCALE}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    optimizer = paddle.optimizer.Momentum(
        learning_rate=scheduler,
        momentum=momentum,
        parameters=groups,
        weight_decay=paddle.regularizer.L2Decay(weight_decay) if weight_decay > 0 else None,
    )
    return optimizer, scheduler


def check_binary_targets(dataset: MultiLabelDataset, ignore_unknown: bool = False) -> None:
    """Training targets must be 0/1, or also -1/99 (unknown labels) with ``ignore_unknown``.

    Args:
        dataset: the training split (targets float32 [N, C]).
        ignore_unknown: accept ``engine.losses.UNKNOWN_VALUES`` (the loss leaves them out).
    Raises:
        UserError: other values, naming them, the file and the fix (a test split, or --ignore_unknown).
    """
    allowed = [0.0, 1.0, *UNKNOWN_VALUES] if ignore_unknown else [0.0, 1.0]
    bad = np.setdiff1d(np.unique(dataset.targets), allowed)
    if not bad.size:
        return
    if ignore_unknown:
        raise UserError(
            f"training labels in {dataset.json_path} must be 0/1, or -1/99 for unknown with --ignore_unknown, but contain "
            f"{bad.tolist()}: is this a test split? Train on the trainval/train JSON"
        )
    hint = (" If -1/99 mark unknown labels (a partially labelled split), pass --ignore_unknown to leave them out of the loss"
            if set(bad.tolist()) <= set(UNKNOWN_VALUES) else "")
    raise UserError(
        f"training labels in {dataset.json_path} must be 0/1 but contain {bad.tolist()}: "
        f"is this a test split? Train on the trainval/train JSON.{hint}"
    )


def _is_main() -> bool:
    return dist.get_rank() == 0


def train_step(
    model: paddle.nn.Layer,
    optimizer: paddle.optimizer.Optimizer,
    scheduler: paddle.optimizer.lr.LRScheduler | None,
    images: paddle.Tensor,
    targets: paddle.Tensor,
    scaler: paddle.amp.GradScaler | None = None,
    loss_fn: LossFn | None = None,
) -> paddle.Tensor:
    """One step of the reference recipe, the one ``Trainer`` runs for every batch.

    The loss (default: BCE-with-logits, mean over the B x C logits), backward,
    ``optimizer.step()``, ``optimizer.clear_grad()``, ``scheduler.step()`` (the schedule
    counts iterations).

    Args:
        model: images -> logits [B, C], in train mode (or its ``paddle.DataParallel`` wrapper).
        optimizer: e.g. the first result of :func:`build_optimizer`.
        scheduler: the optimizer's LR schedule, stepped once per call; None if it has none.
        images: float32 [B, 3, S, S].
        targets: float32 [B, C] of 0/1 (and -1/99 for a loss built with ``ignore_unknown``).
        scaler: a ``paddle.amp.GradScaler`` for mixed precision (the forward pass runs under
            ``paddle.amp.auto_cast``, the loss in float32), or None for float32.
        loss_fn: ``(logits float32 [B, C], targets float32 [B, C]) -> scalar``, e.g.
            ``engine.losses.build_loss(config)``; None: ``F.binary_cross_entropy_with_logits``.
    Returns:
        the step's loss, a float32 scalar tensor (computed before the update).
    """
    criterion = F.binary_cross_entropy_with_logits if loss_fn is None else loss_fn
    if scaler is not None:
        with paddle.amp.auto_cast():
            logits = model(images)
        loss = criterion(logits.astype("float32"), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss = criterion(model(images), targets)
        loss.backward()
        optimizer.step()
    optimizer.clear_grad()
    if scheduler is not None:
        scheduler.step()
    return loss


def claim_save_dir(save_dir: Path) -> RunLock:
    """Make ``save_dir`` a writable folder, take its run lock and drop stale temporaries (rank 0).

    Args:
        save_dir: the run folder (created if missing).
    Returns:
        the held ``RunLock`` (release it when the run ends).
    Raises:
        UserError: the folder is a file, not writable, or locked by another live run (its PID named).
    """
    prepare_output_dir(save_dir, "--save_dir")
    lock = lock_run_dir(save_dir, "--save_dir")
    try:
        for tmp in clean_stale_temps(save_dir):
            log.info("removed %s, left over by an interrupted save", tmp.name)
    except BaseException:
        lock.release()
        raise
    return lock


class Trainer:
    """Runs a training: epochs of :func:`train_step`, evaluation, checkpoints, resume, metrics.

    ``Trainer.from_config(config)`` builds the parts the way train.py does; the constructor
    takes parts built elsewhere::

        trainer = Trainer(config, model=model, train_loader=train_loader, test_loader=test_loader)
        try:
            state = trainer.run()
        finally:
            trainer.close()  # releases the run lock of config.save_dir
    """

    def __init__(
        self,
        config: TrainConfig,
        model: paddle.nn.Layer,
        train_loader: Any,
        test_loader: Any | None = None,
        optimizer: paddle.optimizer.Optimizer | None = None,
        scheduler: paddle.optimizer.lr.LRScheduler | None = None,
        *,
        run_lock: RunLock | None = None,
    ) -> None:
        """Lock ``config.save_dir`` (rank 0), build the optimizer if none is given, resume ``config.resume``.

        Args:
            config: the run's settings (epochs, schedule, logging, evaluation, save_dir, resume).
            model: images [B, 3, S, S] -> logits [B, C], C = ``len(config.classes)``.
            train_loader: yields (images, targets [B, C] of 0/1); ``len()`` is the batches per
                epoch. Optional hooks, used when present: ``train_loader.batch_sampler.set_epoch(e)``
                and ``.start_batch`` (exact mid-epoch resume; otherwise the done batches are
                skipped by iterating), ``train_loader.dataset.set_epoch(e)`` (augmentation seeds).
            test_loader: the test split, unshuffled, whose ``dataset.targets`` [N, C] are its
                labels; None: no evaluation (no best.* files).
            optimizer: default ``build_optimizer`` with the config's recipe; then ``scheduler``
                is the one built with it. Given: ``scheduler`` is its LR schedule (or None).
            scheduler: stepped after every step (see :func:`train_step`).
            run_lock: the lock of ``save_dir`` if the caller already holds it (``from_config``
                takes it before building anything); None: taken here.
        Raises:
            UserError: an unusable or busy save_dir, a class-count mismatch, a bad checkpoint
                to resume. On any error the run lock is released.
        """
        self.config = config
        self.world = dist.get_world_size()
        self.rank = dist.get_rank()
        self.save_dir = Path(config.save_dir)
        self.checkpoint_dir: Path | None = None  # where a whole checkpoint of this run is (for messages)
        self._lock: RunLock | None = run_lock
        self._log_file: logging.Handler | None = None
        self.visual: VisualLog | None = None
        try:
            if self.rank == 0 and self._lock is None:  # before any training work: a bad or busy folder fails at once
                self._lock = claim_save_dir(self.save_dir)
            if self.rank == 0:
                with self._writing("train.log"):
                    self._log_file = attach_log_file(self.save_dir / "train.log")
                if config.visualdl:
                    with self._writing("the VisualDL log"):
                        self.visual = VisualLog.open(self.save_dir / "vdl")
            self._setup(model, train_loader, test_loader, optimizer, scheduler)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: TrainConfig) -> "Trainer":
        """Build what train.py trains with from ``config``, then the Trainer (which resumes).

        In order: lock ``save_dir`` (rank 0: a bad or busy folder fails before any work),
        select ``config.device``, start data parallel, read the splits (``TrainTransform`` /
        ``TestTransform`` with the dataset's normalisation), a ``SeededBatchSampler`` of global
        batches sharded per process, the loaders, seed Paddle and NumPy with ``config.seed``,
        build the model (loading ``config.pretrained`` unless resuming: the checkpoint holds
        every weight) and the reference optimizer + schedule.

        Returns:
            a Trainer holding the run lock; ``run()`` it, then ``close()`` it.
        """
        world, rank = dist.get_world_size(), dist.get_rank()
        lock = claim_save_dir(Path(config.save_dir)) if rank == 0 else None
        try:
            device = select_device(config.device)
            if world > 1:
                dist.init_parallel_env()
            if config.amp and device != "gpu":
                log.info("--amp needs a GPU: training in float32 on the CPU")
            if config.batch_size % world:
                raise UserError(f"--batch_size {config.batch_size} must be divisible by the {world} processes (it is the global batch)")
            defaults = dataset_defaults(config.dataset)
            for flag, path in (("--train_json", config.train_json), ("--test_json", config.test_json)):
                if not Path(path).is_file():
                    raise UserError(f"{flag} {path} not found; prepare the dataset first (see README: Preparing datasets) or pass {flag}")
            classes = list(config.classes)
            img_size = config.model.img_size
            train_set = MultiLabelDataset(config.train_json, defaults.train_transform(img_size), classes=classes, seed=config.seed)
            check_binary_targets(train_set, ignore_unknown=config.ignore_unknown)
            test_set = MultiLabelDataset(config.test_json, defaults.test_transform(img_size), classes=classes)
            if len(train_set) < config.batch_size and len(train_set) < world:
                raise UserError(f"{config.train_json} has only {len(train_set)} images")
            global_sampler = SeededBatchSampler(len(train_set), config.batch_size, shuffle=True, seed=config.seed)
            train_sampler = ShardedBatchSampler(global_sampler, rank, world)
            if len(train_sampler) == 0:
                raise UserError(f"{config.train_json} gives no full batch for {world} processes")
            train_loader = make_loader(train_set, batch_sampler=train_sampler, num_workers=config.num_workers,
                                       use_shared_memory=config.shared_memory)
            test_loader = make_loader(test_set, config.batch_size, shuffle=False, num_workers=config.num_workers,
                                      use_shared_memory=config.shared_memory)
            paddle.seed(config.seed)
            np.random.seed(config.seed)
            model = config.model.build(pretrained=None if config.resume else config.pretrained)
            return cls(config, model, train_loader, test_loader, run_lock=lock)
        except BaseException:
            if lock is not None:
                lock.release()  # idempotent: the constructor may have released it already
            raise

    def close(self) -> None:
        """Close ``save_dir/train.log`` and the VisualDL log, release the run lock of ``save_dir`` (idempotent)."""
        visual, self.visual = getattr(self, "visual", None), None
        if visual is not None:
            visual.close()
        handler, self._log_file = self._log_file, None
        detach_log_file(handler)
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def _setup(self, model: paddle.nn.Layer, train_loader: Any, test_loader: Any | None,
               optimizer: paddle.optimizer.Optimizer | None, scheduler: paddle.optimizer.lr.LRScheduler | None) -> None:
        config = self.config
        if self.world > 1 and not dist.is_initialized():
            dist.init_parallel_env()
        self.device = "gpu" if paddle.get_device().startswith("gpu") else "cpu"
        self.use_amp = bool(config.amp and self.device == "gpu")
        if config.model.num_classes != len(config.classes):
            raise UserError(f"the model has {config.model.num_classes} classes but {len(config.classes)} class names are given")
        self.classes = list(config.classes)
        self.model = model
        self.train_loader, self.test_loader = train_loader, test_loader
        self.train_set = getattr(train_loader, "dataset", None)
        self.train_sampler = getattr(train_loader, "batch_sampler", None)
        self.iters_per_epoch = len(train_loader)
        if self.iters_per_epoch < 1:
            raise UserError("the training loader yields no batch")
        self.test_targets = np.asarray(test_loader.dataset.targets) if test_loader is not None else None
        self.policy = label_policy(config.dataset, bool((self.test_targets == -1).any())) if self.test_targets is not None else None
        self.step_epochs = config.lr_step or dataset_defaults(config.dataset).step_epochs
        self.loss_fn = build_loss(config, world_size=self.world)
        if optimizer is None:
            optimizer, scheduler = build_optimizer(
                model, config.lr, config.momentum, config.weight_decay, self.iters_per_epoch, config.warmup_epochs, self.step_epochs
            )
        self.optimizer, self.scheduler = optimizer, scheduler
        # every process keeps the EMA (the weights are the same on all): resume stays symmetric
        self.ema = ModelEMA(model, config.ema) if config.ema is not None else None
        self.state = TrainState()
        if config.resume:
            self._resume(config.resume)
        if self.device == "cpu":
            switched = use_gemm_convs(self.model, config.gemm_conv_side)
            log.debug("%d convolutions run as one GEMM over the batch on maps up to %d px", switched, config.gemm_conv_side)
        # Every step frees and re-allocates the same activations and gradients; glibc would hand the
        # big blocks back to the kernel and page-fault them in again (~53k faults per ResNet-50 @ 224
        # batch-8 step). Kept in the process instead; peak memory is unchanged.
        retain_freed_memory()
        self.net = paddle.DataParallel(self.model) if self.world > 1 else self.model
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=1024) if self.use_amp else None

    # ------------------------------------------------------------------ resume
    def _resume(self, where: str) -> None:
        stem = find_resume_checkpoint(where)
        params, opt_state, states = load_checkpoint(stem)
        from models.weights import load_state

        load_state(self.model, params, f"{stem}.pdparams", allow_missing_classifier=False)
        self.optimizer.set_state_dict(opt_state)
        set_rng_state(states["rng"])
        self.state = TrainState(
            epoch=int(states["epoch"]), iteration=int(states.get("iteration", 0)),
            best_map=float(states.get("best_map", -1.0)), best_epoch=int(states.get("best_epoch", 0)),
        )
        if states.get("iters_per_epoch") not in (None, self.iters_per_epoch):
            log.warning("batches per epoch changed since the checkpoint (%s -> %d): the LR schedule continues by iteration count",
                        states.get("iters_per_epoch"), self.iters_per_epoch)
        if self.ema is not None:
            self._resume_ema(stem, states)
        self.checkpoint_dir = stem.parent
        log.info("resumed from %s: %d epoch(s) done%s", stem, self.state.epoch,
                 f", {self.state.iteration} batch(es) into epoch {self.state.epoch + 1}" if self.state.iteration else "")

    def _resume_ema(self, stem: Path, states: dict[str, Any]) -> None:
        """Restore the EMA (shadow weights and update count) saved with checkpoint set ``stem``."""
        assert self.ema is not None
        shadow = load_checkpoint_file(stem, EMA_SUFFIX)
        recorded = states.get("ema")
        if shadow is None or not isinstance(recorded, dict):
            raise UserError(
                f"this run averages its weights (--ema {self.ema.decay:g}) but checkpoint {stem}.* has no EMA weights "
                f"({stem.name}{EMA_SUFFIX}): it was saved without --ema, and an average cannot start midway. Resume it "
                f"with the settings it was saved with, or start a new run with --ema and --pretrained {stem}.pdparams")
        if float(recorded.get("decay", -1.0)) != self.ema.decay:
            raise UserError(f"checkpoint {stem}.* averaged its weights with --ema {recorded.get('decay')}, not "
                            f"--ema {self.ema.decay:g}; resume with the run's --ema")
        try:
            self.ema.set_state_dict({"updates": recorded.get("updates"), "shadow": shadow})
        except (ValueError, TypeError, KeyError) as exc:
            raise UserError(f"checkpoint file {stem}{EMA_SUFFIX} does not fit the model: {exc}") from None

    def _states(self) -> dict[str, Any]:
        ema = {"ema": {"decay": self.ema.decay, "updates": self.ema.updates}} if self.ema is not None else {}
        return {
            "epoch": self.state.epoch, "iteration": self.state.iteration, "best_map": self.state.best_map,
            "best_epoch": self.state.best_epoch, "iters_per_epoch": self.iters_per_epoch,
            "config": getattr(self.model, "config", {}), "classes": self.classes, **ema,
        }

    # ------------------------------------------------------------------ run
    def run(self) -> TrainState:
        """Train from ``state.epoch`` to ``config.epochs``; returns the final state.

        Raises:
            TrainingInterrupted: after SIGINT/SIGTERM, once ``interrupted.*`` is saved.
            TrainingDiverged: the loss or the weights became NaN/Inf (the last checkpoint stays).
            UserError: a file of the run could not be written.
        """
        config = self.config
        if _is_main():
            with self._writing("the run files"):
                self._write_run_files()
        if self.state.epoch >= config.epochs:
            log.info("already trained %d of %d epochs: nothing to do", self.state.epoch, config.epochs)
            return self.state
        with _StopRequest() as stop:
            while self.state.epoch < config.epochs:
                epoch = self.state.epoch  # 0-based; logs say epoch + 1 like the reference
                stats = self._train_epoch(epoch, stop)
                if stats is None:  # interrupted inside the epoch
                    return self._save_interrupted(stop.signum)
                self._check_finite_weights(epoch)
                self.state.epoch, self.state.iteration = epoch + 1, 0
                row = {"epoch": epoch + 1, **stats}
                if self.test_loader is not None and ((epoch + 1) % config.eval_interval == 0 or epoch + 1 == config.epochs):
                    row.update(self._evaluate(epoch + 1))
                if _is_main():
                    self._save("last")
                    with self._writing("checkpoint files"):
                        remove_checkpoint(self.save_dir, "interrupted")
                    with self._writing("metrics.jsonl"):
                        self._append_metrics(row)
                    if self.visual is not None:  # one point per epoch; x = epoch
                        self.visual.scalars(epoch + 1, {k: row[k] for k in ("loss", "lr", "images_per_s") if k in row}, prefix="train")
                        self.visual.scalars(epoch + 1, {k: v for k, v in row.items() if k not in ("epoch", "loss", "lr", "images_per_s", "time_s")},
                                            prefix="eval")
                self._log_epoch(row)
                if self._sync_stop(stop.check()):
                    return self._save_interrupted(stop.signum)
        return self.state

    def _train_epoch(self, epoch: int, stop: _StopRequest) -> dict[str, float] | None:
        config = self.config
        if hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(epoch)
        skip = self.state.iteration
        batches: Any = self.train_loader
        if hasattr(self.train_sampler, "start_batch"):
            self.train_sampler.start_batch = skip
        elif skip:  # a loader without the hook: step over the batches already trained
            batches = itertools.islice(iter(self.train_loader), skip, None)
        self.net.train()
        if config.freeze_bn:  # BN uses its running statistics (and does not update them)
            for layer in self.model.sublayers():
                if isinstance(layer, paddle.nn.layer.norm._BatchNormBase):
                    layer.eval()
        n_batches = self.iters_per_epoch
        n_images = len(self.train_set) if self.train_set is not None else n_batches * config.batch_size
        losses: list[float] = []
        seen = 0
        start = time.perf_counter()
        lr = self.optimizer.get_lr()  # reported: the lr of the epoch's last step
        bar = tqdm(total=n_batches, initial=skip, desc=f"epoch {epoch + 1}/{config.epochs}", disable=None if _is_main() else True, leave=False)
        progress = ProgressLog(epoch + 1, n_batches, n_images, config.batch_size, start_batch=skip, print_freq=config.print_freq,
                               heartbeat=_is_main())
        for it, (images, targets) in enumerate(batches, start=skip):
            progress.loaded()
            lr = self.optimizer.get_lr()
            loss = self._step(images, targets)
            value = self._global_mean(loss)
            if not math.isfinite(value):
                bar.close()
                raise TrainingDiverged(
                    f"loss became {value} at epoch {epoch + 1}, batch {it + 1}: training stopped; {self._kept_checkpoint()}; try a lower --lr"
                )
            losses.append(value)
            seen += int(images.shape[0]) * self.world
            progress.finished(int(images.shape[0]) * self.world)
            self.state.iteration = it + 1
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.5f}", img_s=f"{seen / max(elapsed, 1e-9):.1f}")
            bar.update(1)
            if _is_main() and progress.due(it):
                echo(progress.line(it, value, lr))
            if self.visual is not None:  # one point per step; x = global step
                self.visual.scalars(epoch * n_batches + it + 1, {"loss": value, "lr": lr}, prefix="train_step")
            if self._sync_stop(stop.check()) and self.state.iteration < n_batches:
                bar.close()
                return None
        bar.close()
        elapsed = time.perf_counter() - start
        return {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "lr": float(lr),
            "time_s": elapsed,
            "images_per_s": seen / max(elapsed, 1e-9),
        }

    def _check_finite_weights(self, epoch: int) -> None:
        """A finite loss can still leave NaN/Inf weights after the last update: never save those."""
        for name, value in self.model.state_dict().items():
            if value.dtype in (paddle.float32, paddle.float16, paddle.bfloat16, paddle.float64) and not bool(paddle.isfinite(value).all()):
                raise TrainingDiverged(
                    f"weights became NaN/Inf during epoch {epoch + 1} (first: {name}): training stopped; "
                    f"{self._kept_checkpoint()}; try a lower --lr"
                )

    def _kept_checkpoint(self) -> str:
        """What a stopped run leaves to resume from, for error messages."""
        if self.checkpoint_dir is None:
            return "no checkpoint was written yet (the run stopped before the end of its first epoch), so there is nothing to resume"
        return f"the last good checkpoint stays in {self.checkpoint_dir} (resume with --resume {self.checkpoint_dir})"

    def _step(self, images: paddle.Tensor, targets: paddle.Tensor) -> paddle.Tensor:
        loss = train_step(self.net, self.optimizer, self.scheduler, images, targets, self.scaler, loss_fn=self.loss_fn)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def _global_mean(self, loss: paddle.Tensor) -> float:
        """The batch loss over all processes (each holds its share's: a mean, or a sum times the
        process count, see ``engine.losses.build_loss``)."""
        if self.world == 1:
            return float(loss)
        total = loss.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world

    def _sync_stop(self, requested: bool) -> bool:
        if self.world == 1:
            return requested
        flag = paddle.to_tensor([1 if requested else 0], dtype="int32")
        dist.all_reduce(flag)
        return bool(int(flag.numpy()[0]))

    def _evaluate(self, epoch: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if _is_main():
            # with --ema the EMA weights are evaluated and become best.pdparams; the trained
            # weights are put back exactly afterwards
            with self.ema.applied_to(self.model) if self.ema is not None else nullcontext():
                scores = predict_scores(self.model, self.test_loader, desc=f"eval epoch {epoch}")
                result = evaluate(scores, self.test_targets, policy=self.policy, threshold=self.config.threshold, class_names=self.classes)
                metrics = {"map": result.map, "cf1": result.cf1, "of1": result.of1, "cp": result.cp, "cr": result.cr, "op": result.op, "or": result.or_}
                echo(f"Test on Epoch {epoch}\n{format_reference_lines(result)}")
                if result.map > self.state.best_map:
                    self.state.best_map, self.state.best_epoch = float(result.map), epoch
                    ema = {"ema": self.ema.decay} if self.ema is not None else {}
                    with self._writing("best.pdparams and best.json"):
                        atomic_paddle_save(self.model.state_dict(), self.save_dir / "best.pdparams")
                        atomic_write_json(self.save_dir / "best.json", {"epoch": epoch, **metrics, **self._model_info(), **ema},
                                          indent=2)
        if self.world > 1:
            dist.barrier()
        return metrics

    def _save_interrupted(self, signum: int) -> TrainState:
        if _is_main():
            path = self._save("interrupted")
            log.warning("saved %s (epoch %d, batch %d); resume with --resume %s", path, self.state.epoch + 1, self.state.iteration, self.save_dir)
        raise TrainingInterrupted(signum)

    def _save(self, tag: str) -> Path:
        """Save checkpoint set ``tag`` (rank 0), then drop temporaries that killed saves left behind."""
        extra = {EMA_SUFFIX: self.ema.state_dict()["shadow"]} if self.ema is not None else None
        path = save_checkpoint(self.save_dir, tag, self.model, self.optimizer, self._states(), extra_files=extra)
        self.checkpoint_dir = self.save_dir
        clean_stale_temps(self.save_dir)  # safe: this process holds the folder's run lock
        return path

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn an OSError while writing ``what`` into a UserError naming --save_dir and the cause."""
        try:
            yield
        except OSError as exc:
            raise UserError(
                f"cannot write {what} in --save_dir {self.save_dir}: {describe_os_error(exc)}; training stopped and "
                f"{self._kept_checkpoint()}; free disk space or fix the folder"
            ) from None

    # ------------------------------------------------------------------ files
    def _model_info(self) -> dict[str, Any]:
        return {**getattr(self.model, "config", {}), "img_size": self.config.model.img_size, "dataset": self.config.dataset}

    def _write_run_files(self) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        write_class_file(self.save_dir / "classes.txt", self.classes)
        config = self.config.to_run_config()  # keys: train.py's flags, so that --resume can restore every setting
        config.update(world_size=self.world, **self._model_info())
        atomic_write_json(self.save_dir / "config.json", config, indent=2)
        metrics = self.save_dir / "metrics.jsonl"
        if metrics.exists():  # keep only rows of epochs the resumed state has completed
            rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if r.get("epoch", 0) <= self.state.epoch]
            atomic_write_text(metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def _append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.save_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")

    def _log_epoch(self, row: dict[str, Any]) -> None:
        if not _is_main():
            return
        msg = (f"Epoch {row['epoch']} training ends: loss {row['loss']:.5f}, lr {row['lr']:.6f}, "
               f"{row['images_per_s']:.1f} img/s, total {row['time_s']:.2f}s")
        if "map" in row:
            msg += f" | mAP {row['map']:.4f} CF1 {row['cf1']:.4f} OF1 {row['of1']:.4f} (best {self.state.best_map:.4f} @ epoch {self.state.best_epoch})"
        log.info(msg)


def train(config: TrainConfig) -> TrainState:
    """Build a Trainer with ``Trainer.from_config(config)``, run it and release its run lock.

    Returns:
        the final ``TrainState``.
    Raises:
        TrainingInterrupted: after SIGINT/SIGTERM (``interrupted.*`` saved).
        UserError: bad input, a busy or unusable save_dir, divergence.
    """
    trainer = Trainer.from_config(config)
    try:
        return trainer.run()
    except UserError as exc:  # the caller reports it on the console once the run file is closed
        record_in_log_files(f"error: {exc}")
        raise
    except Exception:
        record_in_log_files(traceback.format_exc().rstrip())
        raise
    finally:
        trainer.close()
