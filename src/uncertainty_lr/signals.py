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
    _check_logits(logits)
    probs = torch.softmax(logits.float(), dim=-1)
    per_sample = 1.0 - (probs * probs).sum(dim=-1)  # (...,)
    return _masked_mean(per_sample, mask)


def predictive_entropy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy of categorical predictions, in nats.

    ``H(p) = -sum_c p_c log p_c`` with ``p = softmax(logits)``: 0 for a one-hot
    prediction, ``log C`` for the uniform one (Shannon 1948). Mean over the batch
    and any further leading dimensions, restricted to ``mask`` where given.

    Args:
        logits: ``(..., C)`` unnormalised scores, ``C >= 2``.
        mask: optional boolean ``logits.shape[:-1]``.

    Returns:
        0-d float tensor in ``[0, log C]`` (nats, per-sample mean).

    Raises:
        ValueError: as :func:`predictive_variance`.
    """
    _check_logits(logits)
    log_p = torch.log_softmax(logits.float(), dim=-1)
    per_sample = -(log_p.exp() * log_p).sum(dim=-1)  # (...,)
    return _masked_mean(per_sample, mask)


def span_predictive_variance(
    start_logits: torch.Tensor, end_logits: torch.Tensor, context_mask: torch.Tensor
) -> torch.Tensor:
    """Predictive variance of extractive-QA span predictions.

    The start and the end of the answer are each a categorical distribution over the
    sequence's token positions; positions outside the context (question, special and
    padding tokens: ``context_mask`` false) are removed from the distribution before
    the softmax. The signal is the mean of the two distributions' predictive
    variances (:func:`predictive_variance`), each averaged over the batch.

    Args:
        start_logits, end_logits: ``(B, L)`` scores over the ``L`` token positions.
        context_mask: boolean ``(B, L)``, true on context tokens; every row needs at
            least two.

    Returns:
        0-d float tensor in ``[0, 1)``.

    Raises:
        ValueError: mismatched shapes, or a row with fewer than two context tokens.
    """
    if (
        not (start_logits.shape == end_logits.shape == context_mask.shape)
        or start_logits.dim() != 2
    ):
        raise ValueError(
            "start_logits, end_logits and context_mask must all have shape (B, L), got "
            f"{tuple(start_logits.shape)}, {tuple(end_logits.shape)}, {tuple(context_mask.shape)}"
        )
    mask = context_mask.to(torch.bool)
    if bool((mask.sum(dim=1) < 2).any()):
        raise ValueError("every row of context_mask needs at least two context tokens")
    fill = torch.finfo(torch.float32).min
    start = start_logits.float().masked_fill(~mask, fill)
    end = end_logits.float().masked_fill(~mask, fill)
    return 0.5 * (predictive_variance(start) + predictive_variance(end))


def loss_variance(per_sample_loss: torch.Tensor) -> torch.Tensor:
    """Variance of the per-sample loss across the batch (unbiased, ``B - 1``).

    Args:
        per_sample_loss: ``(B,)`` losses, e.g. ``F.cross_entropy(..., reduction="none")``.

    Returns:
        0-d float tensor (squared loss units).

    Raises:
        ValueError: fewer than two samples, or not a 1-d tensor.
    """
    if per_sample_loss.dim() != 1 or per_sample_loss.numel() < 2:
        raise ValueError(
            f"loss_variance needs a 1-d tensor of at least 2 per-sample losses, got shape "
            f"{tuple(per_sample_loss.shape)}"
        )
    return per_sample_loss.detach().float().var(unbiased=True)


@torch.no_grad()
def mc_dropout_variance(
    model: torch.nn.Module,
    probe: torch.Tensor | dict[str, torch.Tensor],
    passes: int = 10,
    output_to_logits=None,
) -> torch.Tensor:
    """MC-dropout predictive variance (Gal & Ghahramani 2016) on a fixed probe batch.

    Runs ``passes`` stochastic forward passes with dropout active -- the model in
    training mode, so that ``nn.Dropout`` modules, functional dropout and attention
    dropout all sample masks -- while every batch-norm layer stays in evaluation
    mode (running statistics used, never updated). Returns the variance over passes
    of the class probabilities, summed over classes and averaged over the probe
    batch: ``mean_b sum_c Var_t[p_t(c | x_b)]``. The modules' training flags and the
    global random-number state are restored afterwards, so a probe does not change
    the training run's dropout masks. Cost: ``passes`` forward passes of the probe
    batch per call; call it every N optimizer steps, not every step.

    Args:
        model: the network; its output (or ``output_to_logits(output)``) must be
            logits ``(B, C)``.
        probe: a fixed input batch (tensor, or a dict of keyword tensors).
        passes: ``T >= 2`` stochastic passes.
        output_to_logits: optional callable mapping the model's output to logits,
            e.g. ``lambda out: out.logits`` for Hugging Face models.

    Returns:
        0-d float tensor (probability units squared, summed over classes).

    Raises:
        ValueError: ``passes < 2``, or a model whose passes are all identical (it has
            no active dropout: MC dropout would silently give 0).
    """
    if passes < 2:
        raise ValueError(f"passes must be >= 2, got {passes}")
    modes = {m: m.training for m in model.modules()}
    try:
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        with torch.random.fork_rng(devices=_rng_devices(probe)):
            outs = []
            for _ in range(passes):
                out = model(**probe) if isinstance(probe, dict) else model(probe)
                logits = output_to_logits(out) if output_to_logits else out
                outs.append(torch.softmax(logits.float(), dim=-1))
    finally:
        for m, training in modes.items():
            m.train(training)
    probs = torch.stack(outs)  # (T, B, C)
    if bool((probs == probs[0]).all()):
        raise ValueError(
            "all MC-dropout passes gave identical outputs: the model has no active dropout "
            "(add dropout or use another signal)"
        )
    return probs.var(dim=0, unbiased=True).sum(dim=-1).mean()


def _rng_devices(probe) -> list[int]:
    tensors = probe.values() if isinstance(probe, dict) else [probe]
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(
            f"logits must have shape (..., C) with C >= 2 classes, got {tuple(logits.shape)}"
        )


def _masked_mean(per_sample: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_sample.mean()
    if mask.shape != per_sample.shape:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal logits.shape[:-1] = "
            f"{tuple(per_sample.shape)}"
        )
    mask = mask.to(torch.bool)
    if not bool(mask.any()):
        raise ValueError("mask selects no position: the mean is undefined")
    return per_sample[mask].mean()


SIGNALS = {
    "grad_norm": "global L2 norm of the gradients (gradient_norm)",
    "predictive_variance": "mean sum_c p_c(1-p_c) of the training predictions (predictive_variance)",
    "predictive_entropy": "mean entropy of the training predictions, nats (predictive_entropy)",
    "loss_variance": "variance of the per-sample training loss (loss_variance)",
    "mc_dropout_variance": "MC-dropout variance on a probe batch (mc_dropout_variance)",
}
"""Names of the signals the training engine logs, with what each measures."""
