"""A plain reference implementation of :class:`~uncertainty_lr.UncertaintyLR`'s rule.

:func:`reference_schedule` computes the learning rates the scheduler sets, from the
rule as its docstring states it, in plain Python floats: no tensors, no windows
kept on a device, no torch scheduler machinery, one loop over the calls. It is
written to be read, not to be fast; the tests run the scheduler and this function
on the same random sequences of ``observe`` / ``step`` calls (non-finite values,
several signals, every option) and require the same rates after every step.

What it leaves out, because the scheduler's own tests cover it: ``SequentialLR``
milestones, parameter groups added later, ``torch.distributed`` averaging and
``state_dict`` round trips.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

SIGNAL = "signal"
"""The name of the one signal when ``threshold`` is a number."""


def reference_schedule(
    initial_lrs: Sequence[float],
    calls: Iterable[float | Mapping[str, float] | None],
    threshold: float | Mapping[str, float],
    factor: float = 0.5,
    increase_factor: float = 1.1,
    min_lr: float | Sequence[float] | None = None,
    max_lr: float | Sequence[float] | None = None,
    min_lr_ratio: float = 1e-3,
    smoothing: str = "mean",
    ema_half_life: float | None = None,
    threshold_mode: str = "abs",
    scale_half_life: float = 5.0,
    cooldown: int = 0,
    combine: str = "any",
    weights: Mapping[str, float] | None = None,
    decision_interval: int = 1,
) -> list[list[float]]:
    """The learning rates :class:`~uncertainty_lr.UncertaintyLR` sets, call by call.

    Every argument after ``calls`` means what the scheduler's argument of the same
    name means (a number ``threshold`` names its one signal :data:`SIGNAL`); none is
    validated here.

    Args:
        initial_lrs: each parameter group's rate when the scheduler is built (also
            its ``initial_lr``: the default bounds come from it).
        calls: the calls made on the scheduler, in order: a number or a mapping
            signal name -> number is one ``observe``; None is one ``step``.
        threshold: the signal value above which the rate is lowered, or a mapping
            signal name -> threshold.

    Returns:
        One list per ``step`` call: each group's rate after it.
    """
    thresholds = dict(threshold) if isinstance(threshold, Mapping) else {SIGNAL: threshold}
    weights = dict(weights) if weights is not None else dict.fromkeys(thresholds, 1.0)
    groups = len(initial_lrs)
    lows = _bounds(min_lr, groups) or [lr * min_lr_ratio for lr in initial_lrs]
    highs = _bounds(max_lr, groups) or list(initial_lrs)

    def clip(rates: list[float]) -> list[float]:
        return [min(max(r, lo), hi) for r, lo, hi in zip(rates, lows, highs)]

    ema_weight = 1.0 - 0.5 ** (1.0 / ema_half_life) if smoothing == "ema" else None
    scale_weight = 1.0 - 0.5 ** (1.0 / scale_half_life)
    rates = clip([float(lr) for lr in initial_lrs])
    window: dict[str, list[float]] = {name: [] for name in thresholds}  # finite values
    ema: dict[str, float | None] = dict.fromkeys(thresholds)
    scale: dict[str, float | None] = dict.fromkeys(thresholds)
    cooldown_left = 0
    steps = 0
    out: list[list[float]] = []
    for call in calls:
        if call is not None:  # observe
            values = call if isinstance(call, Mapping) else {SIGNAL: call}
            for name, v in values.items():
                v = float(v)
                if not math.isfinite(v):
                    continue  # left out
                window[name].append(v)
                if ema_weight is not None:
                    ema[name] = v if ema[name] is None else ema[name] + ema_weight * (v - ema[name])
            continue
        steps += 1  # step
        if steps % decision_interval:
            out.append(list(rates))
            continue
        # the signal of each name with a finite value since the last decision
        signals = {}
        for name, seen in window.items():
            if seen:
                signals[name] = ema[name] if smoothing == "ema" else sum(seen) / len(seen)
        window = {name: [] for name in thresholds}
        verdict = 0
        if signals and threshold_mode == "rel":
            ready = all(scale[n] is not None and scale[n] > 0 for n in signals)
            relative = {n: v / scale[n] for n, v in signals.items() if ready}
            for n, v in signals.items():
                scale[n] = v if scale[n] is None else scale[n] + scale_weight * (v - scale[n])
            signals = relative if ready else {}
        if signals and cooldown_left > 0:
            cooldown_left -= 1
        elif signals:
            ratios = {n: v / thresholds[n] for n, v in signals.items()}
            verdict = _verdict(ratios, combine, weights, len(thresholds))
        if verdict < 0:
            rates = clip([r * factor for r in rates])
            cooldown_left = cooldown
        elif verdict > 0:
            rates = clip([r * increase_factor for r in rates])
        out.append(list(rates))
    return out


def _bounds(value: float | Sequence[float] | None, groups: int) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * groups
    return [float(v) for v in value]


def _verdict(
    ratios: Mapping[str, float], combine: str, weights: Mapping[str, float], signals: int
) -> int:
    """-1 lower, +1 raise, 0 keep: "any" lowers when one ratio is above 1 and raises
    when all ``signals`` are below; "weighted" compares the weighted mean ratio of
    the signals present with 1."""
    if combine == "weighted":
        total = sum(weights.get(n, 0.0) for n in ratios)
        if total == 0:
            return 0
        score = sum(weights.get(n, 0.0) * r for n, r in ratios.items()) / total
        return -1 if score > 1 else (1 if score < 1 else 0)
    if any(r > 1 for r in ratios.values()):
        return -1
    if len(ratios) == signals and all(r < 1 for r in ratios.values()):
        return 1
    return 0


__all__ = ["SIGNAL", "reference_schedule"]
