"""Building a registered schedule (and the optimizer of a peer that brings its own)
for a run of a given length: the arguments are checked here, the table
(:mod:`uncertainty_lr_study.registry.table`) says whose warmup a schedule gets, and
its builder (:mod:`uncertainty_lr_study.registry.builders`) how its rate moves."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from uncertainty_lr_study.registry.builders import RunShape
from uncertainty_lr_study.registry.control_schedules import ControlInput
from uncertainty_lr_study.registry.peers import require, with_warmup
from uncertainty_lr_study.registry.table import SCHEDULERS, ScheduleSpec

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
    package = require(spec)
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
    :func:`uncertainty_lr.uncertainty_part` to feed it.

    Whose warmup each schedule gets is its spec's ``warmup`` (the registry table,
    :data:`~uncertainty_lr_study.registry.table.SCHEDULERS`): ``"task"`` schedules get
    the warmup above, ``"own"`` ones warm up themselves, ``"none"`` get none. The
    peers (``spec.family == "peer"``) follow their own conventions, with the
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
    spec = _checked_spec(name, epochs, steps_per_epoch, interval, scaling)
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
    own_warmup = 0
    if spec.warmup == "own":
        own_warmup = min(peer_warmup_steps(name, run_units, warmup_steps, **overrides), run_units - 1)
    shape = RunShape(
        optimizer=optimizer,
        name=name,
        run_units=run_units,
        units_per_epoch=units_per_epoch,
        stretch=epochs / reference_epochs if scaling == "fraction" and spec.scaled else 1.0,
        warmup_steps=int(warmup_steps) if spec.warmup == "task" else 0,
        own_warmup=own_warmup,
        decision_interval=decision_interval,
        control=control,
        source=(spec.source, SCHEDULERS[spec.source].defaults) if spec.source else None,
        requires=spec.requires,
    )
    sched = spec.build(shape, {**spec.defaults, **overrides})
    if spec.warmup == "task":
        sched = with_warmup(optimizer, sched, shape.warmup_steps)
    return sched, spec


def _checked_spec(
    name: str, epochs: int, steps_per_epoch: int, interval: str, scaling: str
) -> ScheduleSpec:
    """The spec of ``name``, after the checks of :func:`build_scheduler`'s run shape."""
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
    if spec.interval == "step" and interval != "step":
        raise ValueError(
            f"schedule {name!r} is stepped after every optimizer step: build it with "
            "interval='step' (its spec's interval)"
        )
    return spec
