"""The registry of every schedule in the study: the baselines (torch's own classes,
built for a given run length), the peers practitioners pick, the controls, and
the uncertainty schedules (:class:`uncertainty_lr.scheduler.UncertaintyLR`, the
library's scheduler, re-exported here).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

from uncertainty_lr.scheduler import UncertaintyLR

log = logging.getLogger(__name__)


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
            :func:`uncertainty_lr_study.config.cross_seed_source`) instead of its own seed's.
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
    - ``onecycle``: :class:`ClampedOneCycleLR` (torch's ``OneCycleLR``) peaking at
      the optimizer's learning rate, its own warm-up phase (``pct_start``) instead
      of the task's.
    - ``plateau``: :class:`WarmupReduceLROnPlateau`; ``step()`` after every
      optimizer step, ``step(val_loss)`` after every evaluation (``spec.metric``).
    - ``greedy``: ``transformers``' ``GreedyLR``, ``step(train_loss)`` after every
      optimizer step, learning rate kept within ``[min_lr_ratio, max_lr_ratio]`` x
      the initial one (the bounds of ``UncertaintyLR``); no warmup. Its parameters
      are checked here (``factor`` in (0, 1), integers ``patience`` >= 0 and
      ``window_size`` >= 1, ``0 <= min_lr_ratio <= max_lr_ratio``): GreedyLR itself
      accepts some values that fail or misbehave mid-run.
    - ``schedule-free`` / ``prodigy``: they replace the optimizer
      (:func:`build_peer_optimizer`); the schedule is constant (Schedule-Free
      warms up inside the optimizer) or cosine after the task's warmup (Prodigy).

    The end of a run of ``N`` calls of ``step()`` (the engines call it after every
    optimizer step, the last included): the peers that decay are at their floor
    after the ``N``-th call and stay there after any further call (no restart, no
    error). ``onecycle`` trains its last step at its floor (torch's convention for a
    cycle of ``N`` steps); ``warmup-linear`` / ``warmup-cosine`` (and ``prodigy``'s
    cosine) reach 0 at the ``N``-th call, after the last step (Hugging Face's
    convention: no step trains at rate 0), so step ``N`` trains at the decay's last
    value above 0.

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
            override key, a run length / interval / scaling that is out of range,
            a per-step schedule built with ``interval="epoch"``, or ``greedy``
            parameters out of range (the message names them).
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
            else ClampedCosineAnnealingLR(optimizer, T_max=run_units - w, eta_min=0.0)
        )
        return _with_warmup(optimizer, decay, w), spec
    elif name == "onecycle":  # its own warm-up phase (pct_start); the task's is not added
        # the run's last step trains at the floor; the call after it keeps the floor
        sched = ClampedOneCycleLR(
            optimizer,
            max_lr=[float(g["lr"]) for g in optimizer.param_groups],
            total_steps=run_units,
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
        _check_greedy(hp)
        transformers = _require(spec)
        initial = [float(g["lr"]) for g in optimizer.param_groups]
        sched = transformers.optimization.GreedyLR(
            optimizer,
            mode="min",
            factor=float(hp["factor"]),
            patience=int(hp["patience"]),
            smooth=hp["smooth"],
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
                "pass control= (uncertainty_lr_study.controls.load_control_input reads it)"
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
        sched = ClampedCosineAnnealingLR(optimizer, T_max=run_units - warmup_steps, eta_min=0.0)
    else:  # pragma: no cover - every registry name has a branch
        raise AssertionError(f"no builder for {name!r}")
    return _with_warmup(optimizer, sched, warmup_steps), spec


def _check_greedy(hp: Mapping[str, Any]) -> None:
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
