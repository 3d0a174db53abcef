"""The registry of every schedule in the study: the baselines (torch's own classes,
built for a given run length), the peers practitioners pick, the controls, and the
uncertainty schedules (:class:`uncertainty_lr.UncertaintyLR`, the library's).

- :mod:`~uncertainty_lr_study.registry.table`: the specs as one table
  (:data:`SCHEDULERS`; each states its interval, scaling, warmup, optimizer and
  builder);
- :mod:`~uncertainty_lr_study.registry.builders`: one small builder per schedule;
- :mod:`~uncertainty_lr_study.registry.build`: :func:`build_scheduler` and
  :func:`build_peer_optimizer`, which check a run's arguments and call them;
- :mod:`~uncertainty_lr_study.registry.peers` and
  :mod:`~uncertainty_lr_study.registry.control_schedules`: the schedule classes
  torch lacks.
"""

from uncertainty_lr_study.registry.build import (
    SCALINGS,
    UNCERTAINTY_OPTIONS,
    build_peer_optimizer,
    build_scheduler,
    peer_warmup_steps,
)
from uncertainty_lr_study.registry.control_schedules import (
    ControlInput,
    ReplayLR,
    ScriptedSignalLR,
)
from uncertainty_lr_study.registry.peers import (
    ClampedCosineAnnealingLR,
    ClampedOneCycleLR,
    WarmupReduceLROnPlateau,
    effective_lrs,
)
from uncertainty_lr_study.registry.table import (
    FAMILIES,
    SCHEDULERS,
    WARMUP,
    WARMUPS,
    ScheduleSpec,
    registry_order,
)

__all__ = [
    "FAMILIES",
    "SCALINGS",
    "SCHEDULERS",
    "UNCERTAINTY_OPTIONS",
    "WARMUP",
    "WARMUPS",
    "ClampedCosineAnnealingLR",
    "ClampedOneCycleLR",
    "ControlInput",
    "ReplayLR",
    "ScheduleSpec",
    "ScriptedSignalLR",
    "WarmupReduceLROnPlateau",
    "build_peer_optimizer",
    "build_scheduler",
    "effective_lrs",
    "peer_warmup_steps",
    "registry_order",
]
