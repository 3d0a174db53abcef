import io
import math
import random

import pytest
import torch
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    SequentialLR,
    StepLR,
)

from uncertainty_lr import UncertaintyLR, uncertainty_part
from uncertainty_lr_study.registry import SCHEDULERS, build_scheduler


def make_optimizer(lrs=(1.0,)):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def decide(opt, sched, values):
    for v in values:
        sched.observe(v)
    opt.step()
    sched.step()
    return sched.get_last_lr()


# Golden trace: threshold 0.1, factor 0.5, increase 1.1, LR in [1e-3, 1].
# Each row: values observed during one decision interval, expected LR after step().
# fmt: off
GOLDEN = [
    # observed           expected LR
    ([0.2],              0.5),        # above: x0.5
    ([0.3, 0.3],         0.25),       # above: x0.5
    ([0.05],             0.275),      # below: x1.1
    ([0.02, 0.08],       0.3025),     # mean 0.05, below: x1.1
    ([],                 0.3025),     # nothing observed: keep
    ([0.1],              0.3025),     # equal to threshold: keep
    ([0.01],             0.33275),    # below
    ([0.5, float("nan")], 0.166375),  # NaN skipped, mean 0.5: above
    ([float("inf")],     0.166375),   # only non-finite: keep
]
# fmt: on


def test_golden_trace():
    opt = make_optimizer()
    sched = UncertaintyLR(opt, threshold=0.1, factor=0.5, increase_factor=1.1)
    assert sched.get_last_lr() == [1.0]
    for observed, expected in GOLDEN:
        assert decide(opt, sched, observed)[0] == pytest.approx(expected, rel=1e-12)
    assert sched.num_nonfinite == 2
    assert (sched.num_decreases, sched.num_increases) == (3, 3)


def test_bounds_clip_the_learning_rate():
    opt = make_optimizer()
    sched = UncertaintyLR(opt, threshold=0.1)
    assert decide(opt, sched, [0.0])[0] == 1.0  # already at max_lr = initial LR
    for _ in range(20):
        lr = decide(opt, sched, [1.0])[0]
    assert lr == pytest.approx(1e-3)  # floor: min_lr_ratio x initial


def reference_trace(base, intervals, threshold, factor, increase, lo, hi):
    """Slow, obvious implementation of the rule, for comparison."""
    lr, out = base, []
    for values in intervals:
        finite = [v for v in values if math.isfinite(v)]
        if finite:
            s = sum(finite) / len(finite)
            if s > threshold:
                lr = min(max(lr * factor, lo), hi)
            elif s < threshold:
                lr = min(max(lr * increase, lo), hi)
        out.append(lr)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_on_random_signals(seed):
    rng = random.Random(seed)
    threshold = rng.uniform(0.01, 1.0)
    factor, increase = rng.uniform(0.1, 0.9), rng.uniform(1.01, 1.5)
    intervals = [
        [
            rng.choice([rng.uniform(0, 2 * threshold), float("nan")])
            if rng.random() < 0.1
            else rng.uniform(0, 2 * threshold)
            for _ in range(rng.randint(0, 4))
        ]
        for _ in range(60)
    ]
    opt = make_optimizer((0.3,))
    sched = UncertaintyLR(
        opt,
        threshold=threshold,
        factor=factor,
        increase_factor=increase,
        min_lr=0.3 * 1e-2,
        max_lr=0.6,
    )
    got = [decide(opt, sched, values)[0] for values in intervals]
    want = reference_trace(0.3, intervals, threshold, factor, increase, 0.003, 0.6)
    assert got == pytest.approx(want, rel=1e-12)


def test_two_groups_have_their_own_bounds():
    opt = make_optimizer((1.0, 0.1))
    sched = UncertaintyLR(opt, threshold=0.1, min_lr=[0.5, 0.001])
    for _ in range(3):
        lrs = decide(opt, sched, [1.0])
    assert lrs == pytest.approx([0.5, 0.0125])
    lrs = decide(opt, sched, [0.0])
    assert lrs == pytest.approx([0.55, 0.01375])


def test_sequential_lr_after_linear_warmup_starts_from_base_lr():
    opt = make_optimizer((1.0,))
    warmup = LinearLR(opt, start_factor=0.1, total_iters=3)
    adaptive = UncertaintyLR(opt, threshold=0.1)
    sched = SequentialLR(opt, [warmup, adaptive], milestones=[3])
    lrs = [sched.get_last_lr()[0]]
    for _ in range(3):
        adaptive.observe(5.0)  # observed during warmup: discarded at the milestone
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs == pytest.approx([0.1, 0.4, 0.7, 1.0])
    adaptive.observe(5.0)
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": 0.1, "factor": 1.0}, "factor"),
        ({"threshold": 0.1, "factor": 0.0}, "factor"),
        ({"threshold": 0.1, "increase_factor": 1.0}, "increase_factor"),
        ({"threshold": 0.1, "increase_factor": 0.9}, "increase_factor"),
        ({"threshold": 0.1, "min_lr": 2.0, "max_lr": 1.0}, "min_lr"),
        ({"threshold": 0.1, "min_lr": [0.1, 0.2]}, "parameter groups"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UncertaintyLR(make_optimizer(), **kwargs)


def test_observe_rejects_non_scalar_tensor():
    sched = UncertaintyLR(make_optimizer(), threshold=0.1)
    with pytest.raises(ValueError, match="scalar"):
        sched.observe(torch.ones(3))
    sched.observe(torch.tensor(0.5))  # 0-d tensors are fine
    assert sched.counts == {"signal": 1}


# ------------------------------------------------------------------ registry


def test_registry_baselines_are_torchs_classes_with_the_study_values():
    epochs, spe = 50, 100
    sched, _ = build_scheduler("step", make_optimizer(), epochs=epochs, steps_per_epoch=spe)
    assert type(sched) is StepLR and (sched.step_size, sched.gamma) == (10, 0.1)
    sched, _ = build_scheduler("cosine", make_optimizer(), epochs=epochs, steps_per_epoch=spe)
    assert type(sched) is CosineAnnealingLR and (sched.T_max, sched.eta_min) == (50, 0.0)
    sched, _ = build_scheduler("exponential", make_optimizer(), epochs=epochs, steps_per_epoch=spe)
    assert type(sched) is ExponentialLR and sched.gamma == pytest.approx(0.95)
    sched, _ = build_scheduler("constant", make_optimizer(), epochs=epochs, steps_per_epoch=spe)
    assert type(sched) is ConstantLR
    sched, spec = build_scheduler(
        "uncertainty-gradnorm", make_optimizer(), epochs=epochs, steps_per_epoch=spe
    )
    assert (sched.threshold, sched.factor, spec.signal) == (0.1, 0.5, "grad_norm")
    sched, spec = build_scheduler(
        "uncertainty-variance", make_optimizer(), epochs=epochs, steps_per_epoch=spe
    )
    assert (sched.threshold, sched.factor, spec.signal) == (0.01, 0.5, "predictive_variance")


def test_registry_scales_to_the_run():
    # absolute: the study's per-epoch values whatever the run length
    s, _ = build_scheduler("step", make_optimizer(), epochs=15, steps_per_epoch=7)
    assert s.step_size == 10
    s, _ = build_scheduler("cosine", make_optimizer(), epochs=15, steps_per_epoch=7)
    assert s.T_max == 15
    # fraction: the same fraction of the run as in the 50-epoch reference
    s, _ = build_scheduler(
        "step", make_optimizer(), epochs=5, steps_per_epoch=7, scaling="fraction"
    )
    assert s.step_size == 1
    s, _ = build_scheduler(
        "exponential", make_optimizer(), epochs=5, steps_per_epoch=7, scaling="fraction"
    )
    assert s.gamma**5 == pytest.approx(0.95**50)
    # per optimizer step: times converted to steps
    s, _ = build_scheduler("step", make_optimizer(), epochs=50, steps_per_epoch=7, interval="step")
    assert s.step_size == 70
    s, _ = build_scheduler(
        "exponential", make_optimizer(), epochs=50, steps_per_epoch=7, interval="step"
    )
    assert s.gamma**7 == pytest.approx(0.95)
    s, _ = build_scheduler("cosine", make_optimizer(), epochs=3, steps_per_epoch=7, interval="step")
    assert s.T_max == 21


def used_lrs(opt, sched, steps, observe=None):
    """The learning rate each of ``steps`` optimizer steps trains at."""
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        if observe is not None:
            observe.observe(1.0)
        opt.step()
        sched.step()
    return out


def test_registry_warmup_then_the_schedule_for_the_rest_of_the_run():
    opt = make_optimizer()
    base = opt.param_groups[0]["lr"]
    sched, _ = build_scheduler(
        "cosine", opt, epochs=2, steps_per_epoch=5, interval="step", warmup_steps=4
    )
    cosine = [base * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    expected = [base * k / 4 for k in (1, 2, 3, 4)] + cosine
    assert used_lrs(opt, sched, 10) == pytest.approx(expected, abs=1e-12)
    # an uncertainty schedule behind a warmup: found, fed, decides every 3 steps
    opt = make_optimizer()
    sched, spec = build_scheduler(
        "uncertainty-gradnorm",
        opt,
        epochs=1,
        steps_per_epoch=10,
        interval="step",
        warmup_steps=2,
        decision_interval=3,
    )
    inner = uncertainty_part(sched)
    assert isinstance(inner, UncertaintyLR) and inner.decision_interval == 3
    lrs = used_lrs(opt, sched, 10, observe=inner)  # signal 1.0 > threshold 0.1
    assert lrs == pytest.approx([base / 2, base, base, base, base, base / 2, base / 2, base / 2, base / 4, base / 4])
    assert uncertainty_part(build_scheduler("step", make_optimizer(), epochs=1, steps_per_epoch=1)[0]) is None
    with pytest.raises(ValueError, match=r"warmup_steps must be an integer in \[0, 10\)"):
        build_scheduler("cosine", make_optimizer(), epochs=1, steps_per_epoch=10, interval="step", warmup_steps=10)


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(ValueError, match="valid names: constant, step, cosine"):
        build_scheduler("stepp", make_optimizer(), epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="valid: \\['gamma', 'step_size'\\]"):
        build_scheduler("step", make_optimizer(), epochs=1, steps_per_epoch=1, stepsize=3)
    with pytest.raises(ValueError, match="epochs"):
        build_scheduler("step", make_optimizer(), epochs=0, steps_per_epoch=1)


def run_epochs(opt, sched, spec, observations):
    """One decision per entry of ``observations`` (values seen in that epoch)."""
    lrs = []
    for values in observations:
        if spec.signal:
            for v in values:
                sched.observe(v)
        opt.step()
        sched.step()
        lrs.append(list(sched.get_last_lr()))
    return lrs


@pytest.mark.parametrize(
    "name", [n for n, s in SCHEDULERS.items() if s.family in ("baseline", "uncertainty")]
)
def test_every_scheduler_bounds_groups_and_resume(name):
    def fresh():
        opt = make_optimizer((1e-3, 5e-4))
        sched, spec = build_scheduler(name, opt, epochs=20, steps_per_epoch=10)
        return opt, sched, spec

    threshold = SCHEDULERS[name].defaults.get("threshold", 1.0)
    rng = random.Random(0)
    observations = [[rng.uniform(0, 2 * threshold) for _ in range(3)] for _ in range(20)]

    # uninterrupted: 20 epochs
    opt, sched, spec = fresh()
    full = run_epochs(opt, sched, spec, observations)
    for lr0, lr1 in full:
        assert 0.0 <= lr0 <= 1e-3 and 0.0 <= lr1 <= 5e-4
    assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    if spec.signal:
        assert len({round(lr0, 12) for lr0, _ in full}) > 1  # the signal moved the LR

    # 12 epochs and one observation of the 13th, save, load (weights_only) into
    # fresh objects, finish: the same learning rates
    opt, sched, spec = fresh()
    first = run_epochs(opt, sched, spec, observations[:12])
    if spec.signal:
        sched.observe(observations[12][0])
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, sched2, spec2 = fresh()
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    rest = run_epochs(opt2, sched2, spec2, [observations[12][1:], *observations[13:]])
    assert first + rest == full


# ------------------------------------------------- options: ema, rel, cooldown, several signals


def reference_general(
    base,
    intervals,
    thresholds,
    factor,
    increase,
    lo,
    hi,
    smoothing="mean",
    ema_half_life=None,
    threshold_mode="abs",
    scale_half_life=5.0,
    cooldown=0,
    combine="any",
    weights=None,
):
    """Slow, obvious implementation of every option, decision by decision.

    ``intervals``: per decision, a list of {signal name: value} observations."""
    names = list(thresholds)
    weights = weights or {n: 1.0 for n in names}
    lr, out, ema, scale, wait = base, [], {}, {}, 0
    for observations in intervals:
        seen = {n: [o[n] for o in observations if n in o and math.isfinite(o[n])] for n in names}
        for o in observations:
            for n, v in o.items():
                if math.isfinite(v) and smoothing == "ema":
                    a = 1 - 0.5 ** (1 / ema_half_life)
                    ema[n] = v if n not in ema else ema[n] + a * (v - ema[n])
        signal = {
            n: (sum(vs) / len(vs) if smoothing == "mean" else ema[n])
            for n, vs in seen.items()
            if vs
        }
        if not signal:
            out.append(lr)
            continue
        if threshold_mode == "rel":
            ratio, ready = {}, True
            for n, v in signal.items():
                if n in scale:
                    ratio[n] = v / scale[n]
                else:
                    ready = False
                a = 1 - 0.5 ** (1 / scale_half_life)
                scale[n] = v if n not in scale else scale[n] + a * (v - scale[n])
            if not ready:
                out.append(lr)
                continue
            signal = ratio
        if wait > 0:
            wait -= 1
            out.append(lr)
            continue
        r = {n: v / thresholds[n] for n, v in signal.items()}
        if combine == "weighted":
            score = sum(weights[n] * x for n, x in r.items()) / sum(weights[n] for n in r)
            verdict = -1 if score > 1 else (1 if score < 1 else 0)
        else:
            verdict = (
                -1
                if any(x > 1 for x in r.values())
                else (1 if len(r) == len(names) and all(x < 1 for x in r.values()) else 0)
            )
        if verdict == -1:
            lr, wait = min(max(lr * factor, lo), hi), cooldown
        elif verdict == 1:
            lr = min(max(lr * increase, lo), hi)
        out.append(lr)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_options_match_reference_on_random_signals(seed):
    rng = random.Random(100 + seed)
    several = seed % 2 == 1
    thresholds = (
        {"g": rng.uniform(0.05, 1.0), "v": rng.uniform(0.005, 0.1)}
        if several
        else {"signal": rng.uniform(0.05, 1.0)}
    )
    options = {
        "smoothing": rng.choice(["mean", "ema"]),
        "mode": rng.choice(["abs", "rel"]),
        "cooldown": rng.choice([0, 0, 2]),
        "combine": rng.choice(["any", "weighted"]),
    }
    ema_half_life = rng.uniform(1, 20)
    weights = {n: rng.uniform(0.5, 2) for n in thresholds} if several else None
    rel_thresholds = {n: rng.uniform(0.8, 1.3) for n in thresholds}
    th = rel_thresholds if options["mode"] == "rel" else thresholds

    def value(n):
        if rng.random() < 0.05:
            return float("nan")
        return rng.uniform(0, 2 * thresholds[n])

    intervals = [
        [{n: value(n) for n in thresholds if rng.random() < 0.9} for _ in range(rng.randint(0, 4))]
        for _ in range(80)
    ]
    opt = make_optimizer((0.3,))
    options = {  # shared by the scheduler and the reference
        "smoothing": options["smoothing"],
        "ema_half_life": ema_half_life,
        "threshold_mode": options["mode"],
        "scale_half_life": 3.0,
        "cooldown": options["cooldown"],
        "combine": options["combine"],
        "weights": weights,
    }
    sched = UncertaintyLR(
        opt,
        threshold=th if several else th["signal"],
        factor=0.6,
        increase_factor=1.2,
        min_lr=0.003,
        max_lr=0.6,
        **options,
    )
    got = []
    for observations in intervals:
        for o in observations:
            if o:
                sched.observe(o if several else o["signal"])
        opt.step()
        sched.step()
        got.append(sched.get_last_lr()[0])
    want = reference_general(0.3, intervals, th, 0.6, 1.2, 0.003, 0.6, **options)
    assert got == pytest.approx(want, rel=1e-9)
    assert len(set(got)) > 1, options  # the sequence exercised the rule


def test_relative_threshold_is_scale_free():
    """The same rel setting gives the same LR trace for signals 1000x apart."""

    def trace(scale):
        opt = make_optimizer()
        sched = UncertaintyLR(opt, threshold=1.1, threshold_mode="rel", scale_half_life=2.0)
        rng = random.Random(3)
        return [decide(opt, sched, [scale * rng.uniform(0.5, 1.5)])[0] for _ in range(30)]

    assert trace(1e-3) == pytest.approx(trace(1.0), rel=1e-9)


def test_cooldown_golden():
    opt = make_optimizer()
    sched = UncertaintyLR(opt, threshold=0.1, cooldown=2)
    lrs = [decide(opt, sched, [v])[0] for v in (1.0, 1.0, 1.0, 1.0, 0.0)]
    # decrease, 2 decisions kept, decrease, cooldown again
    assert lrs == pytest.approx([0.5, 0.5, 0.5, 0.25, 0.25])


def test_several_signals_any_exceeds_golden():
    opt = make_optimizer()
    sched = UncertaintyLR(opt, threshold={"grad_norm": 0.1, "predictive_variance": 0.01})
    table = [
        ({"grad_norm": 0.2, "predictive_variance": 0.001}, 0.5),  # one exceeds: down
        ({"grad_norm": 0.05, "predictive_variance": 0.005}, 0.55),  # all below: up
        ({"grad_norm": 0.05}, 0.55),  # one missing: keep
    ]
    for observed, expected in table:
        sched.observe(observed)
        opt.step()
        sched.step()
        assert sched.get_last_lr()[0] == pytest.approx(expected)
    with pytest.raises(ValueError, match="observe a mapping"):
        sched.observe(0.1)
    with pytest.raises(ValueError, match="unknown signal 'loss'"):
        sched.observe({"loss": 1.0})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"smoothing": "ema"}, "ema_half_life"),
        ({"smoothing": "median"}, "smoothing"),
        ({"threshold_mode": "ratio"}, "threshold_mode"),
        ({"cooldown": -1}, "cooldown"),
        ({"combine": "all"}, "combine"),
        ({"threshold": {"a": 0.1}, "weights": {"b": 1.0}}, "weights name signals"),
        ({"threshold": {"a": 0.1, "b": -1}}, "threshold must be a finite number > 0"),
        ({"scale_half_life": 0}, "scale_half_life"),
    ],
)
def test_bad_options_are_rejected(kwargs, match):
    kwargs = {"threshold": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        UncertaintyLR(make_optimizer(), **kwargs)


# --------------------------------------------------------------------- distributed


def _ddp_worker(rank, world, init_file, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        opt = make_optimizer()
        sched = UncertaintyLR(opt, threshold=0.1)
        # rank 0 sees 0.3 and 0.1 (mean 0.2, above); rank 1 sees 0.0 (below): the global
        # mean (0.3 + 0.1 + 0.0) / 3 = 0.133 is above the threshold on both ranks
        for v in [0.3, 0.1] if rank == 0 else [0.0]:
            sched.observe(v)
        opt.step()
        sched.step()
        results[rank] = (sched.get_last_lr()[0], sched.last_signal["signal"])
    finally:
        dist.destroy_process_group()


def test_signals_are_averaged_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    assert results[0] == results[1]
    lr, signal = results[0]
    assert signal == pytest.approx(0.4 / 3)
    assert lr == pytest.approx(0.5)


def test_decision_interval_decides_every_nth_step_on_all_values_since():
    opt = make_optimizer()
    sched = UncertaintyLR(opt, threshold=0.1, decision_interval=3)
    lrs = []
    for values in ([0.5], [0.0], [0.0], [0.0], [0.0], [0.0]):
        lrs.append(decide(opt, sched, values)[0])
    # step 3 decides on mean(0.5, 0, 0) = 0.167 > 0.1: down; step 6 on 0: up
    assert lrs == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.5, 0.55])
    with pytest.raises(ValueError, match="decision_interval"):
        UncertaintyLR(make_optimizer(), threshold=0.1, decision_interval=0)


def test_non_numbers_are_refused():
    with pytest.raises(ValueError, match="threshold must be a number"):
        UncertaintyLR(make_optimizer(), threshold="0.1")
    sched = UncertaintyLR(make_optimizer(), threshold=0.1)
    for bad in ("0.5", None, True):
        with pytest.raises(TypeError, match="observe\\(\\) takes a number"):
            sched.observe(bad)
