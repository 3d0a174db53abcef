"""The scheduler against its plain reference (uncertainty_lr.reference): the same
random sequences of observe / step calls give the same rates after every step, for
every option; the reference itself is checked on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uncertainty_lr import UncertaintyLR
from uncertainty_lr.reference import SIGNAL, reference_schedule

OPTIONS = [
    {},
    {"threshold_mode": "rel", "threshold": 1.1, "scale_half_life": 3.0},
    {"smoothing": "ema", "ema_half_life": 4.0},
    {"cooldown": 2},
    {"decision_interval": 3},
    {"max_lr": 0.5, "min_lr": 1e-4, "increase_factor": 1.3},
    {"threshold": {"a": 1.0, "b": 0.2}},
    {"threshold": {"a": 1.0, "b": 0.2}, "combine": "weighted", "weights": {"a": 2.0, "b": 1.0}},
    {"threshold": {"a": 1.0, "b": 0.2}, "threshold_mode": "rel", "cooldown": 1,
     "smoothing": "ema", "ema_half_life": 2.0, "decision_interval": 2},
]


def random_calls(rng: np.random.Generator, names: list[str], n: int = 400) -> list:
    """observe / step calls: log-normal values around 1 (b: around 0.2), a few NaN
    and inf, sometimes a signal missing from a mapping, steps at random."""
    calls: list = []
    for _ in range(n):
        if rng.random() < 0.2:
            calls.append(None)
            continue
        values = {}
        for name in names:
            if len(names) > 1 and rng.random() < 0.15:
                continue
            level = 0.2 if name == "b" else 1.0
            v = float(level * math.exp(rng.normal(0.0, 0.6)))
            if rng.random() < 0.03:
                v = float(rng.choice([math.nan, math.inf, -math.inf]))
            values[name] = v
        calls.append(values if len(names) > 1 else values.get(SIGNAL, math.nan))
    return calls


@pytest.mark.filterwarnings("ignore:UncertaintyLR.step.. decided on nothing")
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("seed", range(4))
def test_the_scheduler_sets_the_reference_rates(options, seed):
    options = {"threshold": 1.0, **options}
    names = list(options["threshold"]) if isinstance(options["threshold"], dict) else [SIGNAL]
    calls = random_calls(np.random.default_rng(seed), names)
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.03}])
    scheduler = UncertaintyLR(optimizer, **options)
    got = []
    for call in calls:
        if call is None:
            optimizer.step()
            scheduler.step()
            got.append([g["lr"] for g in optimizer.param_groups])
        else:
            scheduler.observe(call)
    expected = reference_schedule([0.1, 0.03], calls, **options)
    assert len(got) == len(expected) > 50
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a == pytest.approx(b, rel=1e-12, abs=0), f"step {k + 1}"
    changes = sum(a != b for a, b in zip(expected, expected[1:]))
    assert changes >= 3, "the sequence must exercise the rule"


def test_the_reference_on_hand_computed_cases():
    # means 2, 0.5, nothing, 0.5 -> halve, x1.1, keep, x1.1 (clipped at max 0.1)
    calls = [2.0, 2.0, None, 0.4, 0.6, None, None, float("nan"), None, 0.5, None]
    rates = [r[0] for r in reference_schedule([0.1], calls, threshold=1.0)]
    assert rates == pytest.approx([0.05, 0.055, 0.055, 0.055, 0.0605])
    # rel: the first decision sets the scale; then 3 / 1 = 3 > 1.5 halves
    rates = [r[0] for r in reference_schedule([0.1], [1.0, None, 3.0, None], threshold=1.5,
                                              threshold_mode="rel")]
    assert rates == pytest.approx([0.1, 0.05])
    # cooldown 1: the decision after a decrease keeps the rate
    rates = [r[0] for r in reference_schedule([0.1], [5.0, None, 5.0, None, 5.0, None],
                                              threshold=1.0, cooldown=1)]
    assert rates == pytest.approx([0.05, 0.05, 0.025])
