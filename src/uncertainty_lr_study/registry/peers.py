"""The peers' schedule classes that torch lacks, and the helpers of every peer: a
plateau rule with a warmup, torch's OneCycle and cosine kept at their floor after
the run, the linear warmup put before a schedule, GreedyLR's parameter check, and
the rate an optimizer that sets its own step size trains at."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
)


class WarmupReduceLROnPlateau(ReduceLROnPlateau):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` after a linear warmup.

    ``SequentialLR`` cannot chain a warmup with ``ReduceLROnPlateau`` (it steps its
    schedulers without a metric), so the warmup lives here. Two kinds of call:

    - ``step()`` without a metric: one warmup tick; call it after every optimizer
      step. The ``k``-th of the first ``warmup_steps`` optimizer steps trains at
      ``lr * k / warmup_steps`` (the convention of :func:`build_scheduler`); later
      ticks do nothing.
    - ``step(metric)``: a plateau decision on a validation metric (e.g. the
      validation loss after each evaluation). Decisions during the warmup are
      ignored, so the plateau's patience counts from the end of the warmup.

    Under the Hugging Face Trainer (which steps a ``ReduceLROnPlateau`` only at
    evaluations, with ``metric_for_best_model``) the ticks come from a callback.

    Args:
        optimizer: the wrapped optimizer; its current learning rates are the targets
            of the warmup.
        warmup_steps: optimizer steps of the warmup (>= 0; 0: plain
            ``ReduceLROnPlateau``).
        **kwargs: ``ReduceLROnPlateau``'s arguments (``mode``, ``factor``,
            ``patience`` in decisions, ``threshold``, ``cooldown``, ``min_lr``, ...).

    Raises:
        ValueError: a negative or non-integer ``warmup_steps``, or torch's own
            errors for the plateau arguments.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, **kwargs: Any) -> None:
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(
                f"warmup_steps must be an integer >= 0 (optimizer steps), got {warmup_steps!r}"
            )
        super().__init__(optimizer, **kwargs)
        self.warmup_steps = int(warmup_steps)
        self.warmup_done = 0
        self.target_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self._apply_warmup()

    def _apply_warmup(self) -> None:
        if self.warmup_steps == 0:
            return
        scale = min((self.warmup_done + 1) / self.warmup_steps, 1.0)
        for group, lr in zip(self.optimizer.param_groups, self.target_lrs):
            group["lr"] = lr * scale
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    @property
    def in_warmup(self) -> bool:
        """Whether the warmup is still running (decisions are ignored)."""
        return self.warmup_done < self.warmup_steps

    def step(self, metrics: float | None = None, epoch: int | None = None) -> None:  # type: ignore[override]
        """A warmup tick (``metrics`` None) or a plateau decision (class docstring)."""
        if metrics is None:
            if self.in_warmup:
                self.warmup_done += 1
                self._apply_warmup()
            return
        if self.in_warmup:
            return
        super().step(metrics)


class ClampedOneCycleLR(OneCycleLR):
    """torch's ``OneCycleLR`` that keeps its floor after the cycle.

    Built with ``total_steps`` = the run's optimizer steps, the ``k``-th step trains
    at torch's rate after ``k - 1`` calls of ``step()``, so the run's last step
    trains at the floor ``max_lr / div_factor / final_div_factor``. The engines also
    call ``step()`` after the last optimizer step; there torch would fold the
    cosine back up (and raise one call later): here that call, and any later one,
    keeps the floor. Rates within the cycle are torch's, unchanged.

    Example::

        sched = ClampedOneCycleLR(opt, max_lr=0.01, total_steps=n)
        for _ in range(n):
            loss.backward(); opt.step(); sched.step()  # the n-th call: the floor
    """

    def get_lr(self) -> list[float]:
        """torch's rate in the cycle, the floor (each group's ``min_lr``) after it."""
        if self.last_epoch >= self.total_steps:
            return [float(g["min_lr"]) for g in self.optimizer.param_groups]
        return super().get_lr()


class ClampedCosineAnnealingLR(CosineAnnealingLR):
    """torch's ``CosineAnnealingLR`` that stays at ``eta_min`` after ``T_max`` calls
    of ``step()`` (torch's restarts the cosine: the rate would rise again).

    Rates up to ``T_max`` calls are torch's, unchanged; the ``T_max``-th call (after
    the last optimizer step of a run of ``T_max`` steps) reaches ``eta_min``.
    """

    def get_lr(self) -> list[float]:
        """torch's cosine up to ``T_max`` calls, ``eta_min`` after."""
        if self.last_epoch >= self.T_max:
            return [float(self.eta_min) for _ in self.optimizer.param_groups]
        return super().get_lr()


def with_warmup(optimizer: Optimizer, sched: LRScheduler, warmup_steps: int) -> LRScheduler:
    """``sched`` after a linear warmup of ``warmup_steps`` units (none if 0)."""
    if not warmup_steps:
        return sched
    # the k-th call (k = 1..warmup_steps) trains at lr * k / warmup_steps
    warmup = LinearLR(
        optimizer,
        start_factor=1.0 / warmup_steps,
        end_factor=1.0,
        total_iters=max(warmup_steps - 1, 1),
    )
    return SequentialLR(optimizer, [warmup, sched], milestones=[warmup_steps])


def check_greedy(hp: Mapping[str, Any]) -> None:
    """Refuse GreedyLR parameters that it accepts but that fail or make no sense
    mid-run (``factor`` 0 divides by zero at the first increase, ``window_size`` < 1
    at the first step), naming the parameter."""

    def number(v: Any) -> bool:
        return type(v) is not bool and isinstance(v, (int, float)) and math.isfinite(v)

    def whole(v: Any) -> bool:
        return number(v) and v == int(v)

    factor, lo, hi = hp["factor"], hp["min_lr_ratio"], hp["max_lr_ratio"]
    problems = []
    if not (number(factor) and 0 < factor < 1):
        problems.append(f"factor must lie in (0, 1), got {factor!r}")
    if not (whole(hp["patience"]) and hp["patience"] >= 0):
        problems.append(f"patience must be an integer >= 0 (steps), got {hp['patience']!r}")
    if not (whole(hp["window_size"]) and hp["window_size"] >= 1):
        problems.append(f"window_size must be an integer >= 1 (steps), got {hp['window_size']!r}")
    if not isinstance(hp["smooth"], bool):
        problems.append(f"smooth must be true or false, got {hp['smooth']!r}")
    if not (number(lo) and number(hi) and 0 <= lo <= hi and hi > 0):
        problems.append(
            f"min_lr_ratio and max_lr_ratio must satisfy 0 <= min_lr_ratio <= max_lr_ratio, "
            f"max_lr_ratio > 0, got {lo!r} and {hi!r}"
        )
    if problems:
        raise ValueError("scheduler 'greedy': " + "; ".join(problems))


def effective_lrs(optimizer: Optimizer) -> list[float]:
    """The step size each parameter group trains at now, for logging.

    The group's ``lr``, except for Prodigy (``lr * d``, its estimated step size)
    and Schedule-Free (``lr * min(1, (k + 1) / warmup_steps)``: the rate of its
    next step, its internal warmup applied).
    """
    out = []
    for group in optimizer.param_groups:
        lr = float(group["lr"])
        if "d" in group:
            lr *= float(group["d"])
        elif "scheduled_lr" in group and group.get("warmup_steps"):
            lr *= min(1.0, (int(group["k"]) + 1) / int(group["warmup_steps"]))
        out.append(lr)
    return out


def require(spec: Any) -> Any:
    """Import the package ``spec`` needs, or say how to install it."""
    if spec.requires is None:
        return None
    try:
        return importlib.import_module(spec.requires)
    except ImportError as err:
        raise ImportError(
            f"schedule {spec.name!r} needs the `{spec.requires}` package: "
            f'pip install "uncertainty-lr[peers]" (or pip install {spec.requires})'
        ) from err
