"""The Trainer backend's history rows (:class:`RunRecorder`, a ``TrainerCallback``)
in the plain backend's format, saved into every Trainer checkpoint so that a
resumed run's history covers the whole run."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

from uncertainty_lr_study.controls import TraceRecorder
from uncertainty_lr_study.distributed import is_main_process
from uncertainty_lr_study.engine.progress import ProgressLog
from uncertainty_lr_study.engine.run import finite_evaluation, finite_lrs
from uncertainty_lr_study.io import atomic_write_json
from uncertainty_lr_study.registry import effective_lrs

log = logging.getLogger(__name__)

HISTORY_FILE = "run_history.json"
"""Written into each Trainer checkpoint folder: the history rows so far, so that a
resumed run's ``history.csv`` and time-to-target cover the whole run."""


def _row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A history row read back from JSON: None (how
    :func:`~uncertainty_lr_study.io.atomic_write_json` writes NaN) back to NaN."""
    return {k: (math.nan if v is None else v) for k, v in row.items()}


class RunRecorder(TrainerCallback):
    """History rows of a Trainer run, in the plain backend's format; stops the run on
    a non-finite training loss, gradient norm or learning rate, or a non-finite
    validation loss or metric (status ``diverged``).

    Args:
        signals: the run's :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback`
            (its last gradient norm is checked after every step).
        steps_per_epoch: optimizer steps per epoch (rows' ``epoch``).
        rows: the history rows, appended to (a resumed run's earlier rows first).
        seconds_before: training seconds of earlier processes (a resumed run).
        metric_names: the validation metrics, e.g. ``("accuracy",)``.
        trace: records the schedule's rates after every optimizer step.
        scheduler: the schedule the Trainer steps (for the trace).
        progress_log: logs the run's progress.
    """

    def __init__(
        self,
        signals: Any,
        steps_per_epoch: int,
        rows: list[dict],
        seconds_before: float,
        metric_names: Sequence[str] = ("accuracy",),
        trace: TraceRecorder | None = None,
        scheduler: Any = None,
        progress_log: ProgressLog | None = None,
    ) -> None:
        self.signals, self.steps_per_epoch, self.rows = signals, steps_per_epoch, rows
        self.seconds_before, self.metric_names = seconds_before, metric_names
        self.trace, self.scheduler, self.progress_log = trace, scheduler, progress_log
        self.t0 = time.perf_counter()
        self.window: list[dict[str, float]] = []
        self.diverged_epoch: float | None = None
        self.lr_used: dict[str, float] = {}

    def seconds(self) -> float:
        """Training seconds so far, earlier processes of a resumed run included."""
        return self.seconds_before + time.perf_counter() - self.t0

    @staticmethod
    def _lr(optimizer: Any) -> dict[str, float]:
        return {"lr": effective_lrs(optimizer)[0]} if optimizer else {}

    def _diverge(self, state: Any, control: Any, what: str) -> None:
        if self.diverged_epoch is None:
            self.diverged_epoch = state.global_step / self.steps_per_epoch
            log.warning(
                "non-finite %s at step %d: run stopped as diverged", what, state.global_step
            )
        control.should_training_stop = True
        control.should_save = False
        control.should_evaluate = False

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        self.lr_used = self._lr(optimizer)  # the Trainer steps the schedule after

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if self.trace is not None and optimizer is not None:
            self.trace.record(optimizer, self.scheduler)  # after the Trainer's scheduler.step()
        if self.progress_log is not None:
            self.progress_log.update(state.global_step)
        if not math.isfinite(self.signals.last_values.get("grad_norm", 0.0)):
            self._diverge(state, control, "gradient norm")
        elif optimizer is not None and not finite_lrs(optimizer):
            self._diverge(state, control, "learning rate")

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        entry = state.log_history[-1] if state.log_history else {}
        row = {
            "train_loss": float(logs["loss"]),
            "grad_norm": float(entry.get("signal/grad_norm", math.nan)),
            "predictive_variance": float(entry.get("signal/predictive_variance", math.nan)),
        }
        if not math.isfinite(row["train_loss"]):
            self._diverge(state, control, "training loss")
        self.window.append(row)
        self.rows.append(
            {
                "kind": "step",
                "step": state.global_step,
                "epoch": state.global_step / self.steps_per_epoch,
                "seconds": self.seconds(),
                **self.lr_used,  # the rate this step trained at
                **row,
            }
        )

    def on_evaluate(self, args, state, control, metrics=None, optimizer=None, **kwargs):
        means = (
            pd.DataFrame(self.window).mean().to_dict()
            if self.window
            else dict.fromkeys(("train_loss", "grad_norm", "predictive_variance"), math.nan)
        )
        self.window = []
        row = {
            "kind": "eval",
            "step": state.global_step,
            "epoch": state.global_step / self.steps_per_epoch,
            "seconds": self.seconds(),
            **self._lr(optimizer),
            **means,
            "val_loss": float(metrics["eval_loss"]),
            **{f"val_{m}": float(metrics[f"eval_{m}"]) for m in self.metric_names},
        }
        self.rows.append(row)
        if self.progress_log is not None:
            self.progress_log.update(state.global_step, row)
        if not finite_evaluation(row):
            self._diverge(state, control, "validation loss or metric")

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and is_main_process():
            atomic_write_json(
                folder / HISTORY_FILE,
                {  # NaN written as null, read back by _row_from_json
                    "rows": self.rows,
                    "seconds": self.seconds(),
                    "trace": None if self.trace is None else self.trace.state(),
                },
            )
