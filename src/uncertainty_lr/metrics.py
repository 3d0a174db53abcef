"""Evaluation metrics: classification scores (torchmetrics) and time-to-target."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchmetrics.classification import (
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_metrics(
    preds: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Accuracy and macro-averaged precision, recall and F1 (torchmetrics); for two
    classes also precision, recall and F1 of the positive class (index 1).

    Args:
        preds: predicted class indices, int ``(N,)``, or logits ``(N, C)``.
        targets: true class indices, int ``(N,)``.
        num_classes: ``C``.

    Returns:
        ``{"accuracy", "precision_macro", "recall_macro", "f1_macro"}`` as floats in
        [0, 1], plus ``{"precision", "recall", "f1"}`` (positive class) when
        ``num_classes == 2``. Accuracy is the fraction of correct predictions (micro
        average).
    """
    if preds.dim() == 2:
        preds = preds.argmax(dim=1)
    preds, targets = preds.cpu(), targets.cpu()
    binary = {}
    if num_classes == 2:
        binary = {
            "precision": float(BinaryPrecision()(preds, targets)),
            "recall": float(BinaryRecall()(preds, targets)),
            "f1": float(BinaryF1Score()(preds, targets)),
        }
    return {
        **binary,
        "accuracy": float(MulticlassAccuracy(num_classes, average="micro")(preds, targets)),
        "precision_macro": float(MulticlassPrecision(num_classes, average="macro")(preds, targets)),
        "recall_macro": float(MulticlassRecall(num_classes, average="macro")(preds, targets)),
        "f1_macro": float(MulticlassF1Score(num_classes, average="macro")(preds, targets)),
    }


def time_to_target(
    values: Sequence[float],
    target: float,
    steps: Sequence[int],
    epochs: Sequence[float],
    seconds: Sequence[float],
    mode: str = "max",
) -> dict[str, float | int | bool | None]:
    """First evaluation at which a validation metric reaches its target.

    Args:
        values: the metric at each evaluation, in order.
        target: the target value.
        steps: optimizer steps done at each evaluation.
        epochs: (fractional) epochs done at each evaluation.
        seconds: training wall seconds elapsed at each evaluation.
        mode: ``"max"`` (reached when value >= target, e.g. accuracy) or ``"min"``
            (value <= target, e.g. loss).

    Returns:
        ``{"reached", "steps", "epochs", "seconds"}``; when the target is never
        reached, ``reached`` is False and the times are None (count them as
        infinite, never drop the run).

    Raises:
        ValueError: sequences of unequal length or an unknown mode.
    """
    if not len(values) == len(steps) == len(epochs) == len(seconds):
        raise ValueError("values, steps, epochs and seconds must have the same length")
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    for v, s, e, t in zip(values, steps, epochs, seconds):
        hit = v >= target if mode == "max" else v <= target
        if math.isfinite(v) and hit:
            return {"reached": True, "steps": int(s), "epochs": float(e), "seconds": float(t)}
    return {"reached": False, "steps": None, "epochs": None, "seconds": None}
