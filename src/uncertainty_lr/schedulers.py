"""The uncertainty-driven scheduler and the registry of every schedule in the study.

``UncertaintyLR`` is a :class:`torch.optim.lr_scheduler.LRScheduler`: it can be used
wherever a torch scheduler can (plain loops, ``SequentialLR`` after a warmup, the
Hugging Face Trainer's ``optimizers=(optimizer, scheduler)``). The baselines of the
registry are torch's own classes, built for a given run length.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    StepLR,
)

log = logging.getLogger(__name__)

Number = float | int


def _per_group(value: Number | Sequence[Number] | None, n_groups: int, name: str) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * n_groups
    values = [float(v) for v in value]
    if len(values) != n_groups:
        raise ValueError(
            f"{name} has {len(values)} entries but the optimizer has {n_groups} parameter "
            f"groups: give one value, or one per group"
        )
    return values


def _as_float(value: float | torch.Tensor) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"observe() takes a scalar signal, got a tensor of shape {tuple(value.shape)}; "
                "reduce it first (e.g. .mean())"
            )
        return float(value.detach().item())
    return float(value)


class UncertaintyLR(LRScheduler):
    r"""Lower the learning rate when the model is uncertain, raise it when it is not.

    At each decision (each call of :meth:`step`) the signal is the mean of the values
    passed to :meth:`observe` since the previous decision, ``s``. For every parameter
    group with current learning rate :math:`\eta`:

    .. math::

        \eta \leftarrow \operatorname{clip}\big(\eta \cdot m(s),\ \eta_{\min},\ \eta_{\max}\big),
        \qquad m(s) = \begin{cases}
            \text{factor} & s > \text{threshold} \\
            \text{increase\_factor} & s < \text{threshold} \\
            1 & s = \text{threshold or nothing observed}
        \end{cases}

    The rule is the one of the study plan (reduce by 0.5 above the threshold, increase
    by a smaller factor below it); the bounds keep it from running away.

    Call order (one decision per epoch, as in the study's PyTorch backend)::

        scheduler = UncertaintyLR(optimizer, threshold=0.1)
        for epoch in range(epochs):
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                scheduler.observe(gradient_norm(model.parameters()))
                optimizer.step()
            scheduler.step()          # decides on this epoch's mean signal

    The unit of a decision interval is whatever the caller steps on: per epoch above,
    per optimizer step if ``step()`` is called after every ``optimizer.step()``.

    Non-finite observed values (NaN, +-inf) never reach the learning rate: they are
    skipped, counted in ``num_nonfinite`` and logged as a warning. A decision with no
    finite value keeps the learning rate.

    ``state_dict()`` holds only numbers and lists, so it loads with
    ``torch.load(..., weights_only=True)``; a restored scheduler continues exactly,
    pending observations included.

    Inside ``SequentialLR`` (after a warmup), the scheduler starts from its base
    learning rate at the milestone and discards the values observed before it.

    Args:
        optimizer: the wrapped optimizer.
        threshold: signal value above which the learning rate is lowered (> 0, in the
            signal's own unit; the study uses 0.1 for the gradient norm and 0.01 for
            the predictive variance).
        factor: multiplier applied when the signal exceeds the threshold, in (0, 1).
            Default 0.5 (study plan).
        increase_factor: multiplier applied when the signal is below the threshold,
            > 1. Default 1.1.
        min_lr: lower bound of the learning rate, one float or one per group. Default:
            ``min_lr_ratio`` x the group's initial learning rate.
        max_lr: upper bound, one float or one per group. Default: the group's initial
            learning rate.
        min_lr_ratio: used when ``min_lr`` is None. Default 1e-3.
        last_epoch: index of the last decision, -1 for a fresh start (torch's
            convention).

    Raises:
        ValueError: on ``threshold <= 0`` or non-finite, ``factor`` outside (0, 1),
            ``increase_factor <= 1``, a bound that is negative, or ``min_lr > max_lr``
            for some group; each message names the argument.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        threshold: float,
        factor: float = 0.5,
        increase_factor: float = 1.1,
        min_lr: Number | Sequence[Number] | None = None,
        max_lr: Number | Sequence[Number] | None = None,
        min_lr_ratio: float = 1e-3,
        last_epoch: int = -1,
    ) -> None:
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1) (it lowers the LR), got {factor!r}")
        if not (math.isfinite(increase_factor) and increase_factor > 1.0):
            raise ValueError(
                f"increase_factor must be > 1 (it raises the LR), got {increase_factor!r}"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}")
        n = len(optimizer.param_groups)
        initial = [
            float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups
        ]
        self.min_lrs = _per_group(min_lr, n, "min_lr") or [lr * min_lr_ratio for lr in initial]
        self.max_lrs = _per_group(max_lr, n, "max_lr") or list(initial)
        for i, (lo, hi) in enumerate(zip(self.min_lrs, self.max_lrs)):
            if lo < 0 or hi < 0:
                raise ValueError(f"min_lr and max_lr must be >= 0, got {lo} and {hi} for group {i}")
            if lo > hi:
                raise ValueError(
                    f"min_lr ({lo}) > max_lr ({hi}) for parameter group {i}: swap them or "
                    "widen the range"
                )
        self.threshold = float(threshold)
        self.factor = float(factor)
        self.increase_factor = float(increase_factor)
        # Observations since the last decision (plain floats: state_dict stays plain).
        self.signal_sum = 0.0
        self.signal_count = 0
        self.num_nonfinite = 0
        self.last_signal = math.nan  # the mean signal the last decision used
        self.num_decreases = 0
        self.num_increases = 0
        super().__init__(optimizer, last_epoch)

    def observe(self, value: float | torch.Tensor) -> None:
        """Record one measurement of the signal (e.g. one batch's gradient norm).

        Args:
            value: a Python number or a one-element tensor. Non-finite values are
                skipped (see the class docstring).

        Raises:
            ValueError: if ``value`` is a tensor with more than one element.
        """
        v = _as_float(value)
        if not math.isfinite(v):
            self.num_nonfinite += 1
            log.warning(
                "UncertaintyLR: skipped a non-finite signal value (%s); %d skipped so far",
                v,
                self.num_nonfinite,
            )
            return
        self.signal_sum += v
        self.signal_count += 1

    def _clip(self, lrs: Sequence[float]) -> list[float]:
        return [min(max(lr, lo), hi) for lr, lo, hi in zip(lrs, self.min_lrs, self.max_lrs)]

    def _consume_signal(self) -> float | None:
        if self.signal_count == 0:
            return None
        mean = self.signal_sum / self.signal_count
        self.signal_sum = 0.0
        self.signal_count = 0
        return mean

    def get_lr(self) -> list[float]:
        """Apply the rule to the signal observed since the last decision.

        Called by :meth:`step` (torch's contract); at the first call (construction, or
        the milestone of a ``SequentialLR``) it returns the base learning rates.
        """
        if self._is_initial or self.last_epoch == 0:
            self.signal_sum, self.signal_count = 0.0, 0
            return self._clip([float(lr) for lr in self.base_lrs])
        current = [float(g["lr"]) for g in self.optimizer.param_groups]
        signal = self._consume_signal()
        if signal is None:
            return current
        self.last_signal = signal
        if signal > self.threshold:
            self.num_decreases += 1
            return self._clip([lr * self.factor for lr in current])
        if signal < self.threshold:
            self.num_increases += 1
            return self._clip([lr * self.increase_factor for lr in current])
        return current


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ScheduleSpec:
    """What the training engine needs to know about a registered schedule.

    Attributes:
        name: registry name, e.g. ``"cosine"``.
        signal: name of the signal to feed with ``observe`` (a key of
            :data:`uncertainty_lr.signals.SIGNALS`), or None for a fixed schedule.
        defaults: the study's hyperparameters; every key may be overridden.
        description: one line for tables and the paper.
    """

    name: str
    signal: str | None
    defaults: Mapping[str, Any]
    description: str


SCHEDULERS: dict[str, ScheduleSpec] = {
    spec.name: spec
    for spec in (
        ScheduleSpec("constant", None, {}, "constant learning rate"),
        ScheduleSpec(
            "step", None, {"step_size": 10, "gamma": 0.1}, "StepLR, x0.1 every 10 epochs"
        ),
        ScheduleSpec(
            "cosine", None, {"eta_min": 0.0}, "CosineAnnealingLR, T_max = run length"
        ),
        ScheduleSpec("exponential", None, {"gamma": 0.95}, "ExponentialLR, x0.95 per epoch"),
        ScheduleSpec(
            "uncertainty-gradnorm",
            "grad_norm",
            {"threshold": 0.1, "factor": 0.5, "increase_factor": 1.1, "min_lr_ratio": 1e-3},
            "UncertaintyLR on the gradient norm (threshold 0.1)",
        ),
        ScheduleSpec(
            "uncertainty-variance",
            "predictive_variance",
            {"threshold": 0.01, "factor": 0.5, "increase_factor": 1.1, "min_lr_ratio": 1e-3},
            "UncertaintyLR on the predictive variance (threshold 0.01)",
        ),
    )
}
"""Every schedule of the study by name. Times in ``defaults`` are in epochs."""

SCALINGS = ("absolute", "fraction")


def build_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    interval: str = "epoch",
    scaling: str = "absolute",
    reference_epochs: int = 50,
    **overrides: Any,
) -> tuple[LRScheduler, ScheduleSpec]:
    """Build a registered schedule for a run of a given length.

    The study's hyperparameters are given per epoch for a ``reference_epochs``-epoch
    run (StepLR step 10 / gamma 0.1, ExponentialLR gamma 0.95, cosine T_max = the
    run). With ``scaling="absolute"`` they are used as they are (StepLR decays
    after 10 epochs whatever the run length); with ``scaling="fraction"`` they are
    scaled to the same fraction of the run: step size ``10 * epochs / reference``
    epochs (at least one unit), exponential gamma ``0.95 ** (reference / epochs)``
    per epoch, so the decay over the whole run is the reference run's. With
    ``interval="step"`` the schedule is stepped once per optimizer step and every
    time is converted to steps (``steps_per_epoch`` steps per epoch); decisions of
    ``UncertaintyLR`` then happen every step.

    Args:
        name: a key of :data:`SCHEDULERS`.
        optimizer: the optimizer to wrap.
        epochs: run length in epochs (>= 1).
        steps_per_epoch: optimizer steps per epoch (>= 1).
        interval: ``"epoch"`` or ``"step"``: how often the caller calls ``step()``.
        scaling: ``"absolute"`` or ``"fraction"`` (see above).
        reference_epochs: the run length the study's values were set for.
        **overrides: hyperparameters replacing the defaults of ``SCHEDULERS[name]``.

    Returns:
        ``(scheduler, spec)``.

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown
            override key, or a run length / interval / scaling that is out of range.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULERS)}")
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"epochs and steps_per_epoch must be >= 1, got {epochs} and {steps_per_epoch}"
        )
    if interval not in ("epoch", "step"):
        raise ValueError(f"interval must be 'epoch' or 'step', got {interval!r}")
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
    spec = SCHEDULERS[name]
    unknown = set(overrides) - set(spec.defaults)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {sorted(unknown)} for scheduler {name!r}; "
            f"valid: {sorted(spec.defaults) or 'none'}"
        )
    hp = {**spec.defaults, **overrides}
    units_per_epoch = steps_per_epoch if interval == "step" else 1
    run_units = epochs * units_per_epoch
    stretch = epochs / reference_epochs if scaling == "fraction" else 1.0

    if name == "constant":
        sched: LRScheduler = ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif name == "step":
        step_size = max(1, round(hp["step_size"] * stretch * units_per_epoch))
        sched = StepLR(optimizer, step_size=step_size, gamma=hp["gamma"])
    elif name == "cosine":
        sched = CosineAnnealingLR(optimizer, T_max=run_units, eta_min=hp["eta_min"])
    elif name == "exponential":
        gamma = hp["gamma"] ** (1.0 / (stretch * units_per_epoch))
        sched = ExponentialLR(optimizer, gamma=gamma)
    else:
        sched = UncertaintyLR(optimizer, **hp)
    return sched, spec
