"""The schedules of the controls: the ``replay`` controls replay a recorded
learning-rate trace, the ``shuffled`` ones feed the uncertainty rule a run's own
decision signals in shuffled order (:mod:`uncertainty_lr_study.controls` reads the
source run)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from uncertainty_lr.scheduler import UncertaintyLR


class ScriptedSignalLR(UncertaintyLR):
    """:class:`UncertaintyLR` that decides on a given sequence of signal values
    instead of what it observes: the ``shuffled`` control.

    Fed the decision signals of a real run in a shuffled order, it takes the same
    kind of decisions (the same rule, thresholds and bounds, as many decreases and
    increases in expectation) at times unrelated to the model's state. If it trains
    as well as the real schedule, the signal's timing is not what helps.

    Args:
        optimizer: the wrapped optimizer.
        script: the signal value of each decision, in order (one signal only; a
            decision after the script is exhausted keeps the rate).
        **kwargs: :class:`UncertaintyLR`'s arguments (single ``threshold``).

    Raises:
        ValueError: a mapping ``threshold`` (several signals), a non-finite script
            value, or :class:`UncertaintyLR`'s own errors.
    """

    def __init__(self, optimizer: Optimizer, script: Sequence[float], **kwargs: Any) -> None:
        values = [float(v) for v in script]
        if not all(math.isfinite(v) for v in values):
            raise ValueError("script values must be finite (they replace observed signals)")
        super().__init__(optimizer, **kwargs)
        if len(self.thresholds) != 1:
            raise ValueError("ScriptedSignalLR takes a single signal (one threshold)")
        self.script = values
        self.position = 0

    def _decision_signals(self) -> dict[str, float]:
        if self.position >= len(self.script):
            return {}
        value = self.script[self.position]
        self.position += 1
        return {next(iter(self.thresholds)): value}


class ReplayLR(LRScheduler):
    """A recorded learning-rate trace replayed as a fixed schedule: the ``replay``
    control.

    Row ``k`` of ``trace`` holds the learning rate of every parameter group after
    the ``k``-th call of ``step()`` (row 0: before the first), as recorded in the
    run being replayed; calls past the end keep the last row. No dependence on this
    run's signal: on the source's seed (``replay-*``) it is the adaptive run again
    (same initial weights, data order and rates); on another seed
    (``replay-xseed-*``) it trains with rates that reacted to a different run, so if
    it trains as well as that seed's adaptive run, the decay the rule produces, not
    its reaction to this model, is what helps.

    Args:
        optimizer: the wrapped optimizer (as many groups as the trace has columns).
        trace: rows of per-group learning rates (>= 0, finite), at least one row.
        last_epoch: torch's convention (-1: a fresh start).

    Raises:
        ValueError: an empty trace, rows of the wrong width, or negative or
            non-finite rates.
    """

    def __init__(
        self, optimizer: Optimizer, trace: Sequence[Sequence[float]], last_epoch: int = -1
    ) -> None:
        rows = [[float(v) for v in row] for row in trace]
        n = len(optimizer.param_groups)
        if not rows:
            raise ValueError("trace is empty: it needs at least the initial learning rates")
        for k, row in enumerate(rows):
            if len(row) != n:
                raise ValueError(
                    f"trace row {k} has {len(row)} learning rates but the optimizer has {n} "
                    "parameter groups: replay a run of the same model and optimizer"
                )
            if not all(math.isfinite(v) and v >= 0 for v in row):
                raise ValueError(f"trace row {k} has a negative or non-finite rate: {row}")
        self.trace = rows
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """The recorded rates of this call (the last row after the trace ends)."""
        return list(self.trace[min(max(self.last_epoch, 0), len(self.trace) - 1)])


@dataclass(frozen=True)
class ControlInput:
    """What a control needs from the run it controls (:mod:`uncertainty_lr_study.controls`).

    Attributes:
        lr_trace: per call of ``step()``, the learning rate of every group (replay).
        signals: the decision signals of the run, in order (shuffled).
        source_params: the scheduler overrides of the run (shuffled: the same rule).
        seed: seeds the shuffle.
    """

    lr_trace: Sequence[Sequence[float]]
    signals: Sequence[float]
    source_params: Mapping[str, Any]
    seed: int
