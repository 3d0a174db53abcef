"""Models of the study's plain-PyTorch backend, built by name from the experiment config.

The transformer models (``model: transformer`` in the config) are built by the
Hugging Face backend (:mod:`uncertainty_lr_study.engine.trainer`) from a pretrained checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

from uncertainty_lr_study.models.lenet import LeNet5
from uncertainty_lr_study.models.lstm import LSTMClassifier

MODELS = {"lenet5": LeNet5, "lstm": LSTMClassifier}
"""Model constructors by config name."""


def build_model(name: str, num_classes: int, **kwargs: Any) -> torch.nn.Module:
    """Build a model by name.

    Args:
        name: a key of :data:`MODELS`.
        num_classes: output classes.
        **kwargs: the model's own arguments (e.g. ``vocab_size``, ``hidden_size``
            of :class:`LSTMClassifier`).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or arguments the
            model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODELS)}")
    try:
        return MODELS[name](num_classes=num_classes, **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: {err}") from err


__all__ = ["MODELS", "LSTMClassifier", "LeNet5", "build_model"]
