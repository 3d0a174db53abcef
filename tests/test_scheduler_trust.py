"""UncertaintyLR as a practitioner drops it into a loop: every torch habit either
gets the schedule asked for or a clear message (issue: no silent failure)."""

from __future__ import annotations

import io
import logging
import math
import random

import numpy as np
import pytest
import torch
from torch.optim.lr_scheduler import ConstantLR

from uncertainty_lr import UncertaintyLR


def sgd(*lrs: float) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def decide(opt, sched, *values):
    for v in values:
        sched.observe(v)
    opt.step()
    sched.step()
    return sched.get_last_lr()


def test_restoring_the_scheduler_alone_continues_at_the_saved_rates():
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1)
    for _ in range(3):
        decide(opt, sched, 1.0)
    assert sched.get_last_lr() == pytest.approx([0.0125])
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    fresh = sgd(0.1)  # a new optimizer at the initial rate, its state not restored
    restored = UncertaintyLR(fresh, threshold=0.1)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.param_groups[0]["lr"] == pytest.approx(0.0125)
    assert decide(fresh, restored, 1.0) == pytest.approx([0.00625])
    assert restored.num_decreases == 4
    with pytest.raises(ValueError, match="2 parameter groups, the optimizer has 1"):
        UncertaintyLR(sgd(0.1), threshold=0.1).load_state_dict(
            UncertaintyLR(sgd(0.1, 0.2), threshold=0.1).state_dict()
        )


def test_a_group_added_later_is_scheduled_from_its_own_rate():
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1)
    decide(opt, sched, 1.0)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01})
    assert decide(opt, sched, 1.0) == pytest.approx([0.025, 0.005])
    assert decide(opt, sched, 0.0) == pytest.approx([0.0275, 0.0055])
    assert sched.max_lrs == pytest.approx([0.1, 0.01]) and sched.min_lrs[1] == pytest.approx(1e-5)
    for _ in range(20):  # the new group has its own bounds
        decide(opt, sched, 0.0)
    assert sched.get_last_lr() == pytest.approx([0.1, 0.01])


def test_a_group_added_under_per_group_bounds_is_refused_before_any_change():
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1, min_lr=[1e-4])
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01})
    sched.observe(1.0)
    with pytest.raises(ValueError, match="min_lr given per group: build the scheduler after"):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    one_number = UncertaintyLR(sgd(0.1), threshold=0.1, max_lr=0.2)
    one_number.optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01})
    assert decide(one_number.optimizer, one_number, 0.0) == pytest.approx([0.11, 0.011])
    assert one_number.max_lrs == [0.2, 0.2]


def test_construction_keeps_a_rate_another_scheduler_changed():
    opt = sgd(0.1)
    ConstantLR(opt, factor=0.5, total_iters=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    sched = UncertaintyLR(opt, threshold=0.1)
    assert sched.get_last_lr() == pytest.approx([0.05])
    assert sched.max_lrs == pytest.approx([0.1])  # the bounds come from initial_lr
    assert decide(opt, sched, 1.0) == pytest.approx([0.025])
    clipped = UncertaintyLR(sgd(0.1), threshold=0.1, max_lr=0.08)
    assert clipped.get_last_lr() == pytest.approx([0.08])


def test_a_metric_passed_to_step_is_refused_naming_observe():
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1)
    for metric in (0.3, torch.tensor(0.3), np.float64(0.3)):
        with pytest.raises(TypeError, match=r"pass the signal to observe\(value\)"):
            sched.step(metric)
    assert sched.last_epoch == 0


def test_a_scheduler_never_fed_warns_once():
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1)
    opt.step()
    with pytest.warns(UserWarning, match=r"observe\(\) was never called") as record:
        sched.step()
    assert record[0].filename == __file__  # points at the caller's step()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            opt.step()
            sched.step()
        decide(opt, sched, 1.0)


def test_an_increase_clipped_at_the_initial_rate_is_logged_once(caplog):
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1)
    with caplog.at_level(logging.WARNING, logger="uncertainty_lr.scheduler"):
        for _ in range(3):
            decide(opt, sched, 0.0)
    messages = [r.message for r in caplog.records if "clipped at max_lr" in r.message]
    assert len(messages) == 1 and "Give max_lr above the initial rate" in messages[0]
    assert (sched.num_increases, sched.num_clipped_increases) == (3, 3)
    assert sched.get_last_lr() == pytest.approx([0.1])
    above = UncertaintyLR(sgd(0.1), threshold=0.1, max_lr=1.0)
    assert decide(above.optimizer, above, 0.0) == pytest.approx([0.11])


def test_skipped_optimizer_steps_stay_out_of_the_decision_interval():
    """GradScaler skips a step whose gradients are not finite; stepping the
    scheduler only when the optimizer stepped (the documented pattern) keeps the
    decisions on taken steps, as the Trainer does."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = UncertaintyLR(opt, threshold=1e9, decision_interval=2, max_lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    taken = 0
    for step in range(10):
        opt.zero_grad()
        loss = model(torch.randn(4, 3)).pow(2).mean()
        if step in (1, 2, 5):
            loss = loss * math.inf  # inf gradients: the scaler skips this step
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        sched.observe(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() >= scale:
            taken += 1
            sched.step()
    assert taken == 7 and sched.last_epoch == 7
    assert sched.num_decisions == 3  # 7 taken steps, a decision every 2
    assert sched.num_nonfinite == 3  # the skipped steps' gradient norms left out
    assert sched.num_increases == 3


def test_observe_reads_no_tensor_back_to_the_host(monkeypatch):
    """A tensor on an accelerator is accumulated there: one read per decision, none
    per observe(). (On the CPU a read costs no synchronisation, so CPU tensors are
    read at once; here the CPU plays the accelerator.)"""
    import uncertainty_lr._observations as scheduler_module

    monkeypatch.setattr(scheduler_module, "_read_is_cheap", lambda device: False)
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1, smoothing="ema", ema_half_life=2.0)
    reads = []
    for name in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            reads.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    for v in (0.5, float("nan"), 0.3, float("inf"), 0.2):
        sched.observe(torch.tensor(v))
    assert reads == []
    opt.step()
    sched.step()
    assert reads == ["tolist"]
    assert sched.num_nonfinite == 2 and sched.num_decreases == 1


@pytest.mark.filterwarnings("ignore:UncertaintyLR.step.. decided on nothing")
@pytest.mark.parametrize("seed", range(4))
def test_tensor_numpy_and_float_observations_decide_the_same(seed, monkeypatch):
    import uncertainty_lr._observations as scheduler_module

    cpu_is_cheap = scheduler_module._read_is_cheap
    monkeypatch.setattr(scheduler_module, "_read_is_cheap", cpu_is_cheap)  # restored after
    rng = random.Random(seed)
    windows = [[rng.choice([0.01, 0.05, 0.2, 0.5, math.nan]) for _ in range(rng.randint(0, 4))]
               for _ in range(25)]
    kinds = {
        "float": float,
        "tensor": lambda v: torch.tensor(v, dtype=torch.float32),
        "tensor kept on its device": lambda v: torch.tensor(v, dtype=torch.float32),
        "numpy": np.float32,
        "0-d array": np.array,
    }
    traces = {}
    for kind, convert in kinds.items():
        scheduler_module._read_is_cheap = (  # noqa: SLF001 (restored below)
            (lambda device: False) if kind == "tensor kept on its device" else cpu_is_cheap
        )
        for options in ({}, {"smoothing": "ema", "ema_half_life": 3.0}, {"threshold_mode": "rel"}):
            opt = sgd(1.0)
            sched = UncertaintyLR(opt, threshold=0.1 if not options.get("threshold_mode") else 1.1,
                                  **options)
            trace = [decide(opt, sched, *map(convert, w))[0] for w in windows]
            traces.setdefault(str(options), {})[kind] = (trace, sched.num_nonfinite)
    scheduler_module._read_is_cheap = cpu_is_cheap
    for by_kind in traces.values():
        first = next(iter(by_kind.values()))
        for trace, nonfinite in by_kind.values():
            assert trace == pytest.approx(first[0], rel=1e-6) and nonfinite == first[1]
    with pytest.raises(ValueError, match="array of shape"):
        UncertaintyLR(sgd(0.1), threshold=0.1).observe(np.ones(3))


def test_state_round_trip_with_device_observations_pending(monkeypatch):
    import uncertainty_lr._observations as scheduler_module

    monkeypatch.setattr(scheduler_module, "_read_is_cheap", lambda device: False)
    opt = sgd(0.1)
    sched = UncertaintyLR(opt, threshold=0.1, smoothing="ema", ema_half_life=2.0)
    decide(opt, sched, torch.tensor(0.5))
    sched.observe(torch.tensor(0.05))
    sched.observe(torch.tensor(float("nan")))
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    opt2 = sgd(0.1)
    twin = UncertaintyLR(opt2, threshold=0.1, smoothing="ema", ema_half_life=2.0)
    twin.load_state_dict(torch.load(buf, weights_only=True))
    for a, b in ((opt, sched), (opt2, twin)):
        decide(a, b, 0.01)
    assert twin.get_last_lr() == sched.get_last_lr()
    assert twin.num_nonfinite == sched.num_nonfinite == 1
    assert twin.emas == pytest.approx(sched.emas)
