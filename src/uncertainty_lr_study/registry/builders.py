"""One small builder per schedule of the registry: how its learning rate moves in a
run of a given shape. :func:`uncertainty_lr_study.registry.build_scheduler` checks
the arguments, computes the :class:`RunShape`, calls the spec's builder and puts the
task's warmup before the result where the spec says so (``warmup="task"``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    StepLR,
)

from uncertainty_lr.scheduler import UncertaintyLR
from uncertainty_lr_study.registry.control_schedules import (
    ControlInput,
    ReplayLR,
    ScriptedSignalLR,
)
from uncertainty_lr_study.registry.peers import (
    ClampedCosineAnnealingLR,
    ClampedOneCycleLR,
    WarmupReduceLROnPlateau,
    check_greedy,
    require,
    with_warmup,
)


@dataclass(frozen=True)
class RunShape:
    """The run a schedule is built for, in units of ``step()`` calls (epochs, or
    optimizer steps for a per-step schedule).

    Attributes:
        optimizer: the optimizer to wrap.
        name: the schedule's registry name.
        run_units: calls of ``step()`` in the run.
        units_per_epoch: calls per epoch (1, or the steps per epoch).
        stretch: the study's times x this (``scaling="fraction"``: epochs / the
            reference epochs; 1 otherwise).
        warmup_steps: the task's warmup, in units (the builders of ``warmup="task"``
            schedules leave it room; :func:`build_scheduler` adds it).
        own_warmup: for ``warmup="own"`` schedules, their warmup in units (the
            task's, else their ``warmup_fraction`` of the run); 0 for the others.
        decision_interval: units between two decisions of an uncertainty rule.
        control: a control's source run (None for the other schedules).
        source: a control's source schedule name and its defaults.
        requires: the package the schedule needs (imported by its builder).
    """

    optimizer: Optimizer
    name: str
    run_units: int
    units_per_epoch: int
    stretch: float
    warmup_steps: int
    own_warmup: int
    decision_interval: int
    control: ControlInput | None = None
    source: tuple[str, Mapping[str, Any]] | None = None
    requires: str | None = field(default=None)


def constant(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """The run's learning rate throughout (torch's ``ConstantLR`` at factor 1)."""
    return ConstantLR(r.optimizer, factor=1.0, total_iters=0)


def step(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """``StepLR``: x ``gamma`` every ``step_size`` epochs (x ``stretch``)."""
    step_size = max(1, round(hp["step_size"] * r.stretch * r.units_per_epoch))
    return StepLR(r.optimizer, step_size=step_size, gamma=hp["gamma"])


def cosine(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """``CosineAnnealingLR`` over the run after the task's warmup."""
    return CosineAnnealingLR(r.optimizer, T_max=r.run_units - r.warmup_steps, eta_min=hp["eta_min"])


def exponential(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """``ExponentialLR``: x ``gamma`` per epoch (x ``stretch``), per unit."""
    return ExponentialLR(r.optimizer, gamma=hp["gamma"] ** (1.0 / (r.stretch * r.units_per_epoch)))


def uncertainty(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """:class:`UncertaintyLR`, deciding every ``decision_interval`` units."""
    return UncertaintyLR(r.optimizer, decision_interval=r.decision_interval, **hp)


def warmup_linear(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """Its own warmup, then linear decay to 0 at the end of the run (Hugging Face's
    ``get_linear_schedule_with_warmup``, from torch's classes)."""
    decay = LinearLR(
        r.optimizer, start_factor=1.0, end_factor=0.0, total_iters=r.run_units - r.own_warmup
    )
    return with_warmup(r.optimizer, decay, r.own_warmup)


def warmup_cosine(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """Its own warmup, then cosine decay to 0 (``get_cosine_schedule_with_warmup``)."""
    decay = ClampedCosineAnnealingLR(r.optimizer, T_max=r.run_units - r.own_warmup, eta_min=0.0)
    return with_warmup(r.optimizer, decay, r.own_warmup)


def onecycle(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """OneCycle peaking at the optimizer's rate, its own warm-up phase (``pct_start``);
    the run's last step trains at the floor, later calls keep it."""
    return ClampedOneCycleLR(
        r.optimizer,
        max_lr=[float(g["lr"]) for g in r.optimizer.param_groups],
        total_steps=r.run_units,
        pct_start=float(hp["pct_start"]),
        div_factor=float(hp["div_factor"]),
        final_div_factor=float(hp["final_div_factor"]),
    )


def plateau(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """:class:`WarmupReduceLROnPlateau` with its own warmup, on the validation loss."""
    return WarmupReduceLROnPlateau(
        r.optimizer,
        warmup_steps=r.own_warmup,
        mode="min",
        factor=float(hp["factor"]),
        patience=int(hp["patience"]),
        threshold=float(hp["threshold"]),
    )


def greedy(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """``transformers``' GreedyLR on the training loss, within ``[min_lr_ratio,
    max_lr_ratio]`` x the initial rate; no warmup (GreedyLR has none)."""
    check_greedy(hp)
    transformers = require(r)
    initial = [float(g["lr"]) for g in r.optimizer.param_groups]
    return transformers.optimization.GreedyLR(
        r.optimizer,
        mode="min",
        factor=float(hp["factor"]),
        patience=int(hp["patience"]),
        smooth=hp["smooth"],
        window_size=int(hp["window_size"]),
        min_lr=[lr * float(hp["min_lr_ratio"]) for lr in initial],
        max_lr=[lr * float(hp["max_lr_ratio"]) for lr in initial],
    )


def prodigy(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """Cosine annealing after the task's warmup, as Prodigy's authors recommend (the
    optimizer, :func:`build_peer_optimizer`, sets the step size)."""
    return ClampedCosineAnnealingLR(r.optimizer, T_max=r.run_units - r.warmup_steps, eta_min=0.0)


def _source_run(r: RunShape) -> ControlInput:
    if r.control is None:
        source = r.source[0] if r.source else None
        raise ValueError(
            f"control {r.name!r} needs its source run ({source}, same task): "
            "pass control= (uncertainty_lr_study.controls.load_control_input reads it)"
        )
    return r.control


def replay(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """:class:`ReplayLR` over the source run's trace (which holds its warmup)."""
    return ReplayLR(r.optimizer, _source_run(r).lr_trace)


def shuffled(r: RunShape, hp: Mapping[str, Any]) -> Any:
    """:class:`ScriptedSignalLR`: the source's rule and hyperparameters fed the
    source run's decision signals permuted by ``numpy.random.default_rng(seed)``."""
    import numpy as np  # noqa: PLC0415  (numpy only for the controls)

    control = _source_run(r)
    assert r.source is not None
    order = np.random.default_rng(control.seed).permutation(len(control.signals))
    script: Sequence[float] = [control.signals[i] for i in order]
    return ScriptedSignalLR(
        r.optimizer,
        script,
        decision_interval=r.decision_interval,
        **{**r.source[1], **control.source_params},
    )
