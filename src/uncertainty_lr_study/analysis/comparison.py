"""The comparison of every method with the best baseline, per task: medians over
seeds with bootstrap intervals, speed-up to the validation target, paired
probability of improvement, and the performance profile across tasks.

Built from the aggregate table (``runs.csv``) with :mod:`uncertainty_lr_study.analysis.stats`;
written as ``comparison.csv`` beside it (for the explore notebook) and as the
paper's main table (:func:`uncertainty_lr_study.analysis.latex.comparison_tex`).

Time to target is measured in optimizer steps by default: deterministic for a given
seed, and comparable across methods whose cost per step is the same (wall seconds
are reported too, but on a shared CPU they also measure the neighbours).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from uncertainty_lr_study.analysis.stats import (
    median_ci,
    performance_profile,
    probability_of_improvement,
    speedup,
)
from uncertainty_lr_study.registry import SCHEDULERS, registry_order

TIME_COLUMN = "steps_to_target"


def family(name: str) -> str:
    """The registry family of a schedule (``"other"`` for names outside it)."""
    spec = SCHEDULERS.get(name)
    return spec.family if spec is not None else "other"


def best_baselines(runs: pd.DataFrame, time_column: str = TIME_COLUMN) -> pd.DataFrame:
    """Per task, the reference baselines among the fixed schedules of the study plan
    (``family == "baseline"``):

    - ``time_baseline``: the smallest median time-to-target (ties: the higher mean
      test score), the reference of speed-ups;
    - ``score_baseline``: the highest mean test score (the task's ranking metric).

    Returns:
        A frame indexed by task with both columns (None where a task ran no baseline).
    """
    rows = {}
    for task, g in runs.groupby("task", sort=False):
        base = g[g["scheduler"].map(family) == "baseline"]
        if base.empty:
            rows[task] = {"time_baseline": None, "score_baseline": None}
            continue
        per = base.groupby("scheduler").agg(
            time=(time_column, lambda s: float(np.median(s.to_numpy(float)))),
            score=("test_score", "mean"),
        )
        by_time = per.sort_values(["time", "score"], ascending=[True, False], kind="stable")
        by_score = per["score"].dropna()
        rows[task] = {
            "time_baseline": by_time.index[0],
            "score_baseline": by_score.idxmax() if len(by_score) else None,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _paired(g: pd.DataFrame, ref: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of ``column`` of two schedules on their common seeds, in seed order."""
    a = g.set_index("seed")[column]
    b = ref.set_index("seed")[column]
    seeds = sorted(set(a.index) & set(b.index))
    return a.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float)


def comparison(
    runs: pd.DataFrame, time_column: str = TIME_COLUMN, seed: int = 0
) -> pd.DataFrame:
    """One row per task and schedule: the comparison with the best baselines.

    Columns: ``task``, ``scheduler``, ``family``, ``n_seeds``, ``n_reached``;
    ``score_median`` / ``_low`` / ``_high`` (test score of the completed runs, the
    task's ranking metric); ``steps_median`` / ``_low`` / ``_high`` (steps to
    target), ``epochs_median``, ``seconds_median`` (``inf``: the median run missed);
    ``device_hours``; ``time_baseline``, ``speedup`` (median baseline time / median
    method time, :func:`~uncertainty_lr_study.analysis.stats.speedup`), ``p_faster`` /
    ``_low`` / ``_high`` (paired by seed); ``score_baseline``, ``p_better`` /
    ``_low`` / ``_high`` (higher test score, paired by seed). Comparisons of a
    baseline with itself are NaN. Intervals: 95% percentile bootstrap over seeds.

    Args:
        runs: the aggregate table (``runs.csv``).
        time_column: ``steps_to_target``, ``epochs_to_target`` or
            ``seconds_to_target``: what speed-ups and ``p_faster`` compare.
        seed: of the bootstrap.

    Raises:
        ValueError: an unknown ``time_column``.
    """
    if time_column not in ("steps_to_target", "epochs_to_target", "seconds_to_target"):
        raise ValueError(
            f"time_column must be steps_to_target, epochs_to_target or seconds_to_target, "
            f"got {time_column!r}"
        )
    refs = best_baselines(runs, time_column)
    rows = []
    for task, t in runs.groupby("task", sort=False):
        tb, sb = refs.loc[task, "time_baseline"], refs.loc[task, "score_baseline"]
        for sched in registry_order(t["scheduler"].unique()):
            g = t[t["scheduler"] == sched]
            scores = g["test_score"].dropna().to_numpy(float)
            score = median_ci(scores, seed=seed) if len(scores) else None
            steps = median_ci(g["steps_to_target"].to_numpy(float), seed=seed)
            row = {
                "task": task,
                "scheduler": sched,
                "family": family(sched),
                "score_metric": g["score_metric"].iloc[0],
                "n_seeds": len(g),
                "n_reached": int(g["target_reached"].sum()),
                "score_median": score.value if score else math.nan,
                "score_low": score.low if score else math.nan,
                "score_high": score.high if score else math.nan,
                "steps_median": steps.value,
                "steps_low": steps.low,
                "steps_high": steps.high,
                "epochs_median": float(np.median(g["epochs_to_target"].to_numpy(float))),
                "seconds_median": float(np.median(g["seconds_to_target"].to_numpy(float))),
                "device_hours": float(g["device_hours"].sum()),
                "time_baseline": tb,
                "score_baseline": sb,
            }
            row["speedup"] = math.nan
            faster = better = None
            if tb is not None and sched != tb:
                m, b = _paired(g, t[t["scheduler"] == tb], time_column)
                if len(m):
                    row["speedup"] = speedup(b, m)
                    faster = probability_of_improvement(m, b, higher_is_better=False, seed=seed)
            if sb is not None and sched != sb:
                scored = t[t["test_score"].notna()]
                m, b = _paired(
                    scored[scored["scheduler"] == sched],
                    scored[scored["scheduler"] == sb],
                    "test_score",
                )
                if len(m):
                    better = probability_of_improvement(m, b, higher_is_better=True, seed=seed)
            for name, p in (("p_faster", faster), ("p_better", better)):
                row[name], row[f"{name}_low"], row[f"{name}_high"] = (
                    (p.value, p.low, p.high) if p else (math.nan,) * 3
                )
            rows.append(row)
    return pd.DataFrame(rows)


def profile(runs: pd.DataFrame, time_column: str = TIME_COLUMN, taus=None) -> pd.DataFrame:
    """Performance profile across tasks of the median time-to-target over seeds.

    A method is profiled over the tasks it ran on (reduced grids run some methods
    on some tasks only): on each such task its median time is divided by the best
    median time of the methods run there.

    Returns:
        :func:`~uncertainty_lr_study.analysis.stats.performance_profile` (index ``tau``,
        one column per method).
    """
    medians = runs.pivot_table(
        index="task",
        columns="scheduler",
        values=time_column,
        aggfunc=lambda s: float(np.median(s.to_numpy(float))),
        sort=False,
    )
    medians = medians[registry_order(medians.columns)]
    ran = medians.notna()
    rho = performance_profile(medians, taus)
    # fraction over the tasks each method ran on (NaN counted as missed above)
    return rho * len(medians) / ran.sum().clip(lower=1)
