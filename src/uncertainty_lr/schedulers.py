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
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

log = logging.getLogger(__name__)

Number = float | int


def _per_group(
    value: Number | Sequence[Number] | None, n_groups: int, name: str
) -> list[float] | None:
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
    if isinstance(value, bool) or not isinstance(value, (int, float, torch.Tensor)):
        raise TypeError(
            f"observe() takes a number or a one-element tensor, got {type(value).__name__} "
            f"{value!r}"
        )
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"observe() takes a scalar signal, got a tensor of shape {tuple(value.shape)}; "
                "reduce it first (e.g. .mean())"
            )
        return float(value.detach().item())
    return float(value)


SINGLE = "signal"
"""Name under which a single (unnamed) signal is kept."""


def _check_positive_mapping(value: Number | Mapping[str, Number], name: str) -> dict[str, float]:
    items = dict(value) if isinstance(value, Mapping) else {SINGLE: value}
    if not items:
        raise ValueError(f"{name} must name at least one signal")
    out = {}
    for key, v in items.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} must be a number, got {v!r} for {key!r}")
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r} for {key!r}")
        out[str(key)] = v
    return out


def _distributed_world() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class UncertaintyLR(LRScheduler):
    r"""Lower the learning rate when the model is uncertain, raise it when it is not.

    At each decision (each call of :meth:`step`) the signal ``s`` is, by default, the
    mean of the values passed to :meth:`observe` since the previous decision (no
    memory across decisions). For every parameter group with current learning rate
    :math:`\eta`:

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

    The unit of the decision interval is whatever the caller steps on: per epoch above,
    per optimizer step if ``step()`` follows every ``optimizer.step()`` (the
    registry's ``interval`` says which).

    Options:

    - ``smoothing="ema"``: the decision uses an exponential moving average of all
      values observed so far, with half-life ``ema_half_life`` observations (weight
      ``1 - 0.5 ** (1 / half_life)`` on each new value; the first value starts it).
    - ``threshold_mode="rel"``: the signal is divided by its own running scale before
      it is compared with ``threshold`` (e.g. ``threshold=1.2``: lower the rate when
      the signal is 20% above its usual level). The scale is an EMA of the past
      decisions' signals with half-life ``scale_half_life`` decisions; the first
      decision only sets the scale and keeps the rate. One setting then works for
      models whose gradient norms differ by orders of magnitude.
    - ``cooldown``: decisions to skip (rate kept) after each decrease, as in
      ``ReduceLROnPlateau``.
    - Several signals: give ``threshold`` as a mapping, e.g.
      ``{"grad_norm": 0.1, "predictive_variance": 0.01}``, and ``observe`` a mapping
      with the same names. ``combine="any"``: decrease if any signal exceeds its
      threshold, increase if all are below. ``combine="weighted"``: the score
      ``sum_i w_i s_i / threshold_i / sum_i w_i`` (weights ``weights``, default 1)
      is compared with 1.

    Non-finite observed values (NaN, +-inf) never reach the learning rate: they are
    skipped, counted in ``num_nonfinite`` and logged as a warning. A decision with no
    finite value keeps the learning rate.

    Under ``torch.distributed`` (initialised, world size > 1) each signal is averaged
    over all ranks at every decision (one ``all_reduce``), so all ranks take the same
    decision; ``step()`` must then be called on every rank, as usual under DDP.

    ``state_dict()`` holds only numbers, strings, lists and dicts, so it loads with
    ``torch.load(..., weights_only=True)``; a restored scheduler continues exactly,
    pending observations included. Inside ``SequentialLR`` (after a warmup), the
    scheduler starts from its base learning rate at the milestone and discards the
    values observed before it.

    Args:
        optimizer: the wrapped optimizer.
        threshold: signal value above which the learning rate is lowered (> 0, in the
            signal's own unit; the study uses 0.1 for the gradient norm and 0.01 for
            the predictive variance), or a mapping signal name -> threshold.
        factor: multiplier applied when the signal exceeds the threshold, in (0, 1).
            Default 0.5 (study plan).
        increase_factor: multiplier applied when the signal is below the threshold,
            > 1. Default 1.1.
        min_lr: lower bound of the learning rate, one float or one per group. Default:
            ``min_lr_ratio`` x the group's initial learning rate.
        max_lr: upper bound, one float or one per group. Default: the group's initial
            learning rate.
        min_lr_ratio: used when ``min_lr`` is None. Default 1e-3.
        smoothing: ``"mean"`` (default) or ``"ema"``.
        ema_half_life: half-life in observations, required with ``smoothing="ema"``.
        threshold_mode: ``"abs"`` (default) or ``"rel"``.
        scale_half_life: half-life in decisions of the running scale (``"rel"``).
        cooldown: decisions without change after a decrease (>= 0).
        combine: ``"any"`` or ``"weighted"`` (several signals).
        weights: mapping signal name -> weight > 0 for ``"weighted"``.
        decision_interval: decide at every ``decision_interval``-th call of
            ``step()`` and keep the rate (and keep collecting observations) in
            between. E.g. under the Hugging Face Trainer, which calls ``step()``
            after every optimizer step, ``decision_interval=eval_steps`` decides once
            per evaluation interval. Default 1.
        last_epoch: index of the last decision, -1 for a fresh start (torch's
            convention).

    Raises:
        ValueError: on ``threshold <= 0`` or non-finite, ``factor`` outside (0, 1),
            ``increase_factor <= 1``, a negative bound, ``min_lr > max_lr`` for some
            group, an unknown option value, or weights naming unknown signals; each
            message names the argument.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        threshold: Number | Mapping[str, Number],
        factor: float = 0.5,
        increase_factor: float = 1.1,
        min_lr: Number | Sequence[Number] | None = None,
        max_lr: Number | Sequence[Number] | None = None,
        min_lr_ratio: float = 1e-3,
        smoothing: str = "mean",
        ema_half_life: float | None = None,
        threshold_mode: str = "abs",
        scale_half_life: float = 5.0,
        cooldown: int = 0,
        combine: str = "any",
        weights: Mapping[str, Number] | None = None,
        decision_interval: int = 1,
        last_epoch: int = -1,
    ) -> None:
        if int(decision_interval) != decision_interval or decision_interval < 1:
            raise ValueError(
                f"decision_interval must be an integer >= 1 (calls of step()), got {decision_interval!r}"
            )
        self.decision_interval = int(decision_interval)
        self.thresholds = _check_positive_mapping(threshold, "threshold")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must lie in (0, 1) (it lowers the LR), got {factor!r}")
        if not (math.isfinite(increase_factor) and increase_factor > 1.0):
            raise ValueError(
                f"increase_factor must be > 1 (it raises the LR), got {increase_factor!r}"
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}")
        if smoothing not in ("mean", "ema"):
            raise ValueError(f"smoothing must be 'mean' or 'ema', got {smoothing!r}")
        if smoothing == "ema":
            if ema_half_life is None or not ema_half_life > 0:
                raise ValueError(
                    f"smoothing='ema' needs ema_half_life > 0 (in observations), got {ema_half_life!r}"
                )
        if threshold_mode not in ("abs", "rel"):
            raise ValueError(f"threshold_mode must be 'abs' or 'rel', got {threshold_mode!r}")
        if not scale_half_life > 0:
            raise ValueError(f"scale_half_life must be > 0 (in decisions), got {scale_half_life!r}")
        if int(cooldown) != cooldown or cooldown < 0:
            raise ValueError(f"cooldown must be an integer >= 0 (decisions), got {cooldown!r}")
        if combine not in ("any", "weighted"):
            raise ValueError(f"combine must be 'any' or 'weighted', got {combine!r}")
        self.weights = (
            _check_positive_mapping(weights, "weights")
            if weights is not None
            else dict.fromkeys(self.thresholds, 1.0)
        )
        if set(self.weights) - set(self.thresholds):
            raise ValueError(
                f"weights name signals without a threshold: {sorted(set(self.weights) - set(self.thresholds))}"
            )
        n = len(optimizer.param_groups)
        initial = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
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
        self.factor = float(factor)
        self.increase_factor = float(increase_factor)
        self.smoothing = smoothing
        self.ema_half_life = None if ema_half_life is None else float(ema_half_life)
        self.threshold_mode = threshold_mode
        self.scale_half_life = float(scale_half_life)
        self.cooldown = int(cooldown)
        self.combine = combine
        names = list(self.thresholds)
        # Per-signal state, plain floats so that state_dict stays plain data.
        self.sums = dict.fromkeys(names, 0.0)  # since the last decision
        self.counts = dict.fromkeys(names, 0)  # since the last decision
        self.emas: dict[str, float | None] = dict.fromkeys(names, None)
        self.scales: dict[str, float | None] = dict.fromkeys(names, None)
        self.last_signal: dict[str, float] = {}
        self.cooldown_left = 0
        self.num_nonfinite = 0
        self.num_decreases = 0
        self.num_increases = 0
        self.num_decisions = 0  # decisions taken on a signal (kept rates included)
        super().__init__(optimizer, last_epoch)

    @property
    def threshold(self) -> float:
        """The threshold of a single-signal scheduler."""
        if len(self.thresholds) != 1:
            raise AttributeError("this scheduler has several thresholds: see .thresholds")
        return next(iter(self.thresholds.values()))

    def observe(self, value: float | torch.Tensor | Mapping[str, float | torch.Tensor]) -> None:
        """Record one measurement of the signal(s), e.g. one batch's gradient norm.

        Args:
            value: a Python number or one-element tensor (single signal), or a
                mapping signal name -> value (several signals; the names of
                ``threshold``). Non-finite values are skipped (class docstring).

        Raises:
            ValueError: a tensor with more than one element, a scalar given to a
                several-signal scheduler, or an unknown signal name.
            TypeError: a value that is not a number or a tensor (e.g. a string).
        """
        if isinstance(value, Mapping):
            items = value.items()
        elif len(self.thresholds) == 1:
            items = [(next(iter(self.thresholds)), value)]
        else:
            raise ValueError(
                f"this scheduler combines signals {sorted(self.thresholds)}: observe a mapping "
                "name -> value"
            )
        for name, raw in items:
            if name not in self.thresholds:
                raise ValueError(
                    f"unknown signal {name!r}; this scheduler has {sorted(self.thresholds)}"
                )
            v = _as_float(raw)
            if not math.isfinite(v):
                self.num_nonfinite += 1
                log.warning(
                    "UncertaintyLR: skipped a non-finite %s value (%s); %d skipped so far",
                    name,
                    v,
                    self.num_nonfinite,
                )
                continue
            self.sums[name] += v
            self.counts[name] += 1
            if self.smoothing == "ema":
                prev = self.emas[name]
                alpha = 1.0 - 0.5 ** (1.0 / self.ema_half_life)
                self.emas[name] = v if prev is None else prev + alpha * (v - prev)

    def _clip(self, lrs: Sequence[float]) -> list[float]:
        return [min(max(lr, lo), hi) for lr, lo, hi in zip(lrs, self.min_lrs, self.max_lrs)]

    def _reset_window(self) -> None:
        for name in self.thresholds:
            self.sums[name], self.counts[name] = 0.0, 0

    def _decision_signals(self) -> dict[str, float]:
        """Each signal's value for this decision (averaged over ranks under DDP)."""
        names = list(self.thresholds)
        if self.smoothing == "mean":
            local = [[self.sums[n], float(self.counts[n])] for n in names]
        else:
            local = [
                [
                    self.emas[n] if self.counts[n] and self.emas[n] is not None else 0.0,
                    1.0 if self.counts[n] else 0.0,
                ]
                for n in names
            ]
        if _distributed_world() > 1:
            buf = torch.tensor(local, dtype=torch.float64)
            if torch.distributed.get_backend() == "nccl":
                buf = buf.cuda()
            torch.distributed.all_reduce(buf)
            local = buf.cpu().tolist()
        return {n: total / count for n, (total, count) in zip(names, local) if count > 0}

    def _verdict(self, ratios: dict[str, float]) -> int:
        """-1 decrease, +1 increase, 0 keep, from signal / threshold ratios."""
        if self.combine == "weighted":
            w = {n: self.weights.get(n, 0.0) for n in ratios}
            total = sum(w.values())
            if total == 0:
                return 0
            score = sum(w[n] * r for n, r in ratios.items()) / total
            return -1 if score > 1.0 else (1 if score < 1.0 else 0)
        if any(r > 1.0 for r in ratios.values()):
            return -1
        if all(r < 1.0 for r in ratios.values()) and len(ratios) == len(self.thresholds):
            return 1
        return 0

    def get_lr(self) -> list[float]:
        """Apply the rule to the signal observed since the last decision.

        Called by :meth:`step` (torch's contract); at the first call (construction, or
        the milestone of a ``SequentialLR``) it returns the base learning rates.
        """
        if self._is_initial or self.last_epoch == 0:
            self._reset_window()
            return self._clip([float(lr) for lr in self.base_lrs])
        current = [float(g["lr"]) for g in self.optimizer.param_groups]
        if self.last_epoch % self.decision_interval:
            return current  # between decisions: keep the rate, keep the observations
        signals = self._decision_signals()
        self._reset_window()
        if not signals:
            return current
        self.last_signal = dict(signals)
        self.num_decisions += 1
        if self.threshold_mode == "rel":
            values, ready = {}, True
            alpha = 1.0 - 0.5 ** (1.0 / self.scale_half_life)
            for n, v in signals.items():
                scale = self.scales[n]
                if scale is None or scale <= 0:
                    ready = False
                else:
                    values[n] = v / scale
                self.scales[n] = v if scale is None else scale + alpha * (v - scale)
            if not ready:
                return current
        else:
            values = signals
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            return current
        verdict = self._verdict({n: v / self.thresholds[n] for n, v in values.items()})
        if verdict < 0:
            self.num_decreases += 1
            self.cooldown_left = self.cooldown
            return self._clip([lr * self.factor for lr in current])
        if verdict > 0:
            self.num_increases += 1
            return self._clip([lr * self.increase_factor for lr in current])
        return current


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
    """What a control needs from the run it controls (:mod:`uncertainty_lr.controls`).

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


# --------------------------------------------------------------------------- registry

FAMILIES = ("baseline", "uncertainty", "peer", "control")


@dataclass(frozen=True)
class ScheduleSpec:
    """What the training engine needs to know about a registered schedule.

    Attributes:
        name: registry name, e.g. ``"cosine"``.
        signal: name of the signal to feed with ``observe`` (a key of
            :data:`uncertainty_lr.signals.SIGNALS`), or None.
        defaults: the study's hyperparameters; every key may be overridden.
        description: one line for tables and the paper.
        family: ``"baseline"`` (the study plan's fixed schedules), ``"uncertainty"``
            (:class:`UncertaintyLR`), ``"peer"`` (what a practitioner would pick
            instead) or ``"control"``.
        interval: ``"step"``: the schedule is stepped after every optimizer step
            whatever the backend; None: at the backend's interval (once per epoch
            in the plain-PyTorch backend, per optimizer step under the Trainer).
        metric: what ``step`` is given: None (nothing), ``"val_loss"`` (the
            validation loss, after each evaluation; warmup ticks in between) or
            ``"train_loss"`` (the training batch loss, after every optimizer step).
        optimizer: None (the run's optimizer), or the optimizer this method
            replaces it with (``"schedule-free-adamw"``, ``"prodigy"``): see
            :func:`build_peer_optimizer`.
        requires: the Python package the method needs (imported lazily), or None.
        source: for a control, the uncertainty schedule whose run (same task) it
            replays or shuffles.
        cross_seed: for a control, whether it reads the source's run of another
            seed (the next seed the task runs the source on, cyclically: see
            :func:`uncertainty_lr.config.cross_seed_source`) instead of its own seed's.
    """

    name: str
    signal: str | None
    defaults: Mapping[str, Any]
    description: str
    family: str = "baseline"
    interval: str | None = None
    metric: str | None = None
    optimizer: str | None = None
    requires: str | None = None
    source: str | None = None
    cross_seed: bool = False

    @property
    def replaces_optimizer(self) -> bool:
        """Whether the method brings its own optimizer (the run's is not used)."""
        return self.optimizer is not None


WARMUP = {"warmup_fraction": 0.1}
"""The peers that warm up do so over 10% of the run, unless the task sets its own
warmup (``warmup_steps`` of :func:`build_scheduler`)."""

SCHEDULERS: dict[str, ScheduleSpec] = {
    spec.name: spec
    for spec in (
        ScheduleSpec("constant", None, {}, "constant learning rate"),
        ScheduleSpec("step", None, {"step_size": 10, "gamma": 0.1}, "StepLR, x0.1 every 10 epochs"),
        ScheduleSpec("cosine", None, {"eta_min": 0.0}, "CosineAnnealingLR, T_max = run length"),
        ScheduleSpec("exponential", None, {"gamma": 0.95}, "ExponentialLR, x0.95 per epoch"),
        ScheduleSpec(
            "uncertainty-gradnorm",
            "grad_norm",
            {"threshold": 0.1, "factor": 0.5, "increase_factor": 1.1, "min_lr_ratio": 1e-3},
            "UncertaintyLR on the gradient norm (threshold 0.1)",
            family="uncertainty",
        ),
        ScheduleSpec(
            "uncertainty-variance",
            "predictive_variance",
            {"threshold": 0.01, "factor": 0.5, "increase_factor": 1.1, "min_lr_ratio": 1e-3},
            "UncertaintyLR on the predictive variance (threshold 0.01)",
            family="uncertainty",
        ),
        ScheduleSpec(
            "warmup-linear",
            None,
            dict(WARMUP),
            "linear warmup, then linear decay to 0 (the Hugging Face Trainer's default)",
            family="peer",
            interval="step",
        ),
        ScheduleSpec(
            "warmup-cosine",
            None,
            dict(WARMUP),
            "linear warmup, then cosine decay to 0",
            family="peer",
            interval="step",
        ),
        ScheduleSpec(
            "onecycle",
            None,
            {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
            "OneCycleLR (Smith & Topin 2019), peak = the run's learning rate",
            family="peer",
            interval="step",
        ),
        ScheduleSpec(
            "plateau",
            None,
            {"factor": 0.5, "patience": 2, "threshold": 1e-4, **WARMUP},
            "ReduceLROnPlateau on the validation loss (x0.5, patience 2 evaluations), after a warmup",
            family="peer",
            interval="step",
            metric="val_loss",
        ),
        ScheduleSpec(
            "greedy",
            None,
            {
                "factor": 0.95,
                "patience": 10,
                "smooth": True,
                "window_size": 50,
                "min_lr_ratio": 1e-3,
                "max_lr_ratio": 1.0,
            },
            "GreedyLR (arXiv:2512.14527) on the smoothed training loss, per step",
            family="peer",
            interval="step",
            metric="train_loss",
            requires="transformers",
        ),
        ScheduleSpec(
            "schedule-free",
            None,
            dict(WARMUP),
            "Schedule-Free AdamW (Defazio et al. 2024), the run's learning rate, warmup",
            family="peer",
            optimizer="schedule-free-adamw",
            requires="schedulefree",
        ),
        ScheduleSpec(
            "prodigy",
            None,
            {"d_coef": 1.0},
            "Prodigy (Mishchenko & Defazio 2024), lr 1.0, with cosine annealing",
            family="peer",
            optimizer="prodigy",
            requires="prodigyopt",
        ),
        *(
            ScheduleSpec(
                f"{kind}-{short}",
                None,
                {},
                text.format(source=f"uncertainty-{short}"),
                family="control",
                source=f"uncertainty-{short}",
            )
            for short in ("gradnorm", "variance")
            for kind, text in (
                ("replay", "the learning rates of {source}'s run of the same seed, replayed"),
                ("shuffled", "{source}'s rule fed its run's decision signals in shuffled order"),
            )
        ),
        *(
            ScheduleSpec(
                f"replay-xseed-{short}",
                None,
                {},
                f"the learning rates of uncertainty-{short}'s run of the next seed, replayed",
                family="control",
                source=f"uncertainty-{short}",
                cross_seed=True,
            )
            for short in ("gradnorm", "variance")
        ),
    )
}
"""Every schedule of the study by name. Times in ``defaults`` are in epochs, or
fractions of the run (``warmup_fraction``, ``pct_start``)."""


def registry_order(names: Any) -> list[str]:
    """``names`` (any iterable of schedule names) in the registry's order, names
    outside the registry last, alphabetically; each once."""
    present = set(names)
    return [s for s in SCHEDULERS if s in present] + sorted(present - set(SCHEDULERS))


def _require(spec: ScheduleSpec) -> Any:
    """Import the package ``spec`` needs, or say how to install it."""
    if spec.requires is None:
        return None
    import importlib  # noqa: PLC0415

    try:
        return importlib.import_module(spec.requires)
    except ImportError as err:
        raise ImportError(
            f"schedule {spec.name!r} needs the `{spec.requires}` package: "
            f'pip install "uncertainty-lr[peers]" (or pip install {spec.requires})'
        ) from err


def peer_warmup_steps(name: str, run_steps: int, warmup_steps: int = 0, **overrides: Any) -> int:
    """Warmup length, in optimizer steps, of a peer that warms up.

    The task's own warmup (``warmup_steps`` > 0) wins; otherwise the spec's
    ``warmup_fraction`` of the run's ``run_steps`` optimizer steps (rounded, at
    least 1 when the fraction is > 0). 0 for schedules without a warmup fraction.
    """
    hp = {**SCHEDULERS[name].defaults, **overrides}
    if warmup_steps:
        return int(warmup_steps)
    fraction = float(hp.get("warmup_fraction", 0.0))
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"warmup_fraction must lie in [0, 1), got {fraction!r}")
    return max(1, round(fraction * run_steps)) if fraction > 0 else 0


def build_peer_optimizer(
    name: str,
    param_groups: Any,
    *,
    lr: float,
    weight_decay: float = 0.0,
    run_steps: int,
    warmup_steps: int = 0,
    **overrides: Any,
) -> Optimizer:
    """The optimizer of a schedule that replaces the run's (``spec.optimizer``).

    - ``schedule-free``: ``schedulefree.AdamWScheduleFree`` (Defazio et al. 2024,
      "The Road Less Scheduled") at the run's learning rate and decoupled weight
      decay, with its own linear warmup (``peer_warmup_steps``). It must be switched
      with ``optimizer.train()`` before training steps and ``optimizer.eval()``
      before evaluations (both training backends do).
    - ``prodigy``: ``prodigyopt.Prodigy`` (Mishchenko & Defazio 2024) with
      ``lr=1.0`` as its authors recommend (it estimates the step size itself; the
      run's ``lr`` is not used), decoupled weight decay, ``safeguard_warmup`` when
      the run warms up.

    Args:
        name: a registry name whose spec has ``optimizer`` set.
        param_groups: parameters or parameter groups, as for any torch optimizer.
        lr: the run's learning rate (ignored by Prodigy).
        weight_decay: decoupled weight decay, for groups that do not set their own.
        run_steps: the run's length in optimizer steps.
        warmup_steps: the task's warmup in optimizer steps (0: the spec's fraction).
        **overrides: the spec's hyperparameters.

    Raises:
        ValueError: ``name`` does not replace the optimizer, or an unknown override.
        ImportError: the package is not installed (the message says how to).
    """
    spec = SCHEDULERS.get(name)
    if spec is None or spec.optimizer is None:
        raise ValueError(
            f"schedule {name!r} does not bring an optimizer; those that do: "
            f"{', '.join(n for n, s in SCHEDULERS.items() if s.optimizer)}"
        )
    unknown = set(overrides) - set(spec.defaults)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)} for scheduler {name!r}")
    hp = {**spec.defaults, **overrides}
    package = _require(spec)
    if spec.optimizer == "schedule-free-adamw":
        warmup = peer_warmup_steps(name, run_steps, warmup_steps, **overrides)
        return package.AdamWScheduleFree(
            param_groups, lr=lr, weight_decay=weight_decay, warmup_steps=warmup
        )
    return package.Prodigy(
        param_groups,
        lr=1.0,
        weight_decay=weight_decay,
        decouple=True,
        d_coef=float(hp["d_coef"]),
        safeguard_warmup=warmup_steps > 0,
    )


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


SCALINGS = ("absolute", "fraction")

UNCERTAINTY_OPTIONS = {
    "threshold",
    "factor",
    "increase_factor",
    "min_lr",
    "max_lr",
    "min_lr_ratio",
    "smoothing",
    "ema_half_life",
    "threshold_mode",
    "scale_half_life",
    "cooldown",
}
"""Options of :class:`UncertaintyLR` a registry uncertainty schedule may override
(single-signal ones; ``decision_interval`` comes from the run)."""


def build_scheduler(
    name: str,
    optimizer: Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    interval: str = "epoch",
    scaling: str = "absolute",
    reference_epochs: int = 50,
    warmup_steps: int = 0,
    decision_interval: int = 1,
    control: ControlInput | None = None,
    **overrides: Any,
) -> tuple[Any, ScheduleSpec]:
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
    ``UncertaintyLR`` then happen every ``decision_interval`` steps.

    With ``warmup_steps > 0`` the learning rate first rises linearly: the ``k``-th of
    the first ``warmup_steps`` units trains at ``lr * k / warmup_steps``
    (``LinearLR``), then the schedule takes over (``SequentialLR``; the transformer
    recipe of Devlin et al. 2019). Cosine then anneals over the rest of the run; the
    other schedules count their times from the end of the warmup. What
    ``UncertaintyLR`` observes during the warmup is discarded; get it with
    :func:`uncertainty_part` to feed it.

    The peers (``spec.family == "peer"``) follow their own conventions, with the
    published defaults (``SCHEDULERS[name].defaults``):

    - ``warmup-linear`` / ``warmup-cosine``: the task's warmup, or else
      ``warmup_fraction`` of the run (:func:`peer_warmup_steps`), then a linear or
      cosine decay to 0 at the end of the run (Hugging Face's
      ``get_linear_schedule_with_warmup`` / ``get_cosine_schedule_with_warmup``).
    - ``onecycle``: ``OneCycleLR`` peaking at the optimizer's learning rate, its
      own warm-up phase (``pct_start``) instead of the task's.
    - ``plateau``: :class:`WarmupReduceLROnPlateau`; ``step()`` after every
      optimizer step, ``step(val_loss)`` after every evaluation (``spec.metric``).
    - ``greedy``: ``transformers``' ``GreedyLR``, ``step(train_loss)`` after every
      optimizer step, learning rate kept within ``[min_lr_ratio, max_lr_ratio]`` x
      the initial one (the bounds of ``UncertaintyLR``); no warmup.
    - ``schedule-free`` / ``prodigy``: they replace the optimizer
      (:func:`build_peer_optimizer`); the schedule is constant (Schedule-Free
      warms up inside the optimizer) or cosine after the task's warmup (Prodigy).

    Args:
        name: a key of :data:`SCHEDULERS`.
        optimizer: the optimizer to wrap.
        epochs: run length in epochs (>= 1).
        steps_per_epoch: optimizer steps per epoch (>= 1).
        interval: ``"epoch"`` or ``"step"``: how often the caller calls ``step()``.
        scaling: ``"absolute"`` or ``"fraction"`` (see above).
        reference_epochs: the run length the study's values were set for.
        warmup_steps: linear warmup, in calls of ``step()`` (units of ``interval``);
            must be shorter than the run.
        decision_interval: calls of ``step()`` between two decisions of
            ``UncertaintyLR`` (ignored by the other schedules).
        control: what a control (``spec.family == "control"``) takes from its
            source run: ``replay-*`` is :class:`ReplayLR` over ``control.lr_trace``
            (which already holds any warmup); ``shuffled-*`` is
            :class:`ScriptedSignalLR` with the source's rule and hyperparameters fed
            ``control.signals`` permuted by ``numpy.random.default_rng(control.seed)``,
            after the same warmup as the source.
        **overrides: hyperparameters replacing the defaults of ``SCHEDULERS[name]``.

    Returns:
        ``(scheduler, spec)``: a torch ``LRScheduler``, or ``GreedyLR`` (which has
        the same ``step`` / ``state_dict`` / ``get_last_lr`` interface).

    Raises:
        ValueError: unknown name (the message lists the valid ones), unknown
            override key, a run length / interval / scaling that is out of range, or
            a per-step schedule built with ``interval="epoch"``.
        ImportError: the package a peer needs is missing (the message says how to
            install it).
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
    units_per_epoch = steps_per_epoch if interval == "step" else 1
    run_units = epochs * units_per_epoch
    if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps < run_units:
        raise ValueError(
            f"warmup_steps must be an integer in [0, {run_units}) (the run has {run_units} "
            f"{interval}s), got {warmup_steps!r}"
        )
    valid = set(spec.defaults) | (UNCERTAINTY_OPTIONS if spec.family == "uncertainty" else set())
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {sorted(unknown)} for scheduler {name!r}; "
            f"valid: {sorted(valid) or 'none'}"
        )
    hp = {**spec.defaults, **overrides}
    stretch = epochs / reference_epochs if scaling == "fraction" else 1.0

    if spec.interval == "step" and interval != "step":
        raise ValueError(
            f"schedule {name!r} is stepped after every optimizer step: build it with "
            "interval='step' (its spec's interval)"
        )

    def peer_warmup() -> int:
        return min(peer_warmup_steps(name, run_units, warmup_steps, **overrides), run_units - 1)

    if name == "constant":
        sched: Any = ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif name == "step":
        step_size = max(1, round(hp["step_size"] * stretch * units_per_epoch))
        sched = StepLR(optimizer, step_size=step_size, gamma=hp["gamma"])
    elif name == "cosine":
        sched = CosineAnnealingLR(optimizer, T_max=run_units - warmup_steps, eta_min=hp["eta_min"])
    elif name == "exponential":
        gamma = hp["gamma"] ** (1.0 / (stretch * units_per_epoch))
        sched = ExponentialLR(optimizer, gamma=gamma)
    elif spec.family == "uncertainty":
        sched = UncertaintyLR(optimizer, decision_interval=decision_interval, **hp)
    elif name in ("warmup-linear", "warmup-cosine"):
        # Hugging Face's get_linear/cosine_schedule_with_warmup, from torch's classes
        w = peer_warmup()
        decay = (
            LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=run_units - w)
            if name == "warmup-linear"
            else CosineAnnealingLR(optimizer, T_max=run_units - w, eta_min=0.0)
        )
        return _with_warmup(optimizer, decay, w), spec
    elif name == "onecycle":  # its own warm-up phase (pct_start); the task's is not added
        # total_steps counts the call after the last optimizer step too: with exactly
        # run_units, torch's cosine phase folds back up at that call
        sched = OneCycleLR(
            optimizer,
            max_lr=[float(g["lr"]) for g in optimizer.param_groups],
            total_steps=run_units + 1,
            pct_start=float(hp["pct_start"]),
            div_factor=float(hp["div_factor"]),
            final_div_factor=float(hp["final_div_factor"]),
        )
        return sched, spec
    elif name == "plateau":
        sched = WarmupReduceLROnPlateau(
            optimizer,
            warmup_steps=peer_warmup(),
            mode="min",
            factor=float(hp["factor"]),
            patience=int(hp["patience"]),
            threshold=float(hp["threshold"]),
        )
        return sched, spec
    elif name == "greedy":  # no warmup: GreedyLR has none
        transformers = _require(spec)
        initial = [float(g["lr"]) for g in optimizer.param_groups]
        sched = transformers.optimization.GreedyLR(
            optimizer,
            mode="min",
            factor=float(hp["factor"]),
            patience=int(hp["patience"]),
            smooth=bool(hp["smooth"]),
            window_size=int(hp["window_size"]),
            min_lr=[lr * float(hp["min_lr_ratio"]) for lr in initial],
            max_lr=[lr * float(hp["max_lr_ratio"]) for lr in initial],
        )
        return sched, spec
    elif name == "schedule-free":  # the optimizer warms up and averages; no schedule
        return ConstantLR(optimizer, factor=1.0, total_iters=0), spec
    elif spec.family == "control":
        if control is None:
            raise ValueError(
                f"control {name!r} needs its source run ({spec.source}, same task): "
                "pass control= (uncertainty_lr.controls.load_control_input reads it)"
            )
        if name.startswith("replay"):
            return ReplayLR(optimizer, control.lr_trace), spec
        import numpy as np  # noqa: PLC0415

        order = np.random.default_rng(control.seed).permutation(len(control.signals))
        source_hp = {**SCHEDULERS[spec.source].defaults, **control.source_params}
        sched = ScriptedSignalLR(
            optimizer,
            [control.signals[i] for i in order],
            decision_interval=decision_interval,
            **source_hp,
        )
    elif name == "prodigy":  # cosine annealing, as Prodigy's authors recommend
        sched = CosineAnnealingLR(optimizer, T_max=run_units - warmup_steps, eta_min=0.0)
    else:  # pragma: no cover - every registry name has a branch
        raise AssertionError(f"no builder for {name!r}")
    return _with_warmup(optimizer, sched, warmup_steps), spec


def _with_warmup(optimizer: Optimizer, sched: LRScheduler, warmup_steps: int) -> LRScheduler:
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


def uncertainty_part(scheduler: LRScheduler) -> UncertaintyLR | None:
    """The :class:`UncertaintyLR` that ``scheduler`` is or wraps (after a warmup, in
    a ``SequentialLR``), to call ``observe`` on; None for the fixed schedules."""
    if isinstance(scheduler, UncertaintyLR):
        return scheduler
    for inner in getattr(scheduler, "_schedulers", ()):
        found = uncertainty_part(inner)
        if found is not None:
            return found
    return None
