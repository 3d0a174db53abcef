"""Integrations with training frameworks (optional extras; imported on demand).

- :mod:`uncertainty_lr.integrations.hf`: Hugging Face ``Trainer``
  (``pip install "uncertainty-lr[hf]"``).
- :mod:`uncertainty_lr.integrations.lightning`: PyTorch Lightning
  (``pip install "uncertainty-lr[lightning]"``).

Importing this package imports neither framework.
"""

from __future__ import annotations

from typing import Any


def decisions_ahead(scheduler: Any, steps: int | float) -> int:
    """Decisions an :class:`~uncertainty_lr.UncertaintyLR` takes in its next ``steps``
    calls of ``step()``: it decides at every call that brings ``last_epoch`` to a
    multiple of ``decision_interval``.

    Args:
        scheduler: the scheduler (its ``last_epoch`` and ``decision_interval``).
        steps: calls of ``step()`` still to come (optimizer steps under the Hugging
            Face Trainer; under Lightning, what its ``lr_scheduler_config`` says).

    Returns:
        The number of decisions (>= 0); logs nothing, raises nothing.

    Example::

        if decisions_ahead(scheduler, total_steps) == 0:
            warnings.warn("this run takes no decision")
    """
    done, every = max(int(scheduler.last_epoch), 0), int(scheduler.decision_interval)
    return (done + max(int(steps), 0)) // every - done // every
