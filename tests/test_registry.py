"""The registry table: each schedule gets the warmup its spec states."""

import pytest
import torch

from uncertainty_lr_study.registry import (
    SCHEDULERS,
    WARMUPS,
    ControlInput,
    build_peer_optimizer,
    build_scheduler,
)

RUN = {"epochs": 1, "steps_per_epoch": 100, "interval": "step"}


def first_rate(name, warmup_steps):
    """The learning rate of the first optimizer step of a 100-step run at lr 1."""
    spec = SCHEDULERS[name]
    params = [torch.nn.Parameter(torch.zeros(2))]
    if spec.replaces_optimizer:
        optimizer = build_peer_optimizer(name, params, lr=1.0, run_steps=100,
                                         warmup_steps=warmup_steps)
    else:
        optimizer = torch.optim.SGD(params, lr=1.0)
    control = ControlInput([[0.5]] * 101, [1.0, 0.0], {}, 0) if spec.source else None
    build_scheduler(name, optimizer, warmup_steps=warmup_steps, control=control, **RUN)
    group = optimizer.param_groups[0]
    if spec.optimizer == "schedule-free-adamw":  # its warmup is inside the optimizer
        return group["lr"] * 1 / group["warmup_steps"] if group["warmup_steps"] else group["lr"]
    return group["lr"]


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_each_schedule_gets_the_warmup_its_spec_states(name):
    spec = SCHEDULERS[name]
    assert spec.warmup in WARMUPS
    with_task, without = first_rate(name, 10), first_rate(name, 0)
    if spec.warmup == "task":  # the task's warmup: 1/10 of the rate, none without it
        assert with_task == pytest.approx(0.1)
        assert without != pytest.approx(0.1)
    elif spec.warmup == "own":  # the task's warmup, else its own 10% of the run
        assert with_task == pytest.approx(0.1) and without == pytest.approx(0.1)
    else:  # no warmup: the task's changes nothing
        assert with_task == pytest.approx(without) and with_task != pytest.approx(0.1)


def test_the_table_states_every_property_of_each_schedule():
    for spec in SCHEDULERS.values():
        assert spec.interval in (None, "step")
        assert spec.scaled == (spec.name in ("step", "exponential"))
        assert spec.replaces_optimizer == (spec.name in ("schedule-free", "prodigy"))
        assert callable(spec.build)
    # the schedules a per-epoch run steps per epoch are the plan's and the rule's
    per_epoch = {n for n, s in SCHEDULERS.items() if s.interval is None and s.family != "control"}
    assert per_epoch == {"constant", "step", "cosine", "exponential", "uncertainty-gradnorm",
                         "uncertainty-variance", "schedule-free", "prodigy"}
