"""Uncertainty signals: cheap, per-batch measurements of how unsure the model is.

Each signal is a pure function that returns a 0-d tensor on the input's device (no
host synchronisation), so it can be computed every optimizer step and handed to
:meth:`uncertainty_lr.UncertaintyLR.observe`.

Call order inside a training step::

    loss = criterion(logits, y)              # logits: (B, C)
    loss.backward()
    g = gradient_norm(model.parameters())    # after backward, before optimizer.step
    v = predictive_variance(logits.detach())
    scheduler.observe(g)                     # or observe(v)
    optimizer.step()
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def gradient_norm(parameters: Iterable[torch.nn.Parameter] | torch.Tensor) -> torch.Tensor:
    """Global L2 norm of all gradients: ``sqrt(sum_i ||g_i||_2^2)``.

    This is the quantity ``torch.nn.utils.clip_grad_norm_`` computes (and it is
    computed here by torch's own ``torch.nn.utils.get_total_norm``). Measure it
    after ``backward()`` and, under mixed precision, after ``GradScaler.unscale_``;
    measured before any gradient clipping, it is the raw norm. The engine of this
    project measures it before clipping in every arm of a comparison.

    Args:
        parameters: parameters (or a single tensor) whose ``.grad`` to measure.
            Parameters without a gradient are skipped.

    Returns:
        0-d float tensor (per batch, unitless; the gradient of a per-sample-mean
        loss). ``0.0`` when no parameter has a gradient.
    """
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


def predictive_variance(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean predictive variance of categorical predictions.

    For a predicted distribution ``p = softmax(logits)`` over ``C`` classes the
    variance of the one-hot outcome, summed over classes, is
    ``sum_c p_c (1 - p_c) = 1 - sum_c p_c^2`` (the Gini impurity). It is 0 for a
    one-hot prediction and maximal, ``(C - 1) / C``, for the uniform one. The
    value returned is the mean over the batch (and over any further leading
    dimensions), restricted to the positions where ``mask`` is true.

    Args:
        logits: unnormalised scores, shape ``(..., C)`` (e.g. ``(B, C)``), from the
            training forward pass. Pass ``logits.detach()``: no graph is needed.
        mask: optional boolean tensor of shape ``logits.shape[:-1]``; positions
            where it is false are left out of the mean.

    Returns:
        0-d float tensor in ``[0, (C - 1) / C]`` (per-sample mean over the batch).

    Raises:
        ValueError: if ``logits`` has no class dimension, ``C < 2``, the mask's
            shape does not match, or the mask selects nothing.
    """
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"predictive_variance needs logits of shape (..., C) with C >= 2 classes, "
            f"got shape {tuple(logits.shape)}"
        )
    probs = torch.softmax(logits.float(), dim=-1)
    per_sample = 1.0 - (probs * probs).sum(dim=-1)  # (...,)
    if mask is None:
        return per_sample.mean()
    if mask.shape != per_sample.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal logits.shape[:-1] = "
            f"{tuple(per_sample.shape)}"
        )
    mask = mask.to(torch.bool)
    if not bool(mask.any()):
        raise ValueError("mask selects no position: predictive variance is undefined")
    return per_sample[mask].mean()


SIGNALS = {
    "grad_norm": "global L2 norm of the gradients (gradient_norm)",
    "predictive_variance": "mean sum_c p_c(1-p_c) of the training predictions (predictive_variance)",
}
"""Names of the signals the training engine logs, with what each measures."""
