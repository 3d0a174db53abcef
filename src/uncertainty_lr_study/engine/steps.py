"""Per-step values of the plain backend between two host reads and two evaluations:
kept on the device until needed (:class:`_PendingSteps`), summed over an evaluation
window (:class:`_Window`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class _Window:
    """Running sums of per-step quantities between two evaluations."""

    loss: float = 0.0
    grad_norm: float = 0.0
    variance: float = 0.0
    n: int = 0

    def add(self, loss: float, grad_norm: float, variance: float) -> None:
        self.loss += loss
        self.grad_norm += grad_norm
        self.variance += variance
        self.n += 1

    def means(self) -> dict[str, float]:
        if not self.n:
            return dict.fromkeys(("train_loss", "grad_norm", "predictive_variance"), math.nan)
        return {
            "train_loss": self.loss / self.n,
            "grad_norm": self.grad_norm / self.n,
            "predictive_variance": self.variance / self.n,
        }

SYNC_EVERY_STEPS = 50
"""Most optimizer steps between two host reads of the per-step values when neither a
history row nor an evaluation asks for them sooner (:class:`_PendingSteps`)."""

class _PendingSteps:
    """Per-step values (loss, gradient norm, predictive variance) kept on the device
    until the host needs them, then read for all pending steps at once: one host
    synchronisation per read instead of three per step.

    :meth:`add` keeps a step's three 0-d tensors (no synchronisation); :meth:`read`
    returns ``(step, epoch, loss, grad_norm, variance)`` per step, in step order, the
    values the Python floats ``.item()`` would give, and empties the buffer.
    """

    def __init__(self) -> None:
        self.at: list[tuple[int, float]] = []  # (steps done before it, fractional epoch)
        self.values: list[torch.Tensor] = []  # 3 per step, 0-d

    def __len__(self) -> int:
        return len(self.at)

    def add(self, step: int, epoch: float, *values: torch.Tensor) -> None:
        """Keep the step's loss, gradient norm and predictive variance (0-d each)."""
        self.at.append((step, epoch))
        self.values += [v.detach() for v in values]

    def read(self) -> list[tuple[int, float, float, float, float]]:
        if not self.at:
            return []
        values = torch.stack(self.values).view(-1, 3).tolist()  # (n, 3); the one sync
        out = [(*at, *v) for at, v in zip(self.at, values)]
        self.at, self.values = [], []
        return out
