"""What :class:`uncertainty_lr.UncertaintyLR` keeps between decisions and checks in
its arguments: the window of observations of each signal (sum, count, non-finite
count and EMA, kept on the signal's own device until a decision reads it), the
conversion of an observed value, the world size under ``torch.distributed``, and
the per-group argument and bound checks. Private: the scheduler's public
behaviour is documented on the class."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

log = logging.getLogger("uncertainty_lr.scheduler")  # the scheduler's own logger

Number = float | int

SINGLE = "signal"
"""Name under which a single (unnamed) signal is kept."""


def _per_group(
    value: Number | Sequence[Number] | None, n_groups: int, name: str
) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return [float(value)] * n_groups
    values = [float(v) for v in value]
    if len(values) != n_groups:
        raise ValueError(
            f"{name} has {len(values)} entries but the optimizer has {n_groups} parameter "
            f"groups: give one value, or one per group"
        )
    return values


def _read_is_cheap(device: torch.device) -> bool:
    """Whether reading a value of ``device`` to the host costs no synchronisation
    (the CPU's memory is the host's)."""
    return device.type == "cpu"


def _as_scalar(value: Any) -> float | torch.Tensor:
    """A signal value as a Python float, or as a 0-d tensor where reading it would
    wait for an accelerator (it is then kept on its device). Accepts Python numbers,
    one-element tensors and NumPy scalars or one-element arrays (anything with
    ``__float__`` and one element)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"observe() takes a scalar signal, got a tensor of shape {tuple(value.shape)}; "
                "reduce it first (e.g. .mean())"
            )
        if _read_is_cheap(value.device):
            return float(value.item())
        return value.detach().reshape(())
    if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
        raise TypeError(
            f"observe() takes a number or a one-element tensor, got {type(value).__name__} "
            f"{value!r}"
        )
    if getattr(value, "size", 1) != 1:  # a NumPy array of several values
        raise ValueError(
            f"observe() takes a scalar signal, got an array of shape {value.shape}; reduce it first"
        )
    return float(value.item() if hasattr(value, "item") else value)


def _check_positive_mapping(value: Number | Mapping[str, Number], name: str) -> dict[str, float]:
    items = dict(value) if isinstance(value, Mapping) else {SINGLE: value}
    if not items:
        raise ValueError(f"{name} must name at least one signal")
    out = {}
    for key, v in items.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{name} must be a number, got {v!r} for {key!r}")
        v = float(v)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v!r} for {key!r}")
        out[str(key)] = v
    return out


def _distributed_world() -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class _Window:
    """The observations of one signal since the last decision: sum, count and
    non-finite count, plus its EMA across decisions.

    Python numbers are added as Python floats; tensors on their own device
    (float64, float32 where the device has no float64), with the non-finite ones
    masked out by tensor operations, so no value is read back to the host before
    :meth:`take`.
    """

    def __init__(self) -> None:
        self.total: float | torch.Tensor = 0.0
        self.count: float | torch.Tensor = 0.0
        self.nonfinite: float | torch.Tensor = 0.0
        self.ema: float | torch.Tensor | None = None
        self.device: torch.device | None = None  # where the tensor state lies, if any

    def add(self, v: float | torch.Tensor, alpha: float | None) -> None:
        """Add one value; ``alpha`` is the EMA weight (None: no EMA)."""
        device = self.device
        if device is None and isinstance(v, float):
            if not math.isfinite(v):
                self.nonfinite += 1.0
                return
            self.total += v
            self.count += 1.0
            if alpha is not None:
                self.ema = v if self.ema is None else self.ema + alpha * (v - self.ema)
            return
        device = self.device = v.device if isinstance(v, torch.Tensor) else device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        v = torch.as_tensor(v, dtype=dtype, device=device)
        finite = torch.isfinite(v)
        self.total = self.total + torch.where(finite, v, 0.0)
        self.count = self.count + finite.to(dtype)
        self.nonfinite = self.nonfinite + (~finite).to(dtype)
        if alpha is None:
            return
        if self.ema is None:  # NaN marks an EMA not started yet
            self.ema = torch.where(finite, v, torch.nan)
        else:
            prev = torch.as_tensor(self.ema, dtype=dtype, device=device)
            updated = torch.where(torch.isnan(prev), v, prev + alpha * (v - prev))
            self.ema = torch.where(finite, updated, prev)

    def values(self) -> tuple[float, float, float, float | None]:
        """``(sum, count, non-finite count, ema)`` as floats: one host read of the
        state where it lies on a device."""
        parts = [self.total, self.count, self.nonfinite, math.nan if self.ema is None else self.ema]
        device = self.device
        if device is not None:
            dtype = torch.float32 if device.type == "mps" else torch.float64
            parts = torch.stack(
                [torch.as_tensor(p, dtype=dtype, device=device) for p in parts]
            ).tolist()
        total, count, nonfinite, ema = (float(p) for p in parts)
        return total, count, nonfinite, (None if math.isnan(ema) else ema)

    def take(self) -> tuple[float, float, float, float | None]:
        """:meth:`values`, then a new window (the EMA is kept)."""
        total, count, nonfinite, ema = self.values()
        self.total, self.count, self.nonfinite = 0.0, 0.0, 0.0
        self.ema, self.device = ema, None
        return total, count, nonfinite, ema


def _bound_rule(value: Number | Sequence[Number] | None) -> float | str | None:
    """How a bound was given: None, one number, or ``"per-group"``."""
    if value is None:
        return None
    return float(value) if isinstance(value, (int, float)) else "per-group"


def _check_bounds(lows: Sequence[float], highs: Sequence[float], first: int = 0) -> None:
    for i, (lo, hi) in enumerate(zip(lows, highs), start=first):
        if lo < 0 or hi < 0:
            raise ValueError(f"min_lr and max_lr must be >= 0, got {lo} and {hi} for group {i}")
        if lo > hi:
            raise ValueError(
                f"min_lr ({lo}) > max_lr ({hi}) for parameter group {i}: swap them or "
                "widen the range"
            )


def _check_options(
    *,
    decision_interval: Any,
    factor: Any,
    increase_factor: Any,
    min_lr_ratio: Any,
    smoothing: Any,
    ema_half_life: Any,
    threshold_mode: Any,
    scale_half_life: Any,
    cooldown: Any,
    combine: Any,
) -> None:
    """Refuse an option of :class:`~uncertainty_lr.UncertaintyLR` outside its range,
    naming it (the constructor's arguments of the same names)."""
    if int(decision_interval) != decision_interval or decision_interval < 1:
        raise ValueError(
            f"decision_interval must be an integer >= 1 (calls of step()), got {decision_interval!r}"
        )
    if not 0.0 < factor < 1.0:
        raise ValueError(f"factor must lie in (0, 1) (it lowers the LR), got {factor!r}")
    if not (math.isfinite(increase_factor) and increase_factor > 1.0):
        raise ValueError(f"increase_factor must be > 1 (it raises the LR), got {increase_factor!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio!r}")
    if smoothing not in ("mean", "ema"):
        raise ValueError(f"smoothing must be 'mean' or 'ema', got {smoothing!r}")
    if smoothing == "ema" and (ema_half_life is None or not ema_half_life > 0):
        raise ValueError(
            f"smoothing='ema' needs ema_half_life > 0 (in observations), got {ema_half_life!r}"
        )
    if threshold_mode not in ("abs", "rel"):
        raise ValueError(f"threshold_mode must be 'abs' or 'rel', got {threshold_mode!r}")
    if not scale_half_life > 0:
        raise ValueError(f"scale_half_life must be > 0 (in decisions), got {scale_half_life!r}")
    if int(cooldown) != cooldown or cooldown < 0:
        raise ValueError(f"cooldown must be an integer >= 0 (decisions), got {cooldown!r}")
    if combine not in ("any", "weighted"):
        raise ValueError(f"combine must be 'any' or 'weighted', got {combine!r}")


def _verdict(
    ratios: dict[str, float], combine: str, weights: Mapping[str, float], n_signals: int
) -> int:
    """-1 decrease, +1 increase, 0 keep, from each signal's ratio to its threshold:
    ``"any"``: decrease if any ratio is above 1, increase if all ``n_signals`` are
    below; ``"weighted"``: the weighted mean ratio against 1."""
    if combine == "weighted":
        w = {n: weights.get(n, 0.0) for n in ratios}
        total = sum(w.values())
        if total == 0:
            return 0
        score = sum(w[n] * r for n, r in ratios.items()) / total
        return -1 if score > 1.0 else (1 if score < 1.0 else 0)
    if any(r > 1.0 for r in ratios.values()):
        return -1
    if all(r < 1.0 for r in ratios.values()) and len(ratios) == n_signals:
        return 1
    return 0


def _windows_state(windows: Mapping[str, _Window]) -> dict[str, dict[str, Any]]:
    """The pending windows as plain data (one host read each)."""
    values = {n: w.values() for n, w in windows.items()}
    return {
        "sums": {n: v[0] for n, v in values.items()},
        "counts": {n: int(v[1]) for n, v in values.items()},
        "pending_nonfinite": {n: int(v[2]) for n, v in values.items()},
        "emas": {n: v[3] for n, v in values.items()},
    }


def _restored_windows(
    names: Any,
    sums: Mapping[str, float],
    counts: Mapping[str, int],
    emas: Mapping[str, float | None],
    pending_nonfinite: Mapping[str, int],
) -> dict[str, _Window]:
    """Windows of the signals ``names`` from :func:`_windows_state`'s data."""
    windows = {n: _Window() for n in names}
    for n, window in windows.items():
        window.total = float(sums.get(n, 0.0))
        window.count = float(counts.get(n, 0))
        window.nonfinite = float(pending_nonfinite.get(n, 0))
        window.ema = emas.get(n)
    return windows


def _new_group_bounds(
    new: Sequence[dict[str, Any]], rules: Mapping[str, Any], first: int, n_groups: int
) -> tuple[list[float], list[float]]:
    """Bounds of parameter groups added to the optimizer after the scheduler was
    built (``new``, from index ``first`` of ``n_groups``), by the rule the bounds
    were given with (``rules``: see :func:`_bound_rule`); each group's
    ``initial_lr`` is set from its rate where missing.

    Raises:
        ValueError: the bounds were given per group (they cannot be extended).
    """
    per_group = [k for k in ("min_lr", "max_lr") if rules[k] == "per-group"]
    if per_group:
        raise ValueError(
            f"the optimizer has {n_groups} parameter groups but the scheduler was "
            f"built for {first} with {' and '.join(per_group)} given per "
            "group: build the scheduler after adding every group, or give the bounds "
            "as one number each"
        )
    lows, highs = [], []
    for g in new:
        rate = float(g.setdefault("initial_lr", g["lr"]))
        lows.append(rules["min_lr"] if rules["min_lr"] is not None else rate * rules["min_lr_ratio"])
        highs.append(rules["max_lr"] if rules["max_lr"] is not None else rate)
    _check_bounds(lows, highs, first=first)
    return lows, highs


def _relative(
    signals: Mapping[str, float], scales: dict[str, float | None], half_life: float
) -> dict[str, float] | None:
    """Signals over their running scales (``threshold_mode="rel"``), updating
    ``scales`` in place (an EMA with ``half_life`` decisions); None while a scale is
    not set yet (the first decision)."""
    values, ready = {}, True
    alpha = 1.0 - 0.5 ** (1.0 / half_life)
    for n, v in signals.items():
        scale = scales[n]
        if scale is None or scale <= 0:
            ready = False
        else:
            values[n] = v / scale
        scales[n] = v if scale is None else scale + alpha * (v - scale)
    return values if ready else None


def _take_windows(
    windows: Mapping[str, _Window], names: Sequence[str], smoothing: str
) -> tuple[list[list[float]], float]:
    """Take each signal's window: ``[total, count]`` per name (``smoothing="ema"``:
    ``[ema, 1]`` when the window saw a finite value, else ``[0, 0]``) and the number
    of non-finite values left out."""
    local, skipped = [], 0.0
    for n in names:
        total, count, nonfinite, ema = windows[n].take()
        skipped += nonfinite
        if smoothing == "ema":
            total, count = (ema if count and ema is not None else 0.0), (1.0 if count else 0.0)
        local.append([total, count])
    return local, skipped


def _mean_over_ranks(names: Sequence[str], local: list[list[float]]) -> dict[str, float]:
    """Each signal's mean, its totals and counts summed over all ranks under
    ``torch.distributed`` (one ``all_reduce``); signals with no value are left out."""
    if _distributed_world() > 1:
        buf = torch.tensor(local, dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            buf = buf.cuda()
        torch.distributed.all_reduce(buf)
        local = buf.cpu().tolist()
    return {n: total / count for n, (total, count) in zip(names, local) if count > 0}


def _set_saved_rates(groups: Sequence[dict[str, Any]], saved: Sequence[float]) -> None:
    """Set the parameter groups' rates to a restored scheduler's (logged where they
    differ)."""
    current = [float(g["lr"]) for g in groups]
    if current != list(saved):
        log.info(
            "UncertaintyLR.load_state_dict: set the optimizer's learning rates %s to "
            "the saved %s",
            current,
            list(saved),
        )
        for group, lr in zip(groups, saved):
            group["lr"] = lr


def _warn_clipped_increase(increase_factor: float, max_lrs: Sequence[float]) -> None:
    """Log, at the first increase, that ``max_lr`` clipped it away entirely."""
    log.warning(
        "UncertaintyLR: an increase (x%g) was clipped at max_lr %s, which defaults "
        "to the initial rate: increases can then only undo decreases. Give max_lr "
        "above the initial rate to let the schedule raise it.",
        increase_factor,
        max_lrs,
    )
