"""``UncertaintyLR``: the learning-rate scheduler that reacts to an uncertainty signal.

A :class:`torch.optim.lr_scheduler.LRScheduler`, so it works wherever a torch
scheduler does (plain loops, ``SequentialLR`` after a warmup, the Hugging Face
Trainer's ``optimizers=(optimizer, scheduler)``). Torch only.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

log = logging.getLogger(__name__)

Number = float | int

SINGLE = "signal"
"""Name under which a single (unnamed) signal is kept."""


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


def _read_is_cheap(device: torch.device) -> bool:
    """Whether reading a value of ``device`` to the host costs no synchronisation
    (the CPU's memory is the host's)."""
    return device.type == "cpu"


def _as_scalar(value: Any) -> float | torch.Tensor:
    """A signal value as a Python float, or as a 0-d tensor where reading it would
    wait for an accelerator (it is then kept on its device). Accepts Python numbers,
    one-element tensors and NumPy scalars or one-element arrays (anything with
    ``__float__`` and one element)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"observe() takes a scalar signal, got a tensor of shape {tuple(value.shape)}; "
                "reduce it first (e.g. .mean())"
            )
        if _read_is_cheap(value.device):
            return float(value.item())
        return value.detach().reshape(())
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(
            f"observe() takes a number or a one-element tensor, got {type(value).__name__} "
            f"{value!r}"
        )
    if getattr(value, "size", 1) != 1:  # a NumPy array of several values
        raise ValueError(
            f"observe() takes a scalar signal, got an array of shape {value.shape}; reduce it first"
        )
    return float(value.item() if hasattr(value, "item") else value)


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


class _Window:
    """The observations of one signal since the last decision: sum, count and
    non-finite count, plus its EMA across decisions.

    Python numbers are added as Python floats; tensors on their own device
    (float64, float32 where the device has no float64), with the non-finite ones
    masked out by tensor operations, so no value is read back to the host before
    :meth:`take`.
    """

    def __init__(self) -> None:
        self.total: float | torch.Tensor = 0.0
        self.count: float | torch.Tensor = 0.0
        self.nonfinite: float | torch.Tensor = 0.0
        self.ema: float | torch.Tensor | None = None
        self.device: torch.device | None = None  # where the tensor state lies, if any

    def add(self, v: float | torch.Tensor, alpha: float | None) -> None:
        """Add one value; ``alpha`` is the EMA weight (None: no EMA)."""
        device = self.device
        if device is None and isinstance(v, float):
            if not math.isfinite(v):
                self.nonfinite += 1.0
                return
            self.total += v
            self.count += 1.0
            if alpha is not None:
                self.ema = v if self.ema is None else self.ema + alpha * (v - self.ema)
            return
        device = self.device = v.device if isinstance(v, torch.Tensor) else device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        v = torch.as_tensor(v, dtype=dtype, device=device)
        finite = torch.isfinite(v)
        self.total = self.total + torch.where(finite, v, 0.0)
        self.count = self.count + finite.to(dtype)
        self.nonfinite = self.nonfinite + (~finite).to(dtype)
        if alpha is None:
            return
        if self.ema is None:  # NaN marks an EMA not started yet
            self.ema = torch.where(finite, v, torch.nan)
        else:
            prev = torch.as_tensor(self.ema, dtype=dtype, device=device)
            updated = torch.where(torch.isnan(prev), v, prev + alpha * (v - prev))
            self.ema = torch.where(finite, updated, prev)

    def values(self) -> tuple[float, float, float, float | None]:
        """``(sum, count, non-finite count, ema)`` as floats: one host read of the
        state where it lies on a device."""
        parts = [self.total, self.count, self.nonfinite, math.nan if self.ema is None else self.ema]
        device = self.device
        if device is not None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            parts = torch.stack(
                [torch.as_tensor(p, dtype=dtype, device=device) for p in parts]
            ).tolist()
        total, count, nonfinite, ema = (float(p) for p in parts)
        return total, count, nonfinite, (None if math.isnan(ema) else ema)

    def take(self) -> tuple[float, float, float, float | None]:
        """:meth:`values`, then a new window (the EMA is kept)."""
        total, count, nonfinite, ema = self.values()
        self.total, self.count, self.nonfinite = 0.0, 0.0, 0.0
        self.ema, self.device = ema, None
        return total, count, nonfinite, ema


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
        rules = self.bound_rules
        per_group = [k for k in ("min_lr", "max_lr") if rules[k] == "per-group"]
        if per_group:
            raise ValueError(
                f"the optimizer has {len(groups)} parameter groups but the scheduler was "
                f"built for {len(self.min_lrs)} with {' and '.join(per_group)} given per "
                "group: build the scheduler after adding every group, or give the bounds "
                "as one number each"
            )
        lows, highs = [], []
        for g in new:
            rate = float(g.setdefault("initial_lr", g["lr"]))
            lows.append(rules["min_lr"] if rules["min_lr"] is not None else rate * rules["min_lr_ratio"])
            highs.append(rules["max_lr"] if rules["max_lr"] is not None else rate)
        _check_bounds(lows, highs, first=len(self.min_lrs))
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
        local = []
        skipped = 0.0
        for n in names:
            total, count, nonfinite, ema = self._windows[n].take()
            skipped += nonfinite
            if self.smoothing == "ema":
                total, count = (ema if count and ema is not None else 0.0), (1.0 if count else 0.0)
            local.append([total, count])
        if skipped:
            self.nonfinite_before += int(skipped)
            log.warning(
                "UncertaintyLR: left out %d non-finite signal value(s) since the last "
                "decision; %d so far",
                skipped,
                self.nonfinite_before,
            )
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
                self._note_clipped_increase()
            return raised
        return current

    def _relative(self, signals: dict[str, float]) -> dict[str, float] | None:
        """Signals over their running scales (``threshold_mode="rel"``), updating the
        scales; None while a scale is not set yet (the first decision)."""
        values, ready = {}, True
        alpha = 1.0 - 0.5 ** (1.0 / self.scale_half_life)
        for n, v in signals.items():
            scale = self.scales[n]
            if scale is None or scale <= 0:
                ready = False
            else:
                values[n] = v / scale
            self.scales[n] = v if scale is None else scale + alpha * (v - scale)
        return values if ready else None

    def _note_clipped_increase(self) -> None:
        self.num_clipped_increases += 1
        if self.num_clipped_increases == self.num_increases == 1:
            log.warning(
                "UncertaintyLR: an increase (x%g) was clipped at max_lr %s, which defaults "
                "to the initial rate: increases can then only undo decreases. Give max_lr "
                "above the initial rate to let the schedule raise it.",
                self.increase_factor,
                self.max_lrs,
            )

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
        windows = {n: w.values() for n, w in self._windows.items()}
        state["sums"] = {n: v[0] for n, v in windows.items()}
        state["counts"] = {n: int(v[1]) for n, v in windows.items()}
        state["pending_nonfinite"] = {n: int(v[2]) for n, v in windows.items()}
        state["emas"] = {n: v[3] for n, v in windows.items()}
        return state

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
        sums, counts = state.pop("sums", {}), state.pop("counts", {})
        emas, pending = state.pop("emas", {}), state.pop("pending_nonfinite", {})
        self.__dict__.update(state)
        self._windows = {n: _Window() for n in self.thresholds}
        for n, window in self._windows.items():
            window.total = float(sums.get(n, 0.0))
            window.count = float(counts.get(n, 0))
            window.nonfinite = float(pending.get(n, 0))
            window.ema = emas.get(n)
        current = [float(g["lr"]) for g in groups]
        if saved and current != saved:
            log.info(
                "UncertaintyLR.load_state_dict: set the optimizer's learning rates %s to "
                "the saved %s",
                current,
                saved,
            )
            for group, lr in zip(groups, saved):
                group["lr"] = lr


def _bound_rule(value: Number | Sequence[Number] | None) -> float | str | None:
    """How a bound was given: None, one number, or ``"per-group"``."""
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float)) else "per-group"


def _check_bounds(lows: Sequence[float], highs: Sequence[float], first: int = 0) -> None:
    for i, (lo, hi) in enumerate(zip(lows, highs), start=first):
        if lo < 0 or hi < 0:
            raise ValueError(f"min_lr and max_lr must be >= 0, got {lo} and {hi} for group {i}")
        if lo > hi:
            raise ValueError(
                f"min_lr ({lo}) > max_lr ({hi}) for parameter group {i}: swap them or "
                "widen the range"
            )


__all__ = ["UncertaintyLR"]


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
