"""The comparison's statistics on constructed inputs with known answers."""

import math

import numpy as np
import pandas as pd
import pytest

from uncertainty_lr_study.analysis.stats import (
    median_ci,
    performance_profile,
    probability_of_improvement,
    speedup,
)

INF = math.inf


def test_twice_as_fast_on_every_seed():
    baseline = [400.0, 600.0, 500.0, 700.0, 450.0]
    method = [b / 2 for b in baseline]
    assert speedup(baseline, method) == pytest.approx(2.0)
    poi = probability_of_improvement(method, baseline, higher_is_better=False)
    assert (poi.value, poi.low, poi.high, poi.n) == (1.0, 1.0, 1.0, 5)
    # and the other way round: never better
    assert probability_of_improvement(baseline, method, higher_is_better=False).value == 0.0


def test_missed_target_counts_as_infinite_not_dropped():
    # two of three seeds reach the target; the miss is the largest value
    ci = median_ci([100.0, INF, 120.0])
    assert ci.value == 120.0 and ci.n == 3
    assert ci.high == INF  # an interval of a median of 3 reaches the worst seed
    # two misses of three: the median itself is a miss
    assert median_ci([100.0, INF, INF]).value == INF
    assert median_ci([INF, INF]).value == INF
    # dropping the miss would have said 100; keeping it, the method is slower
    assert speedup([100.0, 100.0, 100.0], [50.0, INF, INF]) == 0.0
    assert speedup([INF, INF, INF], [50.0, 60.0, 70.0]) == INF
    assert math.isnan(speedup([INF], [INF]))
    # a miss loses to any finite time, and two misses tie
    poi = probability_of_improvement([INF, 10.0, INF], [5.0, 20.0, INF], higher_is_better=False)
    assert poi.value == pytest.approx((0 + 1 + 0.5) / 3)


def test_median_ci_of_three_seeds_is_about_min_max():
    ci = median_ci([0.80, 0.90, 0.85])
    assert ci.value == pytest.approx(0.85)
    assert ci.low == pytest.approx(0.80) and ci.high == pytest.approx(0.90)
    # reproducible, and a single value has no interval
    assert median_ci([0.80, 0.90, 0.85]) == ci
    one = median_ci([0.7])
    assert one.value == 0.7 and math.isnan(one.low) and math.isnan(one.high)


def test_median_ci_narrows_with_more_seeds():
    rng = np.random.default_rng(0)
    values = rng.normal(10.0, 1.0, size=200)
    ci = median_ci(values)
    assert ci.low < np.median(values) < ci.high
    assert ci.high - ci.low < 0.6  # ~ 2 * 1.96 * 1.25 / sqrt(200) = 0.35


def test_scores_higher_is_better_and_ties():
    poi = probability_of_improvement([0.9, 0.8, 0.7], [0.8, 0.8, 0.8], higher_is_better=True)
    assert poi.value == pytest.approx(0.5)  # one win, one tie, one loss
    assert 0.0 <= poi.low <= poi.value <= poi.high <= 1.0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="pair them by seed"):
        probability_of_improvement([1.0, 2.0], [1.0], higher_is_better=False)
    with pytest.raises(ValueError, match="NaN"):
        median_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="no values"):
        speedup([], [1.0])


def test_performance_profile_ratio_to_best():
    times = pd.DataFrame(
        {"fast": [100.0, 200.0, INF], "slow": [200.0, 200.0, 300.0], "never": [INF, INF, INF]},
        index=["mnist", "imdb", "squad"],
    )
    rho = performance_profile(times, taus=[1.0, 1.5, 2.0, 4.0])
    # fast: best on mnist and (tied) on imdb, misses squad
    assert rho["fast"].tolist() == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2 / 3])
    # slow: ratio 2 on mnist, 1 on imdb, best (1) on squad
    assert rho["slow"].tolist() == pytest.approx([2 / 3, 2 / 3, 1.0, 1.0])
    assert rho["never"].tolist() == [0.0, 0.0, 0.0, 0.0]
    # default grid spans [1, 4] and profiles never decrease in tau
    full = performance_profile(times)
    assert full.index[0] == 1.0 and full.index[-1] == 4.0
    assert (full.diff().dropna() >= 0).all().all()


def test_performance_profile_task_nobody_reaches_counts_for_none():
    times = pd.DataFrame({"a": [INF, 10.0], "b": [INF, np.nan]}, index=["hard", "easy"])
    rho = performance_profile(times, taus=[4.0])
    assert rho.loc[4.0, "a"] == 0.5  # only "easy"
    assert rho.loc[4.0, "b"] == 0.0  # not run on "easy": a miss
    with pytest.raises(ValueError, match="taus must be >= 1"):
        performance_profile(times, taus=[0.5])
    with pytest.raises(ValueError, match="> 0"):
        performance_profile(pd.DataFrame({"a": [0.0]}), taus=[1.0])


def _runs(rows):
    """A runs.csv-like frame from (task, scheduler, seed, steps, score) tuples."""
    frame = pd.DataFrame(rows, columns=["task", "scheduler", "seed", "steps_to_target", "test_score"])
    frame["epochs_to_target"] = frame["steps_to_target"] / 100
    frame["seconds_to_target"] = frame["steps_to_target"] / 10
    frame["target_reached"] = np.isfinite(frame["steps_to_target"])
    frame["score_metric"] = "accuracy"
    frame["device_hours"] = 0.01
    return frame


def test_comparison_against_the_best_baselines():
    from uncertainty_lr_study.analysis.comparison import comparison, profile

    rows = []
    for seed, t in enumerate([1000.0, 1200.0, 1100.0]):
        rows += [
            ("mnist", "cosine", seed, t, 0.990),
            ("mnist", "step", seed, 2 * t, 0.992),  # slower, but the best score
            ("mnist", "uncertainty-gradnorm", seed, t / 2, 0.985),  # 2x faster than cosine
            ("mnist", "prodigy", seed, INF, 0.97),  # never reaches the target
        ]
    table = comparison(_runs(rows)).set_index("scheduler")
    assert (table["time_baseline"] == "cosine").all() and (table["score_baseline"] == "step").all()
    fast = table.loc["uncertainty-gradnorm"]
    assert fast["speedup"] == pytest.approx(2.0)
    assert (fast["p_faster"], fast["p_faster_low"], fast["p_faster_high"]) == (1.0, 1.0, 1.0)
    assert fast["p_better"] == 0.0  # lower score than step on every seed
    assert fast["steps_median"] == 550.0 and fast["family"] == "uncertainty"
    never = table.loc["prodigy"]
    assert never["n_reached"] == 0 and never["steps_median"] == INF
    assert never["speedup"] == 0.0 and never["p_faster"] == 0.0
    assert math.isnan(table.loc["cosine", "speedup"])  # the reference itself
    assert table.loc["step", "speedup"] == pytest.approx(0.5)
    rho = profile(_runs(rows), taus=[1.0, 2.0])
    assert rho["uncertainty-gradnorm"].tolist() == [1.0, 1.0]
    assert rho["cosine"].tolist() == [0.0, 1.0]
    assert rho["prodigy"].tolist() == [0.0, 0.0]


def test_a_control_verdict_says_which_arm_did_better():
    from uncertainty_lr_study.analysis.latex import control_verdict

    def runs(score, steps):
        return pd.DataFrame({"test_score": [score], "steps_to_target": [steps]})

    source = runs(0.99, 800.0)
    assert control_verdict(runs(0.99, 800.0), source) == "same"
    assert control_verdict(runs(0.99, 500.0), source) == "control"  # as good, faster
    assert control_verdict(runs(0.98, INF), source) == "source"  # worse, never reached
    assert control_verdict(runs(0.995, 900.0), source) == "mixed"
    assert control_verdict(runs(0.97, INF), runs(0.96, INF)) == "control"


def test_a_method_on_fewer_seeds_is_compared_on_the_seeds_it_ran():
    from uncertainty_lr_study.analysis.comparison import comparison

    rows = [("mnist", "cosine", k, t, 0.99) for k, t in enumerate([1000.0, 1200.0, 1100.0])]
    rows.append(("mnist", "onecycle", 0, 500.0, 0.99))  # a peer on seed 0 only
    fast = comparison(_runs(rows)).set_index("scheduler").loc["onecycle"]
    # cosine's 1,000 steps on seed 0, not its 1,100 over three seeds
    assert fast["speedup"] == pytest.approx(2.0) and fast["p_faster"] == 1.0


def test_profile_counts_only_the_tasks_a_method_ran_on():
    from uncertainty_lr_study.analysis.comparison import profile

    rows = [
        ("mnist", "cosine", 0, 100.0, 0.9),
        ("mnist", "plateau", 0, 50.0, 0.9),  # plateau runs on MNIST only
        ("imdb", "cosine", 0, 100.0, 0.9),
    ]
    rho = profile(_runs(rows), taus=[1.0])
    assert rho.loc[1.0, "plateau"] == 1.0  # fastest on the one task it ran
    assert rho.loc[1.0, "cosine"] == 0.5  # fastest on imdb, 2x slower on mnist


def test_generated_text_ranks_the_methods_and_reports_the_controls():
    from uncertainty_lr_study.analysis.comparison import comparison
    from uncertainty_lr_study.analysis.latex import controls_text, ranking_text

    rows = []
    for seed in range(3):
        rows += [
            ("mnist", "cosine", seed, 1000.0, 0.990),
            ("mnist", "uncertainty-gradnorm", seed, 800.0, 0.985),
            ("mnist", "replay-gradnorm", seed, 800.0, 0.986),
            ("mnist", "shuffled-gradnorm", seed, INF, 0.980),
            ("mnist", "onecycle", seed, 600.0, 0.995),
        ]
    table = comparison(_runs(rows))
    ranking = ranking_text(table)
    assert "highest median test score was \\texttt{onecycle}'s ($99.50\\%$, peer)" in ranking
    assert "fewest median steps to the target (600) were taken by \\texttt{onecycle}" in ranking
    assert "\\texttt{uncertainty-gradnorm} ranked 4 of 5" in ranking
    runs = _runs(rows)
    controls = controls_text(runs)
    assert "\\texttt{shuffled-gradnorm} (fed its decision signals in shuffled order)" in controls
    assert "$98.00\\%$ and missed the target, against $98.50\\%$ and 800 steps" in controls
    # a control on seed 0 only is compared with its source on seed 0, not with the
    # source's median over three seeds (which missed the target here)
    extra = [
        ("mnist", "uncertainty-variance", 0, 700.0, 0.991),
        ("mnist", "uncertainty-variance", 1, INF, 0.970),
        ("mnist", "uncertainty-variance", 2, INF, 0.971),
        ("mnist", "replay-variance", 0, 700.0, 0.991),
    ]
    controls = controls_text(_runs(rows + extra))
    assert (
        "On mnist (seed 0), \\texttt{replay-variance} (replaying its learning rates) reached a "
        "test score of $99.10\\%$ and 700 steps to target, against $99.10\\%$ and 700 steps to "
        "target for \\texttt{uncertainty-variance} on the same seed: the same result, as it "
        "must be when nothing but the schedule differs." in controls
    )
    assert "cross-seed" not in controls  # described only where one ran
    # a cross-seed replay (seed 1's rates on seed 0) is compared with its source on
    # its own seed 0, the run it shares initial weights and data order with
    extra.append(("mnist", "replay-xseed-variance", 0, INF, 0.985))
    controls = controls_text(_runs(rows + extra))
    assert (
        "\\texttt{replay-xseed-variance} (replaying the learning rates of its source's run on the next seed) "
        "reached a test score of $98.50\\%$ and missed the target, against $99.10\\%$ and "
        "700 steps to target for \\texttt{uncertainty-variance} on the same seed: the "
        "uncertainty schedule did better, so here reacting to its signal helped." in controls
    )
    assert "no better than its cross-seed replay or shuffled control" in controls
