"""``UncertaintyLR``: the learning-rate scheduler that reacts to an uncertainty signal.

A :class:`torch.optim.lr_scheduler.LRScheduler`, so it works wherever a torch
scheduler does (plain loops, ``SequentialLR`` after a warmup, the Hugging Face
Trainer's ``optimizers=(optimizer, scheduler)``). Torch only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from uncertainty_lr._observations import (
    Number,
    _as_scalar,
    _bound_rule,
    _check_bounds,
    _check_options,
    _check_positive_mapping,
    _mean_over_ranks,
    _new_group_bounds,
    _per_group,
    _relative,
    _restored_windows,
    _set_saved_rates,
    _take_windows,
    _verdict,
    _warn_clipped_increase,
    _Window,
    _windows_state,
)

log = logging.getLogger(__name__)

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
    by a smaller factor below it); the bounds keep it from running away. With the
    default ``max_lr`` (the group's initial rate) an increase can only undo earlier
    decreases: to let the schedule raise the rate above where it started, give a
    ``max_lr`` above it. If the very first increase is clipped away entirely (the
    rate is still at ``max_lr``), a warning is logged once.

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
    registry's ``interval`` says which). With ``decision_interval=k`` only every
    k-th ``step()`` decides. Under mixed precision, an optimizer step that
    ``GradScaler`` skipped (it found inf or NaN gradients) should not count: call
    ``step()`` only when the optimizer stepped, as the Hugging Face Trainer does::

        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() >= scale:   # a skipped step lowers the scale
            scheduler.step()

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

    Observed values stay where they are: a tensor on a GPU is accumulated there,
    and the scheduler reads it back to the host once per decision, never per
    :meth:`observe`. Non-finite values (NaN, +-inf) never reach the learning rate:
    they are left out, counted in ``num_nonfinite`` and logged as a warning at the
    decision. A decision with no finite value keeps the learning rate; if nothing at
    all was observed before the first decision, a warning says so once (a scheduler
    that is stepped but never fed keeps its rate forever).

    Construction keeps the optimizer's current rate (clipped to the bounds), as
    torch's chainable schedulers do: after ``ConstantLR(factor=0.5)`` it starts
    from the halved rate. The bounds default from each group's ``initial_lr``.
    Inside ``SequentialLR`` (after a warmup), the scheduler starts from its base
    learning rate at the milestone and discards the values observed before it.
    A parameter group added to the optimizer later (``add_param_group``, e.g. in
    gradual unfreezing) is scheduled from its own rate, with bounds from the same
    rule (``min_lr`` / ``max_lr`` if they were one number, else ``min_lr_ratio``
    and its rate); if the bounds were given per group, :meth:`step` raises before
    changing any rate.

    Under ``torch.distributed`` (initialised, world size > 1) each signal is averaged
    over all ranks at every decision (one ``all_reduce``), so all ranks take the same
    decision; ``step()`` must then be called on every rank, as usual under DDP.

    ``state_dict()`` holds only numbers, strings, lists and dicts, so it loads with
    ``torch.load(..., weights_only=True)``; a restored scheduler continues exactly,
    pending observations included. :meth:`load_state_dict` also sets the optimizer's
    rates to the saved ones, so restoring the scheduler alone (with a fresh
    optimizer) continues at the saved rates.

    Attributes a user may log (read-only; reading ``num_nonfinite`` or the pending
    window reads device values back to the host):

    - ``last_signal``: dict signal name -> the value the last decision used (after
      averaging over the window and ranks, before the ``rel`` scaling);
    - ``num_decisions``: decisions taken on a signal (kept rates included);
    - ``num_decreases``, ``num_increases``: decisions that lowered / raised the rate
      (an increase clipped at ``max_lr`` still counts; ``num_clipped_increases``
      counts those that changed no group's rate);
    - ``num_nonfinite``: non-finite values left out so far.

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
            learning rate (so increases only undo decreases; see above).
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
        _check_options(
            decision_interval=decision_interval,
            factor=factor,
            increase_factor=increase_factor,
            min_lr_ratio=min_lr_ratio,
            smoothing=smoothing,
            ema_half_life=ema_half_life,
            threshold_mode=threshold_mode,
            scale_half_life=scale_half_life,
            cooldown=cooldown,
            combine=combine,
        )
        self.decision_interval = int(decision_interval)
        self.thresholds = _check_positive_mapping(threshold, "threshold")
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
        _check_bounds(self.min_lrs, self.max_lrs)
        # how the bounds were given, for groups added later: None (from the rate),
        # a float (the same for every group), or "per-group" (cannot be extended)
        self.bound_rules = {
            "min_lr": _bound_rule(min_lr),
            "max_lr": _bound_rule(max_lr),
            "min_lr_ratio": float(min_lr_ratio),
        }
        self.factor = float(factor)
        self.increase_factor = float(increase_factor)
        self.smoothing = smoothing
        self.ema_half_life = None if ema_half_life is None else float(ema_half_life)
        self.threshold_mode = threshold_mode
        self.scale_half_life = float(scale_half_life)
        self.cooldown = int(cooldown)
        self.combine = combine
        names = list(self.thresholds)
        self._windows = {name: _Window() for name in names}
        self._ema_weight = (
            1.0 - 0.5 ** (1.0 / self.ema_half_life) if smoothing == "ema" else None
        )
        self.scales: dict[str, float | None] = dict.fromkeys(names, None)
        self.last_signal: dict[str, float] = {}
        self.cooldown_left = 0
        self.nonfinite_before = 0  # left out in windows already taken
        self.num_decreases = 0
        self.num_increases = 0
        self.num_clipped_increases = 0
        self.num_decisions = 0  # decisions taken on a signal (kept rates included)
        self.ever_observed = False
        self.warned_unobserved = False
        super().__init__(optimizer, last_epoch)

    @property
    def threshold(self) -> float:
        """The threshold of a single-signal scheduler."""
        if len(self.thresholds) != 1:
            raise AttributeError("this scheduler has several thresholds: see .thresholds")
        return next(iter(self.thresholds.values()))

    @property
    def num_nonfinite(self) -> int:
        """Non-finite values left out so far (those pending in the current window
        included; reading it reads device values back to the host)."""
        return self.nonfinite_before + int(sum(w.values()[2] for w in self._windows.values()))

    @property
    def sums(self) -> dict[str, float]:
        """Sum of each signal's finite values since the last decision."""
        return {n: w.values()[0] for n, w in self._windows.items()}

    @property
    def counts(self) -> dict[str, int]:
        """Number of each signal's finite values since the last decision."""
        return {n: int(w.values()[1]) for n, w in self._windows.items()}

    @property
    def emas(self) -> dict[str, float | None]:
        """Each signal's EMA over all values so far (``smoothing="ema"``)."""
        return {n: w.values()[3] for n, w in self._windows.items()}

    def observe(self, value: Any) -> None:
        """Record one measurement of the signal(s), e.g. one batch's gradient norm.

        No host synchronisation: a tensor is accumulated on its own device.

        Args:
            value: a Python or NumPy number, a one-element tensor or array (single
                signal), or a mapping signal name -> such a value (several signals;
                the names of ``threshold``). Non-finite values are left out (class
                docstring).

        Raises:
            ValueError: a tensor or array with more than one element, a scalar
                given to a several-signal scheduler, or an unknown signal name.
            TypeError: a value that is not a number, a tensor or an array (e.g. a
                string).
        """
        if isinstance(value, Mapping):
            items = list(value.items())
        elif len(self.thresholds) == 1:
            items = [(next(iter(self.thresholds)), value)]
        else:
            raise ValueError(
                f"this scheduler combines signals {sorted(self.thresholds)}: observe a mapping "
                "name -> value"
            )
        checked = []
        for name, raw in items:  # every value checked before any is added
            if name not in self.thresholds:
                raise ValueError(
                    f"unknown signal {name!r}; this scheduler has {sorted(self.thresholds)}"
                )
            checked.append((name, _as_scalar(raw)))
        for name, v in checked:
            self._windows[name].add(v, self._ema_weight)
        self.ever_observed = True

    def step(self, epoch: int | None = None) -> None:
        """Decide (every ``decision_interval``-th call) on what was observed since
        the last decision, and set the optimizer's rates.

        Args:
            epoch: torch's deprecated explicit step index (an int); normally omitted.

        Raises:
            TypeError: ``epoch`` is not an int, e.g. a validation loss passed as
                ``ReduceLROnPlateau`` takes it: this scheduler reads its signal from
                :meth:`observe`.
            ValueError: a parameter group was added to the optimizer after the
                scheduler was built with per-group bounds (before any rate changes).
        """
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise TypeError(
                f"UncertaintyLR.step() takes no metric (got {type(epoch).__name__}): pass the "
                "signal to observe(value) and call step() with no argument"
            )
        self._adopt_new_groups()
        super().step(epoch)

    def _adopt_new_groups(self) -> None:
        """Bounds and base rate for parameter groups added since construction."""
        groups = self.optimizer.param_groups
        if len(groups) <= len(self.min_lrs):
            return
        new = groups[len(self.min_lrs) :]
        lows, highs = _new_group_bounds(new, self.bound_rules, len(self.min_lrs), len(groups))
        self.min_lrs += lows
        self.max_lrs += highs
        self.base_lrs += [float(g["initial_lr"]) for g in new]

    def _clip(self, lrs: Sequence[float]) -> list[float]:
        return [min(max(lr, lo), hi) for lr, lo, hi in zip(lrs, self.min_lrs, self.max_lrs)]

    def _reset_window(self) -> None:
        """Start a new window of observations (its non-finite values counted)."""
        for window in self._windows.values():
            self.nonfinite_before += int(window.take()[2])

    def _decision_signals(self) -> dict[str, float]:
        """Each signal's value for this decision (averaged over ranks under DDP);
        one host read of the window's device values."""
        names = list(self.thresholds)
        local, skipped = _take_windows(self._windows, names, self.smoothing)
        if skipped:
            self.nonfinite_before += int(skipped)
            log.warning(
                "UncertaintyLR: left out %d non-finite signal value(s) since the last "
                "decision; %d so far",
                skipped,
                self.nonfinite_before,
            )
        return _mean_over_ranks(names, local)

    def _verdict(self, ratios: dict[str, float]) -> int:
        """-1 decrease, +1 increase, 0 keep, from signal / threshold ratios."""
        return _verdict(ratios, self.combine, self.weights, len(self.thresholds))

    def get_lr(self) -> list[float]:
        """Apply the rule to the signal observed since the last decision.

        Called by :meth:`step` (torch's contract). At construction it keeps the
        optimizer's current rates (clipped to the bounds); at the milestone of a
        ``SequentialLR`` it returns the base learning rates and drops what was
        observed before.
        """
        current = [float(g["lr"]) for g in self.optimizer.param_groups]
        if self._is_initial:
            self._reset_window()
            return self._clip(current)
        if self.last_epoch == 0:
            self._reset_window()
            return self._clip([float(lr) for lr in self.base_lrs])
        if self.last_epoch % self.decision_interval:
            return current  # between decisions: keep the rate, keep the observations
        signals = self._decision_signals()
        self._reset_window()  # a subclass's _decision_signals may not take the window
        if not signals:
            self._warn_if_never_observed()
            return current
        self.last_signal = dict(signals)
        self.num_decisions += 1
        values = self._relative(signals) if self.threshold_mode == "rel" else signals
        if values is None:
            return current
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
            raised = self._clip([lr * self.increase_factor for lr in current])
            if raised == current:
                self.num_clipped_increases += 1
                if self.num_clipped_increases == self.num_increases == 1:
                    _warn_clipped_increase(self.increase_factor, self.max_lrs)
            return raised
        return current

    def _relative(self, signals: dict[str, float]) -> dict[str, float] | None:
        """Signals over their running scales (``threshold_mode="rel"``), updating the
        scales; None while a scale is not set yet (the first decision)."""
        return _relative(signals, self.scales, self.scale_half_life)

    def _warn_if_never_observed(self) -> None:
        if not self.ever_observed and not self.warned_unobserved:
            self.warned_unobserved = True
            warnings.warn(
                "UncertaintyLR.step() decided on nothing: observe() was never called, so "
                "the learning rate stays constant. Call scheduler.observe(signal) after "
                "backward() (e.g. uncertainty_lr.gradient_norm(model.parameters())).",
                UserWarning,
                stacklevel=6,  # the caller of step()
            )

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state as plain data (numbers, strings, lists, dicts):
        loads with ``torch.load(..., weights_only=True)``. Reads the pending
        observations back to the host."""
        state = {
            k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_windows", "_ema_weight")
        }
        return {**state, **_windows_state(self._windows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, and set the optimizer's rates to the saved
        ones (logged where they differ), so that restoring the scheduler alone
        continues at the saved rates.

        Raises:
            ValueError: the optimizer has another number of parameter groups than
                the saved scheduler had.
        """
        state = dict(state_dict)
        if "num_nonfinite" in state:  # the state of versions up to 0.1.0
            state["nonfinite_before"] = state.pop("num_nonfinite")
        saved = [float(lr) for lr in state.get("_last_lr", [])]
        groups = self.optimizer.param_groups
        if saved and len(saved) != len(groups):
            raise ValueError(
                f"the saved scheduler had {len(saved)} parameter groups, the optimizer has "
                f"{len(groups)}: restore it onto an optimizer built the same way"
            )
        windows = {k: state.pop(k, {}) for k in ("sums", "counts", "emas", "pending_nonfinite")}
        self.__dict__.update(state)
        self._windows = _restored_windows(self.thresholds, **windows)
        if saved:
            _set_saved_rates(groups, saved)


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


__all__ = ["UncertaintyLR", "uncertainty_part"]
