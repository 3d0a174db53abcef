"""The plain-PyTorch training backend (MNIST / LeNet-5; image and text classifiers).

Read it top to bottom: :func:`train_classifier` checks the settings and hands the
run to :class:`ClassifierRun`, which seeds, loads the data, builds the model,
optimizer and schedule (:meth:`ClassifierRun.__init__`), trains with per-step
signals (:meth:`~ClassifierRun.train_epoch`), evaluates on the validation set at a
fixed interval (:meth:`~ClassifierRun.record_eval`), on the test set once at the end,
and writes the run's outputs (:func:`uncertainty_lr_study.engine.run.write_outputs`,
the contract shared with the Trainer backend).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uncertainty_lr import UncertaintyLR, gradient_norm, predictive_variance
from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.controls import TraceRecorder, load_control_input
from uncertainty_lr_study.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from uncertainty_lr_study.engine.progress import ProgressLog
from uncertainty_lr_study.engine.run import (
    build_optimizer,
    finite_evaluation,
    finite_lrs,
    lr_columns,
    resolve_device,
    reuse_freed_memory,
    seed_everything,
    summarise_run,
    use_deterministic_kernels,
    write_outputs,
)
from uncertainty_lr_study.engine.steps import SYNC_EVERY_STEPS, _PendingSteps, _Window
from uncertainty_lr_study.metrics import classification_metrics
from uncertainty_lr_study.models import build_model
from uncertainty_lr_study.registry import SCHEDULERS, build_scheduler
from uncertainty_lr_study.tasks import DATA_SETS

log = logging.getLogger(__name__)


EVAL_BATCH_SIZE = 1000

@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy loss (per sample) and the logits ``(N, C)`` on ``x``."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    loss = F.cross_entropy(logits, y, reduction="mean").item()
    model.train()
    return loss, logits

def train_classifier(
    settings: RunSettings | dict[str, Any],
    out_dir: str | Path,
    progress: bool = False,
    keep_checkpoint: bool | None = None,
) -> dict[str, Any]:
    """Train and evaluate one classifier run; write ``metrics.json`` and ``history.csv``.

    Order per step: forward -> loss -> backward -> signals (gradient norm before any
    clipping; predictive variance of the training batch) -> ``observe`` (uncertainty
    schedules only) -> ``optimizer.step()``; ``scheduler.step()`` once per epoch, or
    after every optimizer step for the schedules whose spec says so
    (``ScheduleSpec.interval``: the warmup peers, OneCycle, GreedyLR with the batch
    loss); ``ReduceLROnPlateau`` also gets the validation loss after every
    evaluation. Schedule-Free's optimizer is switched to ``eval()`` for every
    evaluation and back to ``train()`` after it.
    Every arm logs both signals, so their traces can be compared across schedules.
    The signals and the loss stay on the device; the host reads them for several
    steps at once (before a history row, an evaluation or the epoch's end, at least
    every :data:`SYNC_EVERY_STEPS` steps; every step for the per-step schedules) and
    hands them to ``observe`` in step order, so the values observed, logged and
    averaged are those a read after every step would give.
    Evaluation on the validation split at step 0, then every ``eval_every_steps``
    optimizer steps (0: at the end of each epoch) and at the end of training; the
    test split is evaluated once, after the last epoch, with the final weights.

    Divergence: a non-finite training loss, gradient norm or learning rate (before
    an optimizer step or after the schedule's epoch step; a loss or norm found at a
    later read counts from its own step: ``steps`` and ``diverged_at_epoch`` are
    those of that step), or a non-finite validation loss or metric at any
    evaluation, stops the run with ``status: diverged`` and ``diverged_at_epoch``;
    the test split is not evaluated (``test: null``) and the outputs are written as
    for a completed run, every non-finite number in ``metrics.json`` as ``null``.

    Args:
        settings: the run's :class:`~uncertainty_lr_study.config.RunSettings` (or a dict
            of them, validated here before any work).
        out_dir: folder for ``metrics.json`` and ``history.csv``.
        progress: show a tqdm bar per epoch.
        keep_checkpoint: keep ``out_dir/checkpoint/last.pt`` after the run ends;
            default: :func:`keep_checkpoints_requested` (the config's
            ``keep_checkpoints``, passed by the pipeline; false: delete it).

    Checkpoints: at the end of every epoch the whole state (model, optimizer,
    schedule, the random-number states of torch, NumPy, Python and the data order,
    the history so far) is written atomically to ``out_dir/checkpoint/last.pt``,
    beside (not among) the pipeline's declared outputs. A run started again with the
    same settings resumes from it; on the CPU its final metrics equal those of an
    uninterrupted run apart from the timing fields. A checkpoint of other settings is
    ignored (and overwritten).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: invalid settings (before any data is read).
        DataFileError: missing or corrupt data files.
        CheckpointError: an unreadable checkpoint (the message says to delete it).
    """
    if isinstance(settings, dict):
        settings = RunSettings.from_dict(settings)
    if DATA_SETS.get(settings.dataset) is None or DATA_SETS[settings.dataset].load is None:
        raise ConfigError(
            f"dataset {settings.dataset!r} is not one the plain-PyTorch backend reads: "
            f"{', '.join(n for n, d in DATA_SETS.items() if d.load is not None)}"
        )
    run = ClassifierRun(settings, Path(out_dir))
    try:
        run.train(progress)
        return run.finish(keep_checkpoint)
    finally:
        run.progress_log.close()


class ClassifierRun:
    """One run of :func:`train_classifier`: its set-up in ``__init__``, then
    :meth:`train` (epochs of :meth:`train_epoch`) and :meth:`finish`.

    Args:
        s: the run's settings (checked).
        out_dir: the run's folder (its checkpoint in ``out_dir/checkpoint/last.pt``).

    Raises:
        ConfigError: a subset larger than its split, a model that refuses its
            arguments, a control whose source run is missing.
        DataFileError: missing or corrupt data files.
        CheckpointError: an unreadable checkpoint.
    """

    def __init__(self, s: RunSettings, out_dir: Path) -> None:
        self.s, self.out_dir = s, out_dir
        self.device = device = resolve_device(s.device)
        use_deterministic_kernels()
        # a control reads its source run first: a missing source fails before any work
        control = (
            load_control_input(s, out_dir) if SCHEDULERS[s.scheduler].family == "control" else None
        )
        self.t_start = time.perf_counter()
        torch.set_num_threads(s.num_threads)
        torch.set_flush_denormal(True)
        self._load_data()
        # The same seed gives every scheduler the same initial weights and data order:
        # weights come from the global generator seeded here, data order from its own.
        seed_everything(s.seed)
        model_kwargs = {**getattr(self.data, "model_kwargs", {}), **s.model_params}
        try:
            self.model = build_model(s.model, self.data.num_classes, **model_kwargs).to(device)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        self.params = list(self.model.parameters())  # once: parameters() walks the modules
        self.order_gen = torch.Generator().manual_seed(s.seed)
        self.optimizer = build_optimizer(s, self.model, run_steps=s.epochs * self.steps_per_epoch)
        # Schedule-Free keeps two parameter sequences: train() before training steps,
        # eval() before evaluations (its averaged weights are the ones evaluated).
        self.switches_mode = callable(getattr(self.optimizer, "train", None))
        self.per_step = SCHEDULERS[s.scheduler].interval == "step"
        self.scheduler, self.spec = build_scheduler(
            s.scheduler,
            self.optimizer,
            epochs=s.epochs,
            steps_per_epoch=self.steps_per_epoch,
            interval="step" if self.per_step else "epoch",
            scaling=s.scaling,
            reference_epochs=s.reference_epochs,
            control=control,
            **s.scheduler_params,
        )
        self.trace = TraceRecorder()
        self.trace.record(self.optimizer, self.scheduler)
        self.rows: list[dict[str, Any]] = []
        self.window = _Window()
        self.pending = _PendingSteps()
        self.last: tuple[float, float, float] = (math.nan, math.nan, math.nan)
        self.train_seconds = 0.0  # training loop time before this process (resumed runs)
        self.step, self.start_epoch = 0, 0
        self.status, self.diverged_epoch = "completed", None
        self.checkpoint = out_dir / "checkpoint" / "last.pt"
        self.state = load_checkpoint(self.checkpoint, s, device)
        if self.state is not None:
            self._resume(self.state)
        self.progress_log = ProgressLog(
            s.epochs * self.steps_per_epoch, "val_accuracy", done=self.step
        )

    def _load_data(self) -> None:
        """The task's tensors, subsets taken, on the device."""
        s, device = self.s, self.device
        self.data = data = DATA_SETS[s.dataset].load(s)
        x_train, y_train = data.x_train, data.y_train
        if s.train_subset > len(x_train):
            raise ConfigError(
                f"train_subset {s.train_subset} exceeds the {len(x_train):,} training "
                "examples; use 0 for all"
            )
        if s.train_subset:
            x_train, y_train = x_train[: s.train_subset], y_train[: s.train_subset]
        self.x_train, self.y_train = x_train.to(device), y_train.to(device)
        x_val, y_val = data.x_val, data.y_val
        if s.val_subset:
            x_val, y_val = x_val[: s.val_subset], y_val[: s.val_subset]
        self.x_val, self.y_val = x_val.to(device), y_val.to(device)
        self.n_train = len(self.x_train)
        self.steps_per_epoch = math.ceil(self.n_train / s.batch_size)

    def _resume(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of these settings."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.trace.load(state["trace"])
        restore_rng(state["rng"], self.order_gen)
        self.rows, self.step, self.start_epoch = state["rows"], state["step"], state["epoch"]
        self.train_seconds = state["train_seconds"]
        log.info(
            "resumed from %s at epoch %d (step %d)", self.checkpoint, self.start_epoch, self.step
        )

    def seconds(self) -> float:
        """Seconds in the training loop so far, earlier processes of a resumed run included."""
        return self.train_seconds + (time.perf_counter() - self.t_loop)

    def diverge(self, epoch_float: float, what: str) -> None:
        """Stop the run as diverged at ``epoch_float``."""
        self.status, self.diverged_epoch = "diverged", epoch_float
        log.warning("non-finite %s at step %d: run stopped as diverged", what, self.step)

    def read_due(self, i: int) -> bool:
        """Whether the host reads the pending values before step ``i`` of the epoch
        takes its optimizer step: before a history row or an evaluation needs them,
        at the end of the epoch (its evaluation and the schedule's decision), and at
        least every :data:`SYNC_EVERY_STEPS` steps. Per-step schedules read every
        step, as GreedyLR needs each loss, and a divergence found later would leave
        a later rate in the outputs than the one of the step where it happened."""
        s, done = self.s, self.step + 1
        return (
            self.per_step
            or i + 1 == self.steps_per_epoch
            or len(self.pending) >= SYNC_EVERY_STEPS
            or (s.sample_every_steps > 0 and done % s.sample_every_steps == 0)
            or (s.eval_every_steps > 0 and done % s.eval_every_steps == 0)
        )

    def read_pending(self) -> bool:
        """Read the pending steps' values on the host, in step order: each is
        observed by an uncertainty schedule and added to the window, as each step
        did before; the last step's (loss, gradient norm, variance) become
        :attr:`last`. False if a loss or gradient norm is not finite: the run
        diverged at that step, which ``step`` then counts as the steps done, as if it
        had stopped there (the steps taken since change no output: a divergence
        stops the run before any evaluation, checkpoint or schedule step)."""
        for k, at_epoch, loss_f, g_f, v_f in self.pending.read():
            if not (math.isfinite(loss_f) and math.isfinite(g_f)):
                self.step = k
                self.diverge(at_epoch, "loss or gradient")
                return False
            if isinstance(self.scheduler, UncertaintyLR):
                self.scheduler.observe(g_f if self.spec.signal == "grad_norm" else v_f)
            self.window.add(loss_f, g_f, v_f)
            self.last = (loss_f, g_f, v_f)
        return True

    def record_eval(self, epoch_float: float, lr_used: dict[str, float]) -> bool:
        """Evaluate and append the row; False (the run diverged) when it is non-finite."""
        if self.switches_mode:
            self.optimizer.eval()
        val_loss, val_logits = evaluate(self.model, self.x_val, self.y_val)
        if self.switches_mode:
            self.optimizer.train()
        val_acc = (val_logits.argmax(1) == self.y_val).float().mean().item()
        row = {
            "kind": "eval",
            "step": self.step,
            "epoch": epoch_float,
            "seconds": self.seconds(),
            **lr_used,
            **self.window.means(),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
        }
        self.rows.append(row)
        self.progress_log.update(self.step, row)
        log.info(
            "step %d epoch %.2f val_loss %.4f val_accuracy %.4f lr %.3g",
            self.step,
            epoch_float,
            val_loss,
            val_acc,
            lr_used["lr"],
        )
        if not finite_evaluation(row):
            self.diverge(epoch_float, "validation loss or metric")
            return False
        if self.spec.metric == "val_loss" and self.step > 0:
            self.scheduler.step(val_loss)
            self.trace.record(self.optimizer, self.scheduler)
        return True

    def train(self, progress: bool = False) -> None:
        """The training loop: the step-0 evaluation of a fresh run, then every epoch
        left (:meth:`train_epoch`, :meth:`end_epoch`) until the last or a divergence."""
        reuse_freed_memory()  # after the data set's loading, whose temporaries it would keep
        self.t_loop = time.perf_counter()
        if self.switches_mode:
            self.optimizer.train()
        if self.state is None:
            self.record_eval(0.0, lr_columns(self.optimizer))
        self.model.train()
        first = self.start_epoch if self.status == "completed" else self.s.epochs
        for epoch in range(first, self.s.epochs):
            if not (self.train_epoch(epoch, progress) and self.end_epoch(epoch)):
                break
        self.train_seconds += time.perf_counter() - self.t_loop

    def train_epoch(self, epoch: int, progress: bool) -> bool:
        """One epoch's optimizer steps; False when the run diverged."""
        s = self.s
        perm = torch.randperm(self.n_train, generator=self.order_gen).to(self.device)
        bar = tqdm(
            range(self.steps_per_epoch),
            desc=f"epoch {epoch + 1}/{s.epochs}",
            disable=not progress,
            leave=False,
        )
        for i in bar:
            idx = perm[i * s.batch_size : (i + 1) * s.batch_size]
            if not self.train_step(epoch, i, idx):
                return False
            if s.eval_every_steps and self.step % s.eval_every_steps == 0:
                if i + 1 < self.steps_per_epoch:
                    if not self.record_eval(
                        self.step / self.steps_per_epoch, lr_columns(self.optimizer)
                    ):
                        return False
                    self.window = _Window()
        return True

    def train_step(self, epoch: int, i: int, idx: torch.Tensor) -> bool:
        """Step ``i`` of the epoch on the examples ``idx``; False when it diverged."""
        s, optimizer, scheduler = self.s, self.optimizer, self.scheduler
        x, y = self.x_train.index_select(0, idx), self.y_train.index_select(0, idx)
        logits = self.model(x)  # x: (B, 1, 28, 28) images or (B, T) ids; logits (B, C)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.max_grad_norm > 0:  # returns the norm before clipping
            g = torch.nn.utils.clip_grad_norm_(self.params, s.max_grad_norm)
        else:
            g = gradient_norm(self.params)
        v = predictive_variance(logits.detach())
        at = epoch + i / self.steps_per_epoch
        self.pending.add(self.step, at, loss, g, v)  # stays on the device
        lrs_finite = finite_lrs(optimizer)  # host numbers: no synchronisation
        if not lrs_finite or self.read_due(i):
            if not self.read_pending():
                return False
            if not lrs_finite:
                self.diverge(at, "learning rate")
                return False
        loss_f, g_f, v_f = self.last
        optimizer.step()
        self.step += 1
        self.progress_log.update(self.step)
        if self.per_step and self.spec.metric == "train_loss":
            scheduler.step(loss_f)  # GreedyLR
        elif self.per_step:
            scheduler.step()  # per-step schedules; a plateau's warmup tick
        if self.per_step:
            self.trace.record(optimizer, scheduler)
        if s.sample_every_steps and self.step % s.sample_every_steps == 0:
            self.rows.append(
                {
                    "kind": "step",
                    "step": self.step,
                    "epoch": self.step / self.steps_per_epoch,
                    "seconds": self.seconds(),
                    **lr_columns(optimizer),
                    "train_loss": loss_f,
                    "grad_norm": g_f,
                    "predictive_variance": v_f,
                }
            )
        return True

    def end_epoch(self, epoch: int) -> bool:
        """The epoch's evaluation, the schedule's epoch step and the checkpoint;
        False when the run diverged."""
        if not self.record_eval(float(epoch + 1), lr_columns(self.optimizer)):
            return False
        self.window = _Window()
        if not self.per_step:
            self.scheduler.step()
            self.trace.record(self.optimizer, self.scheduler)
        if not finite_lrs(self.optimizer):
            self.diverge(float(epoch + 1), "learning rate")
            return False
        save_checkpoint(
            self.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "settings": self.s.to_dict(),
                "epoch": epoch + 1,
                "step": self.step,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": capture_rng(self.order_gen),
                "rows": self.rows,
                "trace": self.trace.state(),
                "train_seconds": self.seconds(),
            },
        )
        return True

    def finish(self, keep_checkpoint: bool | None) -> dict[str, Any]:
        """The test split once, with the final weights (no selection on test data),
        unless the run diverged; then the outputs. Returns ``metrics.json``'s record."""
        data, device = self.data, self.device
        history = pd.DataFrame(self.rows)
        if self.switches_mode:
            self.optimizer.eval()
        test = None
        if self.status == "completed":
            test_loss, test_logits = evaluate(self.model, data.x_test.to(device), data.y_test.to(device))
            test = {
                "loss": test_loss,
                **classification_metrics(test_logits, data.y_test, data.num_classes),
            }
        metrics = summarise_run(
            self.s,
            history=history,
            status=self.status,
            diverged_epoch=self.diverged_epoch,
            resumed_from_epoch=self.start_epoch if self.state is not None else None,
            test=test,
            steps=self.step,
            steps_per_epoch=self.steps_per_epoch,
            train_examples=self.n_train,
            val_examples=len(self.y_val),
            test_examples=len(data.y_test),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            wall_seconds=time.perf_counter() - self.t_start,
            train_seconds=self.train_seconds,
            device=device,
        )
        write_outputs(self.out_dir, history, self.trace, metrics, self.checkpoint, keep_checkpoint)
        return metrics
