"""The registry as a table: one :class:`ScheduleSpec` per schedule of the study,
each stating when it is stepped, whether the study's time scaling applies, whose
warmup it gets, whether it replaces the optimizer, and which builder makes it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from uncertainty_lr_study.registry import builders

FAMILIES = ("baseline", "uncertainty", "peer", "control")
WARMUPS = ("task", "own", "none")
"""Whose warmup a schedule gets: ``"task"``: the task's ``warmup_steps`` (a linear
``LinearLR`` before it, in a ``SequentialLR``); ``"own"``: it warms up itself, over
the task's warmup or else its ``warmup_fraction`` of the run
(:func:`uncertainty_lr_study.registry.peer_warmup_steps`); ``"none"``: no warmup,
the task's is ignored (OneCycle has its own ``pct_start`` phase, GreedyLR none, a
replayed trace holds its source's)."""


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
            (:class:`~uncertainty_lr.UncertaintyLR`), ``"peer"`` (what a practitioner
            would pick instead) or ``"control"``.
        interval: ``"step"``: the schedule is stepped after every optimizer step
            whatever the backend; None: at the backend's interval (once per epoch
            in the plain-PyTorch backend, per optimizer step under the Trainer).
        scaled: whether the study's ``scaling`` applies to its times (``"fraction"``:
            StepLR's step size and ExponentialLR's gamma set for the reference run
            length are scaled to this run's); the others are set by the run length.
        warmup: whose warmup it gets, one of :data:`WARMUPS`.
        metric: what ``step`` is given: None (nothing), ``"val_loss"`` (the
            validation loss, after each evaluation; warmup ticks in between) or
            ``"train_loss"`` (the training batch loss, after every optimizer step).
        optimizer: None (the run's optimizer), or the optimizer this method
            replaces it with (``"schedule-free-adamw"``, ``"prodigy"``): see
            :func:`uncertainty_lr_study.registry.build_peer_optimizer`.
        requires: the Python package the method needs (imported lazily), or None.
        source: for a control, the uncertainty schedule whose run (same task) it
            replays or shuffles.
        cross_seed: for a control, whether it reads the source's run of another
            seed (the next seed the task runs the source on, cyclically: see
            :func:`uncertainty_lr_study.config.cross_seed_source`) instead of its own seed's.
        build: its builder, ``build(shape, hyperparameters) -> scheduler`` (one of
            :mod:`uncertainty_lr_study.registry.builders`).
    """

    name: str
    signal: str | None
    defaults: Mapping[str, Any]
    description: str
    family: str = "baseline"
    interval: str | None = None
    scaled: bool = False
    warmup: str = "task"
    metric: str | None = None
    optimizer: str | None = None
    requires: str | None = None
    source: str | None = None
    cross_seed: bool = False
    build: Callable[..., Any] = field(default=builders.constant, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES or self.warmup not in WARMUPS:
            raise ValueError(f"schedule {self.name!r}: family {self.family!r}, warmup {self.warmup!r}")

    @property
    def replaces_optimizer(self) -> bool:
        """Whether the method brings its own optimizer (the run's is not used)."""
        return self.optimizer is not None


WARMUP = {"warmup_fraction": 0.1}
"""The peers that warm up do so over 10% of the run, unless the task sets its own
warmup (``warmup_steps`` of :func:`uncertainty_lr_study.registry.build_scheduler`)."""

_UNCERTAINTY = {"factor": 0.5, "increase_factor": 1.1, "min_lr_ratio": 1e-3}
_CONTROLS = {
    "replay": ("the learning rates of {source}'s run of the same seed, replayed", False),
    "shuffled": ("{source}'s rule fed its run's decision signals in shuffled order", False),
    "replay-xseed": ("the learning rates of {source}'s run of the next seed, replayed", True),
}

_SPECS = (
    # name, signal, defaults, description; then when it steps, scaling, warmup, build
    ScheduleSpec("constant", None, {}, "constant learning rate", build=builders.constant),
    ScheduleSpec(
        "step", None, {"step_size": 10, "gamma": 0.1}, "StepLR, x0.1 every 10 epochs",
        scaled=True, build=builders.step,
    ),
    ScheduleSpec(
        "cosine", None, {"eta_min": 0.0}, "CosineAnnealingLR, T_max = run length",
        build=builders.cosine,
    ),
    ScheduleSpec(
        "exponential", None, {"gamma": 0.95}, "ExponentialLR, x0.95 per epoch",
        scaled=True, build=builders.exponential,
    ),
    ScheduleSpec(
        "uncertainty-gradnorm", "grad_norm", {"threshold": 0.1, **_UNCERTAINTY},
        "UncertaintyLR on the gradient norm (threshold 0.1)",
        family="uncertainty", build=builders.uncertainty,
    ),
    ScheduleSpec(
        "uncertainty-variance", "predictive_variance", {"threshold": 0.01, **_UNCERTAINTY},
        "UncertaintyLR on the predictive variance (threshold 0.01)",
        family="uncertainty", build=builders.uncertainty,
    ),
    ScheduleSpec(
        "warmup-linear", None, dict(WARMUP),
        "linear warmup, then linear decay to 0 (the Hugging Face Trainer's default)",
        family="peer", interval="step", warmup="own", build=builders.warmup_linear,
    ),
    ScheduleSpec(
        "warmup-cosine", None, dict(WARMUP), "linear warmup, then cosine decay to 0",
        family="peer", interval="step", warmup="own", build=builders.warmup_cosine,
    ),
    ScheduleSpec(
        "onecycle", None, {"pct_start": 0.3, "div_factor": 25.0, "final_div_factor": 1e4},
        "OneCycleLR (Smith & Topin 2019), peak = the run's learning rate",
        family="peer", interval="step", warmup="none", build=builders.onecycle,
    ),
    ScheduleSpec(
        "plateau", None, {"factor": 0.5, "patience": 2, "threshold": 1e-4, **WARMUP},
        "ReduceLROnPlateau on the validation loss (x0.5, patience 2 evaluations), after a warmup",
        family="peer", interval="step", warmup="own", metric="val_loss", build=builders.plateau,
    ),
    ScheduleSpec(
        "greedy", None,
        {"factor": 0.95, "patience": 10, "smooth": True, "window_size": 50,
         "min_lr_ratio": 1e-3, "max_lr_ratio": 1.0},
        "GreedyLR (arXiv:2512.14527) on the smoothed training loss, per step",
        family="peer", interval="step", warmup="none", metric="train_loss",
        requires="transformers", build=builders.greedy,
    ),
    ScheduleSpec(
        "schedule-free", None, dict(WARMUP),
        "Schedule-Free AdamW (Defazio et al. 2024), the run's learning rate, warmup",
        family="peer", warmup="own", optimizer="schedule-free-adamw",
        requires="schedulefree", build=builders.constant,  # the optimizer warms up
    ),
    ScheduleSpec(
        "prodigy", None, {"d_coef": 1.0},
        "Prodigy (Mishchenko & Defazio 2024), lr 1.0, with cosine annealing",
        family="peer", optimizer="prodigy", requires="prodigyopt", build=builders.prodigy,
    ),
    *(
        ScheduleSpec(
            f"{kind}-{short}", None, {}, text.format(source=f"uncertainty-{short}"),
            family="control", source=f"uncertainty-{short}", cross_seed=cross_seed,
            warmup="task" if kind == "shuffled" else "none",
            build=builders.shuffled if kind == "shuffled" else builders.replay,
        )
        for kind, short in [(k, s) for s in ("gradnorm", "variance") for k in ("replay", "shuffled")]
        + [("replay-xseed", s) for s in ("gradnorm", "variance")]
        for text, cross_seed in [_CONTROLS[kind]]
    ),
)

SCHEDULERS: dict[str, ScheduleSpec] = {spec.name: spec for spec in _SPECS}
"""Every schedule of the study by name. Times in ``defaults`` are in epochs, or
fractions of the run (``warmup_fraction``, ``pct_start``)."""


def registry_order(names: Any) -> list[str]:
    """``names`` (any iterable of schedule names) in the registry's order, names
    outside the registry last, alphabetically; each once."""
    present = set(names)
    return [s for s in SCHEDULERS if s in present] + sorted(present - set(SCHEDULERS))
