"""uncertainty-lr: learning-rate schedules that react to the model's own uncertainty.

The library part (signals and schedulers) depends only on PyTorch:

>>> from uncertainty_lr import UncertaintyLR, gradient_norm, predictive_variance

Experiment code (data loaders, models, the training engine, analysis) lives in
sub-packages and is imported on demand.
"""

from uncertainty_lr.schedulers import (
    SCHEDULERS,
    ReplayLR,
    ScheduleSpec,
    ScriptedSignalLR,
    UncertaintyLR,
    WarmupReduceLROnPlateau,
    build_peer_optimizer,
    build_scheduler,
    uncertainty_part,
)
from uncertainty_lr.signals import gradient_norm, predictive_variance

__all__ = [
    "SCHEDULERS",
    "ReplayLR",
    "ScheduleSpec",
    "ScriptedSignalLR",
    "UncertaintyLR",
    "WarmupReduceLROnPlateau",
    "build_peer_optimizer",
    "build_scheduler",
    "gradient_norm",
    "predictive_variance",
    "uncertainty_part",
]

__version__ = "0.1.0"
