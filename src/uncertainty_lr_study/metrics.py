"""Evaluation metrics: classification scores (torchmetrics), SQuAD v1.1 exact match
and F1 (the official evaluation script's rules), and time-to-target."""

from __future__ import annotations

import logging
import math
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence

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

log = logging.getLogger(__name__)


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


# ------------------------------------------------------------------- SQuAD v1.1

_PUNCTUATION = frozenset(string.punctuation)  # ASCII only, as the official script
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's answer normalisation, in the official script's order: lower
    case; remove the ASCII punctuation of ``string.punctuation`` (other symbols such
    as '–' stay); replace the articles a / an / the, as whole words, by a space;
    collapse whitespace (``" ".join(text.split())``)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised answers are equal (two empty ones included), else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """F1 of the multisets of normalised tokens (a repeated token counts as often as
    it occurs in both); 0.0 when they share no token, so also when both are empty."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_v1_scores(
    predictions: Mapping[str, str],
    golds: Mapping[str, Sequence[str]],
    *,
    strict: bool = False,
    percent: bool = False,
) -> dict[str, float]:
    """Exact match and F1 over a dataset, as the official SQuAD v1.1 script.

    Per question, the maximum of :func:`squad_exact_match` and of :func:`squad_f1`
    over its gold answers; the totals are the means over every question of
    ``golds``. A question without a prediction scores 0 (logged as a warning), or is
    refused with ``strict``; predictions for questions not in ``golds`` are ignored.

    Args:
        predictions: ``{question id: predicted answer text}``.
        golds: ``{question id: its gold answers}``, the whole dataset.
        strict: raise on questions without a prediction instead of scoring them 0.
        percent: report percentages (the official script's unit) instead of
            fractions in ``[0, 1]``.

    Returns:
        ``{"exact_match": float, "f1": float}``.

    Raises:
        ValueError: no questions, a question without gold answers, or (``strict``)
            questions without a prediction (the message names them).
        TypeError: a prediction that is not a string.
    """
    if not golds:
        raise ValueError("SQuAD scores need at least one question")
    missing = [qid for qid in golds if qid not in predictions]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        if strict:
            raise ValueError(f"no prediction for {len(missing)} question(s): {shown}")
        log.warning("%d unanswered question(s) score 0: %s", len(missing), shown)
    em = f1 = 0.0
    for qid, answers in golds.items():
        if not answers:
            raise ValueError(f"question {qid!r} has no gold answer")
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            kind = type(prediction).__name__
            raise TypeError(f"the prediction for {qid!r} is a {kind}, not a string")
        em += max(squad_exact_match(prediction, a) for a in answers)
        f1 += max(squad_f1(prediction, a) for a in answers)
    scale = 100.0 if percent else 1.0
    return {"exact_match": scale * em / len(golds), "f1": scale * f1 / len(golds)}
