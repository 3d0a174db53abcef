"""The peer methods of the registry: each built from its package or torch, with the
conventions the engines rely on (per-step stepping, metrics, replaced optimizers)."""

import io
import json
import math

import pytest
import torch

from uncertainty_lr_study.registry import (
    SCHEDULERS,
    WarmupReduceLROnPlateau,
    build_peer_optimizer,
    build_scheduler,
    effective_lrs,
    peer_warmup_steps,
)

PEERS = [n for n, s in SCHEDULERS.items() if s.family == "peer"]


def sgd(lr=1.0, groups=1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for _ in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def trace(opt, sched, n, metric=None):
    """LR used by each of ``n`` optimizer steps (stepping after each)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step() if metric is None else sched.step(metric)
    return out


def test_the_peers_of_the_issue_are_registered_as_peers():
    assert set(PEERS) == {
        "warmup-linear", "warmup-cosine", "onecycle", "plateau", "greedy", "schedule-free", "prodigy"
    }
    assert {n for n in PEERS if SCHEDULERS[n].replaces_optimizer} == {"schedule-free", "prodigy"}


@pytest.mark.parametrize("name", ["warmup-linear", "warmup-cosine"])
def test_warmup_schedules_equal_hugging_face(name):
    transformers = pytest.importorskip("transformers")
    total, warmup = 50, 8
    ours, _ = build_scheduler(
        name, sgd(), epochs=5, steps_per_epoch=10, interval="step", warmup_steps=warmup
    )
    hf_opt = sgd()
    make = (
        transformers.get_linear_schedule_with_warmup
        if name == "warmup-linear"
        else transformers.get_cosine_schedule_with_warmup
    )
    theirs = make(hf_opt, num_warmup_steps=warmup, num_training_steps=total)
    a = trace(ours.optimizer, ours, total)
    b = trace(hf_opt, theirs, total)
    # Hugging Face trains its first step at lr 0; ours at lr / warmup (the k-th of
    # the warmup steps at k / warmup): the same ramp one step earlier
    assert a[:warmup] == pytest.approx([k / warmup for k in range(1, warmup + 1)])
    assert b[:warmup] == pytest.approx([k / warmup for k in range(warmup)])
    assert a[warmup:] == pytest.approx(b[warmup:], abs=1e-12)
    assert a[-1] > 0 and ours.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)


def test_default_warmup_is_a_tenth_of_the_run_unless_the_task_sets_one():
    assert peer_warmup_steps("warmup-linear", 400) == 40
    assert peer_warmup_steps("warmup-linear", 400, warmup_steps=7) == 7
    assert peer_warmup_steps("warmup-linear", 3) == 1  # at least one step
    assert peer_warmup_steps("onecycle", 400) == 0
    with pytest.raises(ValueError, match="warmup_fraction"):
        peer_warmup_steps("plateau", 100, warmup_fraction=1.5)


def test_onecycle_peaks_at_the_run_lr_and_lasts_exactly_the_run():
    opt = sgd(lr=0.01)
    sched, _ = build_scheduler("onecycle", opt, epochs=4, steps_per_epoch=25, interval="step")
    lrs = trace(opt, sched, 100)
    assert max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs.index(max(lrs)) == pytest.approx(30, abs=1)  # pct_start 0.3
    assert lrs[0] == pytest.approx(0.01 / 25)
    # decreasing to the end, and the rate after the last step is the cycle's minimum
    assert all(a > b for a, b in zip(lrs[31:], lrs[32:]))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 25 / 1e4)


# Golden traces of a 10-step run at lr 1.0: the rate each optimizer step trains at
# (the engines call step() after every optimizer step, the last included).
# onecycle: pct_start 0.3 -> warm-up over calls 0-2 from 1/25, cosine down to
# 1/25/1e4 at step 10; warmup-*: the default warmup (1 step), then Hugging Face's
# decay over the remaining 9 steps, 0 reached at the call after step 10.
GOLDEN_10_STEPS = {
    "onecycle": [
        0.04, 0.52, 1.0, 0.9504846320, 0.8117456539,
        0.6112620219, 0.3887419781, 0.1882583461, 0.0495193680, 4e-06,
    ],
    "warmup-linear": [1.0, 1.0, 8 / 9, 7 / 9, 6 / 9, 5 / 9, 4 / 9, 3 / 9, 2 / 9, 1 / 9],
    "warmup-cosine": [
        1.0, 1.0, 0.9698463104, 0.8830222216, 0.75,
        0.5868240888, 0.4131759112, 0.25, 0.1169777784, 0.0301536896,
    ],
}
FLOOR = {"onecycle": 1.0 / 25 / 1e4, "warmup-linear": 0.0, "warmup-cosine": 0.0}


@pytest.mark.parametrize("name", sorted(GOLDEN_10_STEPS))
def test_per_step_peers_golden_trace_over_exactly_the_run(name):
    opt = sgd(lr=1.0)
    sched, _ = build_scheduler(name, opt, epochs=2, steps_per_epoch=5, interval="step")
    assert trace(opt, sched, 10) == pytest.approx(GOLDEN_10_STEPS[name], rel=1e-9, abs=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(FLOOR[name], rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", sorted(GOLDEN_10_STEPS))
def test_calls_beyond_the_run_keep_the_floor(name):
    opt = sgd(lr=1.0)
    sched, _ = build_scheduler(name, opt, epochs=1, steps_per_epoch=10, interval="step")
    trace(opt, sched, 10)
    beyond = trace(opt, sched, 5)  # torch's OneCycleLR / cosine would rise or raise here
    assert beyond == pytest.approx([FLOOR[name]] * 5, rel=1e-9, abs=1e-15)


def test_onecycle_under_the_engine_trains_its_last_step_at_the_floor(tmp_path):
    import pandas as pd
    from helpers import mnist_settings

    from uncertainty_lr_study.engine import train_classifier

    # 320 images, batch 32: 10 optimizer steps; lr_trace row k: the rate after k calls
    s = mnist_settings(scheduler="onecycle", epochs=1, train_subset=320, val_subset=200)
    m = train_classifier(s, tmp_path)
    rows = pd.read_csv(tmp_path / "lr_trace.csv")["lr_group0"].tolist()
    assert m["status"] == "completed" and m["steps"] == 10 and len(rows) == 11
    assert rows[:10] == pytest.approx([1e-3 * v for v in GOLDEN_10_STEPS["onecycle"]], rel=1e-9)
    assert rows[10] == pytest.approx(1e-3 / 25 / 1e4) == m["final_lr"][0]


def test_per_step_peers_refuse_an_epoch_interval():
    with pytest.raises(ValueError, match="interval='step'"):
        build_scheduler("onecycle", sgd(), epochs=2, steps_per_epoch=3)


def test_plateau_warms_up_ignores_decisions_until_then_and_resumes():
    opt = sgd(lr=1.0)
    sched = WarmupReduceLROnPlateau(opt, warmup_steps=4, factor=0.5, patience=1)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # step 1 trains at 1/4
    sched.step(10.0)  # a decision during the warmup: ignored
    assert sched.best == math.inf
    lrs = trace(opt, sched, 5)
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert not sched.in_warmup
    # torch's plateau rule from here: patience 1 -> the 2nd non-improving decision halves
    for loss in (1.0, 1.0):
        sched.step(loss)
    assert opt.param_groups[0]["lr"] == 1.0
    sched.step(1.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)
    buf = io.BytesIO()
    torch.save({"sched": sched.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = sgd(lr=1.0)
    sched2 = WarmupReduceLROnPlateau(opt2, warmup_steps=4, factor=0.5, patience=1)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    for s_, o in ((sched, opt), (sched2, opt2)):
        for loss in (1.0, 1.0, 1.0):
            s_.step(loss)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupReduceLROnPlateau(sgd(), warmup_steps=-1)


def test_greedy_is_transformers_greedylr_within_the_uncertainty_bounds():
    transformers = pytest.importorskip("transformers")
    opt = sgd(lr=1e-3)
    sched, spec = build_scheduler("greedy", opt, epochs=1, steps_per_epoch=400, interval="step")
    assert isinstance(sched, transformers.optimization.GreedyLR) and spec.metric == "train_loss"
    # a loss that only gets worse: x0.95 after each patience (11 steps), down to 1e-6
    for k in range(110):
        opt.step()
        sched.step(1.0 + k)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.95**9)  # step 1 sets the best
    for k in range(110, 2000):
        opt.step()
        sched.step(1.0 + k)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    # one that keeps improving cannot push it above the initial rate
    opt = sgd(lr=1e-3)
    sched, _ = build_scheduler("greedy", opt, epochs=1, steps_per_epoch=400, interval="step")
    for k in range(400):
        opt.step()
        sched.step(1.0 / (k + 1))
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"factor": 0.0}, "factor"),  # GreedyLR: division by zero at the first increase
        ({"factor": -0.5}, "factor"),
        ({"factor": 1.0}, "factor"),
        ({"factor": math.nan}, "factor"),
        ({"window_size": 0}, "window_size"),  # GreedyLR: division by zero at step 1
        ({"window_size": -3}, "window_size"),
        ({"window_size": 2.5}, "window_size"),  # would be truncated to 2
        ({"patience": -1}, "patience"),
        ({"patience": 1.5}, "patience"),
        ({"patience": True}, "patience"),
        ({"smooth": "no"}, "smooth"),  # bool("no") is True
        ({"min_lr_ratio": 2.0}, "min_lr_ratio"),  # above max_lr_ratio 1.0
        ({"max_lr_ratio": 0.0}, "max_lr_ratio"),
        ({"min_lr_ratio": -1e-3}, "min_lr_ratio"),
        ({"max_lr_ratio": math.inf}, "max_lr_ratio"),
    ],
)
def test_greedy_refuses_parameters_that_fail_mid_run_when_built(overrides, match):
    with pytest.raises(ValueError, match=f"'greedy'.*{match}"):
        build_scheduler("greedy", sgd(), epochs=1, steps_per_epoch=10, interval="step", **overrides)


def test_greedy_refused_values_do_fail_mid_run_in_greedylr_itself():
    transformers = pytest.importorskip("transformers")
    greedy_lr = transformers.optimization.GreedyLR
    sched = greedy_lr(sgd(), smooth=True, window_size=0)
    with pytest.raises(ZeroDivisionError):
        sched.step(1.0)
    sched = greedy_lr(sgd(), factor=0.0, patience=1)
    sched.step(3.0)
    with pytest.raises(ZeroDivisionError):
        sched.step(2.0)  # the 2nd improvement in a row: lr / factor


def test_optimizer_replacing_peers():
    pytest.importorskip("schedulefree")
    pytest.importorskip("prodigyopt")
    p = torch.nn.Parameter(torch.ones(3))
    sf = build_peer_optimizer("schedule-free", [p], lr=0.01, run_steps=100)
    assert type(sf).__name__ == "AdamWScheduleFree"
    assert sf.param_groups[0]["warmup_steps"] == 10
    assert effective_lrs(sf) == pytest.approx([0.001])  # step 1 of 10 of the warmup
    prodigy = build_peer_optimizer("prodigy", [p], lr=0.01, run_steps=100)
    assert type(prodigy).__name__ == "Prodigy" and prodigy.param_groups[0]["lr"] == 1.0
    assert effective_lrs(prodigy) == pytest.approx([1e-6])  # lr x d0
    with pytest.raises(ValueError, match="does not bring an optimizer"):
        build_peer_optimizer("cosine", [p], lr=0.01, run_steps=10)
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        build_peer_optimizer("prodigy", [p], lr=0.01, run_steps=10, beta=0.9)


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # import fails as if absent
    with pytest.raises(ImportError, match=r'pip install "uncertainty-lr\[peers\]"'):
        build_peer_optimizer("prodigy", [torch.nn.Parameter(torch.ones(1))], lr=1.0, run_steps=10)


# ------------------------------------------------------------- in the training engine


def test_engine_evaluates_schedule_free_on_its_averaged_weights(tmp_path, monkeypatch):
    pytest.importorskip("schedulefree")
    from helpers import mnist_settings

    import uncertainty_lr_study.engine.torch_loop as training

    modes = []
    real_evaluate = training.evaluate

    def spy(model, x, y, *args, **kwargs):
        opt_modes = {g["train_mode"] for g in spy.optimizer.param_groups}
        modes.append(opt_modes)
        return real_evaluate(model, x, y, *args, **kwargs)

    real_build = training.build_optimizer

    def build(*args, **kwargs):
        spy.optimizer = real_build(*args, **kwargs)
        return spy.optimizer

    monkeypatch.setattr(training, "evaluate", spy)
    monkeypatch.setattr(training, "build_optimizer", build)
    m = training.train_classifier(
        mnist_settings(scheduler="schedule-free", epochs=1, train_subset=960, val_subset=200),
        tmp_path,
    )
    assert m["status"] == "completed"
    # validation at step 0, 10, 20 (mid-epoch) and the end, then the test set: all in eval mode
    assert len(modes) == 5 and all(m_ == {False} for m_ in modes)


def test_engine_steps_plateau_on_the_validation_loss(tmp_path):
    import pandas as pd
    from helpers import mnist_settings

    from uncertainty_lr_study.engine import train_classifier

    # relative threshold 0.99: only a 100x lower loss counts as better, so after the
    # first decision every evaluation is a plateau and (patience 0) halves the rate
    s = mnist_settings(
        scheduler="plateau",
        epochs=1,
        train_subset=960,
        val_subset=200,
        scheduler_params={"patience": 0, "threshold": 0.99, "warmup_fraction": 0.0},
    )
    m = train_classifier(s, tmp_path)
    h = pd.read_csv(tmp_path / "history.csv")
    # each row: the rate of the steps before it; decisions after the rows at 10, 20, 30
    lrs = h.loc[h["kind"] == "eval", "lr"].tolist()
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    assert m["final_lr"] == pytest.approx([2.5e-4])


# ------------------------------------------------------------- under the HF Trainer


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_trains_under_the_trainer(name, tiny_checkpoint, tmp_path):
    pytest.importorskip("transformers")
    from helpers import transformer_settings

    from uncertainty_lr_study.engine.trainer import train_transformer

    params = {}
    if name == "plateau":  # every evaluation after the first is a plateau (see above)
        params = {"patience": 0, "threshold": 0.99}
    m = train_transformer(
        transformer_settings(tiny_checkpoint, scheduler=name, scheduler_params=params), tmp_path
    )
    assert m["status"] == "completed" and m["steps"] == 6
    lr0 = 1e-3  # transformer_settings' learning rate
    h = __import__("pandas").read_csv(tmp_path / "history.csv")
    lrs = h["lr"].dropna()
    if name == "plateau":
        # 2 warmup steps, then decisions after the evaluations at steps 2, 4 and 6:
        # the first sets the best, the next two halve the rate
        assert m["final_lr"] == pytest.approx([lr0 / 4, lr0 / 4])
    elif name == "greedy":
        assert all(0 < lr <= lr0 + 1e-12 for lr in lrs)
    elif name == "prodigy":
        assert lrs.max() < 1.0  # the logged rate is lr x d, not Prodigy's lr 1.0
    elif name in ("warmup-linear", "warmup-cosine", "onecycle"):
        assert m["final_lr"][0] == pytest.approx(0.0, abs=lr0 * 1e-3)


# ------------------------------------------------------------------------ controls


def test_replay_of_a_run_reproduces_it_and_shuffled_permutes_its_signals(tmp_path):
    import pandas as pd
    from helpers import mnist_settings

    from uncertainty_lr_study.engine import train_classifier

    runs = tmp_path / "runs" / "mnist"
    common = dict(epochs=4, train_subset=320, val_subset=200, eval_every_steps=0)
    # threshold 0.6: the gradient norm of this small run crosses it, so it both
    # lowers and raises the rate
    params = {"threshold": 0.6}
    source = train_classifier(
        mnist_settings(scheduler="uncertainty-gradnorm", scheduler_params=params, **common),
        runs / "uncertainty-gradnorm" / "seed0",
    )
    src_trace = pd.read_csv(runs / "uncertainty-gradnorm" / "seed0" / "lr_trace.csv")
    assert len(src_trace) == 5 and src_trace["signal"].notna().sum() == 4  # 1 + 4 epochs
    replay = train_classifier(
        mnist_settings(scheduler="replay-gradnorm", **common), runs / "replay-gradnorm" / "seed0"
    )
    # the same rates, seed and data order: the same training, exactly
    assert replay["test"] == source["test"] and replay["final_lr"] == source["final_lr"]
    a = pd.read_csv(runs / "uncertainty-gradnorm" / "seed0" / "history.csv").drop(columns="seconds")
    b = pd.read_csv(runs / "replay-gradnorm" / "seed0" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)

    train_classifier(
        mnist_settings(scheduler="shuffled-gradnorm", **common), runs / "shuffled-gradnorm" / "seed0"
    )
    shuffled = pd.read_csv(runs / "shuffled-gradnorm" / "seed0" / "lr_trace.csv")
    assert sorted(shuffled["signal"].dropna()) == sorted(src_trace["signal"].dropna())


def test_cross_seed_replay_trains_its_own_seed_with_another_seeds_rates(tmp_path):
    import pandas as pd
    from helpers import mnist_settings

    from uncertainty_lr_study.config import ConfigError
    from uncertainty_lr_study.engine import train_classifier

    runs = tmp_path / "runs" / "mnist"
    common = dict(epochs=3, train_subset=320, val_subset=200, eval_every_steps=0)
    out = runs / "replay-xseed-gradnorm" / "seed0"
    with pytest.raises(ConfigError, match="set source_seed"):
        train_classifier(mnist_settings(scheduler="replay-xseed-gradnorm", **common), out)
    xseed = mnist_settings(scheduler="replay-xseed-gradnorm", source_seed=1, **common)
    with pytest.raises(ConfigError, match="seed 1, expected in .*uncertainty-gradnorm/seed1"):
        train_classifier(xseed, out)
    # threshold 0.5: the two seeds' gradient norms cross it at different epochs, so
    # their traces differ and the replay shows which one it read
    params = {"threshold": 0.5}
    for seed in (0, 1):
        train_classifier(
            mnist_settings(
                scheduler="uncertainty-gradnorm", scheduler_params=params, seed=seed, **common
            ),
            runs / "uncertainty-gradnorm" / f"seed{seed}",
        )
    train_classifier(xseed, out)
    replayed = pd.read_csv(out / "lr_trace.csv")["lr_group0"]
    source = pd.read_csv(runs / "uncertainty-gradnorm" / "seed1" / "lr_trace.csv")["lr_group0"]
    own = pd.read_csv(runs / "uncertainty-gradnorm" / "seed0" / "lr_trace.csv")["lr_group0"]
    assert not own.equals(source)
    pd.testing.assert_series_equal(replayed, source)  # seed 1's rates ...
    ours = json.loads((out / "metrics.json").read_text())["settings"]
    assert ours["seed"] == 0 and ours["source_seed"] == 1  # ... on seed 0's run


def test_the_engine_turns_on_deterministic_kernels_before_training(tmp_path, monkeypatch):
    # replays are compared with their sources: on CUDA that needs deterministic
    # kernels (a GPU check found replays off by 0.13 points without them)
    import os

    from helpers import mnist_settings

    from uncertainty_lr_study.engine import train_classifier

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    train_classifier(
        mnist_settings(epochs=1, train_subset=64, val_subset=64, eval_every_steps=0),
        tmp_path / "run",
    )
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # a missing kernel warns
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_control_without_its_source_fails_before_training(tmp_path):
    from helpers import mnist_settings

    from uncertainty_lr_study.config import ConfigError
    from uncertainty_lr_study.engine import train_classifier

    out = tmp_path / "runs" / "mnist" / "replay-variance" / "seed0"
    with pytest.raises(ConfigError, match="run it first"):
        train_classifier(mnist_settings(scheduler="replay-variance"), out)
    # a source made with other settings is refused, naming what differs
    train_classifier(
        mnist_settings(scheduler="uncertainty-variance", epochs=1, train_subset=64, val_subset=50),
        tmp_path / "runs" / "mnist" / "uncertainty-variance" / "seed0",
    )
    with pytest.raises(ConfigError, match="differs in: epochs"):
        train_classifier(
            mnist_settings(scheduler="replay-variance", epochs=2, train_subset=64, val_subset=50),
            out,
        )


def test_replay_under_the_trainer_reproduces_its_source(tiny_checkpoint, tmp_path):
    pytest.importorskip("transformers")
    import pandas as pd
    from helpers import transformer_settings

    from uncertainty_lr_study.engine.trainer import train_transformer

    runs = tmp_path / "runs" / "imdb-bert"
    params = {"threshold": 0.05}  # the tiny model's gradient norm crosses it
    source = train_transformer(
        transformer_settings(
            tiny_checkpoint, scheduler="uncertainty-gradnorm", scheduler_params=params
        ),
        runs / "uncertainty-gradnorm" / "seed0",
    )
    trace = pd.read_csv(runs / "uncertainty-gradnorm" / "seed0" / "lr_trace.csv")
    assert len(trace) == 7  # before the first step, then after each of the 6
    assert trace["lr_group0"].nunique() > 2  # warmup and decisions moved the rate
    replay = train_transformer(
        transformer_settings(tiny_checkpoint, scheduler="replay-gradnorm"),
        runs / "replay-gradnorm" / "seed0",
    )
    assert replay["test"] == source["test"] and replay["final_lr"] == source["final_lr"]


def test_preflight_wants_a_controls_source_in_the_task():
    from uncertainty_lr_study.config import ConfigError, load_config, preflight
    from uncertainty_lr_study.paths import repo_root

    config = load_config(repo_root() / "config/smoke.yaml")
    config["tasks"]["mnist"]["schedulers"] = ["cosine", "replay-variance"]
    with pytest.raises(ConfigError, match="add 'uncertainty-variance' to the task's schedulers"):
        preflight(config)
