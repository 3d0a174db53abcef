"""The Hugging Face ``Trainer`` backend: BERT-family models on IMDB (sequence
classification) and SQuAD v1.1 (extractive question answering).

Read it top to bottom: :func:`train_transformer` resolves the pretrained checkpoint
(offline first, :mod:`uncertainty_lr_study.pretrained`), builds the task's data with
the checkpoint's own tokenizer (:mod:`uncertainty_lr_study.engine.hf_tasks`), builds
``AdamW`` and the run's schedule for the run's length in optimizer steps (with a
linear warmup, then the registry's schedule: the design's "time units" rule), and
trains with ``Trainer(optimizers=(optimizer, scheduler))``, so that no other schedule
runs beside it. :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback` measures
the gradient norm (before clipping) and the predictive variance of every optimizer
step and feeds an uncertainty schedule, which decides once per evaluation interval;
:class:`RunRecorder` writes the history rows. The run writes the same
``metrics.json`` and ``history.csv`` as the plain-PyTorch backend
(:func:`uncertainty_lr_study.engine.run.summarise_run`).

Needs the ``hf`` extra (``transformers``, ``accelerate``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import transformers
from torch.utils.data import SequentialSampler
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from uncertainty_lr import uncertainty_part
from uncertainty_lr.integrations.hf import (
    MetricFedSchedule,
    UncertaintyCallback,
    ValidationLossFeed,
)
from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.controls import TraceRecorder, load_control_input
from uncertainty_lr_study.data import squad_windows
from uncertainty_lr_study.distributed import is_main_process
from uncertainty_lr_study.engine.checkpoint import keep_checkpoints_requested
from uncertainty_lr_study.engine.hf_tasks import TASK_BUILDERS, TransformerTask
from uncertainty_lr_study.engine.progress import ProgressLog
from uncertainty_lr_study.engine.recorder import HISTORY_FILE, RunRecorder, _row_from_json
from uncertainty_lr_study.engine.run import (
    HISTORY_COLUMNS,
    build_optimizer,
    resolve_device,
    seed_everything,
    summarise_run,
    use_deterministic_kernels,
)
from uncertainty_lr_study.io import atomic_write_csv, atomic_write_json
from uncertainty_lr_study.precision import choose_precision
from uncertainty_lr_study.pretrained import resolve_pretrained
from uncertainty_lr_study.registry import SCHEDULERS, build_scheduler
from uncertainty_lr_study.tasks import DATA_SETS

log = logging.getLogger(__name__)

TRAINER_EVAL_BATCH_SIZE = 64
"""The Trainer's evaluation batch (per device; ``benchmarks/bench_trainer.py``: no
other size or padding beat it beyond noise on the CPU)."""


class OrderedEvalTrainer(Trainer):
    """``Trainer`` whose evaluation always reads the data in order.

    transformers 5.x evaluates with the length-grouped sampler too when
    ``train_sampling_strategy="group_by_length"``; question-answering
    post-processing needs the windows in order
    (:func:`uncertainty_lr_study.engine.hf_tasks._check_window_order`).
    """

    def _get_eval_sampler(self, eval_dataset):  # noqa: ANN001, ANN202
        if eval_dataset is None or self.args.world_size > 1:
            return None  # as Trainer's: accelerate shards the data in order
        return SequentialSampler(eval_dataset)


def _last_checkpoint(folder: Path, settings: RunSettings) -> tuple[str | None, dict | None]:
    """The newest Trainer checkpoint under ``folder`` with our history file, if it
    belongs to these settings (else the folder is cleared)."""
    if not folder.is_dir():
        return None, None
    last = get_last_checkpoint(str(folder))
    saved = Path(folder / "settings.json")
    same = saved.is_file() and settings.same_run(json.loads(saved.read_text()))
    if last is None or not same or not (Path(last) / HISTORY_FILE).is_file():
        if is_main_process():  # the other ranks of a distributed run only read
            shutil.rmtree(folder, ignore_errors=True)
        return None, None
    return last, json.loads((Path(last) / HISTORY_FILE).read_text())


def train_transformer(
    settings: RunSettings | dict[str, Any],
    out_dir: str | Path,
    progress: bool = False,
    keep_checkpoint: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune a pretrained model on IMDB (sequence classification) or SQuAD v1.1
    (extractive QA) through ``Trainer`` (the task's data:
    :data:`~uncertainty_lr_study.engine.hf_tasks.TASK_BUILDERS`).

    Evaluation on the validation split (or its first ``val_subset`` examples) at step
    0 and every ``eval_every_steps`` optimizer steps (0: once per epoch), with a
    Trainer checkpoint after each evaluation in ``out_dir/checkpoint/`` (outside the
    pipeline's declared outputs); a run started again with the same settings resumes
    from the newest one. The test split (or its stratified ``test_subset``) is
    evaluated once, with the final weights. SQuAD steps count windows: a question
    whose context is longer than one window gives several training examples.

    Divergence: a non-finite training loss, gradient norm or learning rate, or a
    non-finite validation loss or metric at any evaluation, stops the run with
    ``status: diverged`` (no checkpoint of that step, no test evaluation); the
    outputs are written all the same, every non-finite number in
    ``metrics.json`` as ``null``.

    Precision: the settings' ``precision`` resolved for the device
    (:func:`uncertainty_lr_study.precision.choose_precision`; ``auto``: bfloat16 autocast
    where native), recorded in ``metrics.json`` as ``precision`` (used),
    ``precision_requested`` and ``precision_reason``. Progress: a log line at most
    every :func:`~uncertainty_lr_study.engine.progress.progress_interval` seconds
    (:class:`~uncertainty_lr_study.engine.progress.ProgressLog`).

    Args:
        settings: the run's settings (``model="transformer"``, ``pretrained`` a hub id
            or folder, ``optimizer="adamw"`` as in the study plan).
        out_dir: folder for ``metrics.json`` and ``history.csv``.
        progress: show the Trainer's progress bar.
        keep_checkpoint: keep ``out_dir/checkpoint/`` after the run; default:
            :func:`~uncertainty_lr_study.engine.checkpoint.keep_checkpoints_requested`
            (the config's ``keep_checkpoints``, passed by the pipeline; false: delete it).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: invalid settings (before any data is read).
        PretrainedError: offline and no local copy of the checkpoint.
        DataFileError: missing or corrupt data files.
    """
    if isinstance(settings, dict):
        settings = RunSettings.from_dict(settings)
    if settings.dataset not in TASK_BUILDERS:
        raise ConfigError(
            f"the transformer backend reads {', '.join(TASK_BUILDERS)}, got {settings.dataset!r}"
        )
    run = TrainerRun(settings, Path(out_dir), progress)
    try:
        run.train()
        return run.finish(keep_checkpoint)
    finally:
        run.recorder.progress_log.close()


@dataclass
class _Schedule:
    """The run's optimizer, schedule and the callbacks that feed it."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    signals: UncertaintyCallback
    callbacks: list[Any]
    warmup: int
    eval_steps: int


class TrainerRun:
    """One run of :func:`train_transformer`: its set-up in ``__init__`` (checkpoint,
    data, model, schedule, resume state, the Trainer), then :meth:`train` and
    :meth:`finish`.

    Args:
        s: the run's settings (checked).
        out_dir: the run's folder (its Trainer checkpoints in ``out_dir/checkpoint/``).
        progress: show the Trainer's progress bar.

    Raises:
        ConfigError: invalid settings; a batch not divisible by the processes.
        PretrainedError: offline and no local copy of the checkpoint.
        DataFileError: missing or corrupt data files.
    """

    def __init__(self, s: RunSettings, out_dir: Path, progress: bool = False) -> None:
        self.s, self.out_dir, self.progress = s, out_dir, progress
        if s.offline:
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["HF_DATASETS_OFFLINE"] = "1"
        self.device = resolve_device(s.device)
        use_deterministic_kernels()
        # a control reads its source run first: a missing source fails before any work
        control = (
            load_control_input(s, out_dir) if SCHEDULERS[s.scheduler].family == "control" else None
        )
        self.path = resolve_pretrained(s.pretrained, offline=s.offline)
        self.t_start = time.perf_counter()
        torch.set_num_threads(s.num_threads)
        self.precision, self.precision_reason = choose_precision(s.precision, self.device)
        log.info("precision %s (%s)", self.precision, self.precision_reason)
        transformers.logging.set_verbosity_warning()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        default_length = squad_windows.DEFAULT_MAX_LENGTH if s.dataset == "squad" else 512
        self.max_length = s.max_length or min(int(self.tokenizer.model_max_length), default_length)
        self.task: TransformerTask = TASK_BUILDERS[s.dataset](s, self.tokenizer, self.max_length)
        # Same seed, same classification-head initialisation and data order in every arm.
        seed_everything(s.seed)
        self.model = self.task.model_class.from_pretrained(self.path, **self.task.model_kwargs)
        self.n_train = len(self.task.train_set)
        self.steps_per_epoch = math.ceil(self.n_train / s.batch_size)
        self.total_steps = s.epochs * self.steps_per_epoch
        self.sched = self._schedule(control)
        self.ckpt_dir = out_dir / "checkpoint"
        self._resume_state()
        self.world = int(os.environ.get("WORLD_SIZE", "1"))  # > 1 in distributed.launch workers
        if s.batch_size % self.world:
            raise ConfigError(
                f"batch_size {s.batch_size} is not divisible by {self.world} processes"
            )
        self.trainer = OrderedEvalTrainer(
            model=self.model,
            args=self._arguments(),
            train_dataset=self.task.train_set,
            eval_dataset=self.task.val_set,
            data_collator=DataCollatorWithPadding(self.tokenizer),
            compute_metrics=self.task.compute_metrics,
            optimizers=(self.sched.optimizer, self.sched.scheduler),
            callbacks=[*self.sched.callbacks, self.recorder],
        )

    def _schedule(self, control: Any) -> _Schedule:
        """``AdamW`` (or a peer's optimizer), the registry's schedule after the task's
        warmup, deciding once per evaluation interval, and its feeds."""
        s = self.s
        warmup = s.warmup_steps or math.ceil(s.warmup_ratio * self.total_steps)
        eval_steps = s.eval_every_steps or self.steps_per_epoch
        optimizer = build_optimizer(s, self.model, run_steps=self.total_steps, warmup_steps=warmup)
        try:
            scheduler, spec = build_scheduler(
                s.scheduler,
                optimizer,
                epochs=s.epochs,
                steps_per_epoch=self.steps_per_epoch,
                interval="step",
                scaling=s.scaling,
                reference_epochs=s.reference_epochs,
                warmup_steps=warmup,
                decision_interval=eval_steps,
                control=control,
                **s.scheduler_params,
            )
        except ValueError as err:
            raise ConfigError(f"scheduler {s.scheduler!r}: {err}") from err
        signals = UncertaintyCallback(
            uncertainty_part(scheduler),
            signal=spec.signal or "grad_norm",
            clip_grad_norm=s.max_grad_norm or None,
            variance_fn=self.task.variance_fn,
        )
        callbacks: list[Any] = [signals]
        if spec.metric is not None:  # ReduceLROnPlateau, GreedyLR: fed by callbacks
            scheduler = MetricFedSchedule(scheduler, spec.metric, loss_source=signals.last_loss)
            callbacks.append(ValidationLossFeed(scheduler))
        return _Schedule(optimizer, scheduler, signals, callbacks, warmup, eval_steps)

    def _resume_state(self) -> None:
        """The newest checkpoint of these settings, if any: its history rows, time
        and trace; the recorder that continues them."""
        s = self.s
        self.resume_from, self.saved = _last_checkpoint(self.ckpt_dir, s)
        saved = self.saved
        self.rows: list[dict[str, Any]] = (
            [_row_from_json(r) for r in saved["rows"]] if saved else []
        )
        seconds_before = float(saved["seconds"]) if saved else 0.0
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if is_main_process():
            atomic_write_json(self.ckpt_dir / "settings.json", s.to_dict())
        self.trace = TraceRecorder()
        if saved and saved.get("trace"):
            rows = [_row_from_json(r) for r in saved["trace"]["rows"]]
            self.trace.load({**saved["trace"], "rows": rows})
        else:
            self.trace.record(self.sched.optimizer, self.sched.scheduler)
        progress_log = ProgressLog(
            self.total_steps,
            f"val_{DATA_SETS[s.dataset].primary_metric}",
            done=int(self.rows[-1]["step"]) if self.rows else 0,
            interval=None if is_main_process() else math.inf,  # the main process logs
        )
        self.recorder = RunRecorder(
            self.sched.signals,
            self.steps_per_epoch,
            self.rows,
            seconds_before,
            DATA_SETS[s.dataset].val_metrics,
            self.trace,
            self.sched.scheduler,
            progress_log,
        )

    def _arguments(self) -> TrainingArguments:
        """The Trainer's arguments: the global batch split over the processes, an
        evaluation and a checkpoint every ``eval_steps``, clipping left to the
        signals' callback, the run's seed and precision."""
        s, world, device = self.s, self.world, self.device
        eval_steps = self.sched.eval_steps
        return TrainingArguments(
            output_dir=str(self.ckpt_dir),
            per_device_train_batch_size=s.batch_size // world,  # the global batch stays
            ddp_backend="gloo" if device.type == "cpu" and world > 1 else None,
            per_device_eval_batch_size=TRAINER_EVAL_BATCH_SIZE,
            num_train_epochs=s.epochs,
            learning_rate=s.lr,  # informational: the optimizer passed in is what trains
            weight_decay=s.weight_decay,
            max_grad_norm=0.0,  # clipping happens in the callback, after measuring the norm
            eval_strategy="steps",
            eval_steps=eval_steps,
            save_strategy="steps",
            save_steps=eval_steps,
            save_total_limit=1,
            logging_strategy="steps" if s.sample_every_steps else "no",
            logging_steps=s.sample_every_steps or 1,
            logging_nan_inf_filter=False,
            seed=s.seed,
            data_seed=s.seed,
            use_cpu=device.type == "cpu",
            bf16=self.precision == "bf16",
            train_sampling_strategy="group_by_length" if s.group_by_length else "random",
            dataloader_num_workers=0,
            report_to="none",
            disable_tqdm=not self.progress,
        )

    def train(self) -> None:
        """The step-0 evaluation of a fresh run, training (resumed where a checkpoint
        was found) unless that evaluation diverged, and the final weights'
        validation row where the last evaluation was not at the last step."""
        trainer, recorder, rows = self.trainer, self.recorder, self.rows
        if self.resume_from is None:
            trainer.evaluate()  # the step-0 row of the learning curve
        else:
            log.info("resuming from %s", self.resume_from)
        if recorder.diverged_epoch is None:  # a non-finite step-0 evaluation trains no step
            trainer.train(resume_from_checkpoint=self.resume_from)
        self.status = "diverged" if recorder.diverged_epoch is not None else "completed"
        step = trainer.state.global_step
        last = rows[-1] if rows else None
        if self.status == "completed" and (last is None or last["kind"] != "eval" or last["step"] != step):
            trainer.evaluate()  # the final weights' validation row
        self.train_seconds = recorder.seconds()

    def finish(self, keep_checkpoint: bool | None) -> dict[str, Any]:
        """The test split once with the final weights (unless the run diverged), the
        ``metrics.json`` record, and the outputs (main process only)."""
        task, trainer = self.task, self.trainer
        test = None
        if self.status == "completed":
            trainer.compute_metrics = None  # the validation set's; the test set has its own
            test = task.test_metrics(trainer.predict(task.test_set))
        history = pd.DataFrame(self.rows)
        first = [c for c in HISTORY_COLUMNS if c in history.columns]
        history = history[first + [c for c in history.columns if c not in first]]
        metrics = self._metrics(history, test)
        if is_main_process():
            atomic_write_csv(self.out_dir / "history.csv", history)
            self.trace.write(self.out_dir)
            atomic_write_json(self.out_dir / "metrics.json", metrics)
            if not (keep_checkpoints_requested() if keep_checkpoint is None else keep_checkpoint):
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
        return metrics

    def _metrics(self, history: pd.DataFrame, test: dict[str, Any] | None) -> dict[str, Any]:
        """``metrics.json``'s record: the shared one, plus the Trainer's facts."""
        saved = self.saved
        metrics = summarise_run(
            self.s,
            history=history,
            status=self.status,
            diverged_epoch=self.recorder.diverged_epoch,
            resumed_from_epoch=(
                float(saved["rows"][-1]["epoch"]) if saved and saved["rows"] else None
            ),
            test=test,
            steps=self.trainer.state.global_step,
            steps_per_epoch=self.steps_per_epoch,
            train_examples=self.n_train,
            val_examples=len(self.task.val_set),
            test_examples=len(self.task.test_set),
            optimizer=self.sched.optimizer,
            scheduler=self.sched.scheduler,
            wall_seconds=time.perf_counter() - self.t_start,
            train_seconds=self.train_seconds,
            device=self.device,
            precision=self.precision,
        )
        metrics["precision_reason"] = self.precision_reason
        metrics["warmup_steps"] = self.sched.warmup
        metrics["max_length"] = self.max_length
        metrics["pretrained_path"] = self.path
        metrics["versions"]["transformers"] = transformers.__version__
        metrics["num_processes"] = self.world
        metrics.update(self.task.info)
        if self.world > 1 and self.device.type == "cuda":
            metrics["device_hours"] *= self.world  # one GPU per process
        return metrics
