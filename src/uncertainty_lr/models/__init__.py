"""Models of the study, built by name from the experiment config."""

from __future__ import annotations

import torch

from uncertainty_lr.models.lenet import LeNet5

MODELS = {"lenet5": LeNet5}
"""Model constructors by config name."""


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    """Build a model by name.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    return MODELS[name](num_classes=num_classes)


__all__ = ["MODELS", "LeNet5", "build_model"]
