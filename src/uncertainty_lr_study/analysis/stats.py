"""Statistics of the comparison: medians with bootstrap confidence intervals,
speed-ups to a validation target, paired probability of improvement, and
performance profiles.

Conventions (those of the benchmark for training algorithms, AlgoPerf: Dahl et al.
2023, "Benchmarking Neural Network Training Algorithms"):

- a run that never reaches the validation target has time-to-target ``inf``; it is
  kept (never dropped), so a method that misses on some seeds has a larger median;
- a performance profile is of the ratio-to-best kind: per task, each method's
  time-to-target divided by the best method's, and ``rho(tau)`` the fraction of
  tasks on which the ratio is at most ``tau``.

Bootstrap intervals come from :func:`scipy.stats.bootstrap` (percentile method:
with 3 seeds the interval of a median is about ``[min, max]``, which is what 3
seeds can say).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 9999


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    Attributes:
        value: the estimate (e.g. the median over seeds).
        low, high: the interval's bounds (NaN when it cannot be computed: fewer than
            2 values).
        n: how many values it is computed from.
    """

    value: float
    low: float
    high: float
    n: int


def _values(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name}: no values (at least one run is needed)")
    if np.isnan(arr).any():
        raise ValueError(
            f"{name}: NaN among the values; a run that missed its target is +inf, not NaN"
        )
    return arr


def _bootstrap(
    arr: np.ndarray, statistic: Callable[..., float], confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over one sample."""
    if arr.size < 2:
        return math.nan, math.nan
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])  # every resample is the same
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (arr,),
            statistic,
            n_resamples=N_RESAMPLES,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_ci(
    values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE, seed: int = 0
) -> Interval:
    """Median over runs with a percentile-bootstrap confidence interval.

    ``+inf`` (a run that missed its target) is an ordinary, largest value: a median or
    bound that involves one is ``inf``. (The median is an order statistic, so the
    bootstrap runs with ``inf`` replaced by a finite stand-in above every finite
    value, and any result above the largest finite value is mapped back to ``inf``.)

    Args:
        values: one number per run, e.g. steps to target per seed.
        confidence: the interval's level, in (0, 1).
        seed: of the bootstrap's random generator (results are reproducible).

    Returns:
        :class:`Interval` (bounds NaN with a single value).

    Raises:
        ValueError: no values, or a NaN among them.
    """
    arr = _values(values, "median_ci")
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return Interval(math.inf, math.inf, math.inf, arr.size)
    top = float(finite.max())
    stand_in = top + 1.0 + abs(top)
    work = np.where(np.isfinite(arr), arr, stand_in)

    def back(x: float) -> float:
        return math.inf if x > top else x

    low, high = _bootstrap(
        work, lambda x, axis=-1: np.median(x, axis=axis), confidence, seed
    )
    return Interval(
        back(float(np.median(work))),
        back(low) if not math.isnan(low) else low,
        back(high) if not math.isnan(high) else high,
        arr.size,
    )


def speedup(baseline: Sequence[float], method: Sequence[float]) -> float:
    """How many times faster ``method`` reaches the target than ``baseline``: the
    ratio of their median times-to-target (``median(baseline) / median(method)``).

    ``inf`` when only the method reaches the target (in the median), 0 when only the
    baseline does, NaN when neither does.

    Raises:
        ValueError: empty or NaN inputs.
    """
    b = float(np.median(_values(baseline, "speedup baseline")))
    m = float(np.median(_values(method, "speedup method")))
    if math.isinf(b) and math.isinf(m):
        return math.nan
    if math.isinf(m):
        return 0.0
    if math.isinf(b):
        return math.inf
    if m == 0:
        raise ValueError("speedup: a method reached the target in 0 time; times must be > 0")
    return b / m


def probability_of_improvement(
    method: Sequence[float],
    baseline: Sequence[float],
    *,
    higher_is_better: bool,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> Interval:
    """Paired-by-seed probability that ``method`` beats ``baseline``, with a CI.

    For seed ``i`` the outcome is 1 if ``method[i]`` is better than ``baseline[i]``,
    0.5 on a tie (two ``inf`` included) and 0 if worse; the estimate is the mean
    over seeds and its interval a percentile bootstrap over seeds (the seeds are
    resampled as pairs, since the same seed gives both runs the same initial
    weights and data order). Times are better when lower (``higher_is_better=False``),
    scores when higher.

    Args:
        method, baseline: one value per seed, in the same seed order.
        higher_is_better: True for scores (accuracy, F1), False for times.
        confidence: the interval's level.
        seed: of the bootstrap's generator.

    Raises:
        ValueError: different lengths, empty inputs or NaN.
    """
    m = _values(method, "probability_of_improvement method")
    b = _values(baseline, "probability_of_improvement baseline")
    if m.shape != b.shape:
        raise ValueError(
            f"probability_of_improvement: {m.size} method values but {b.size} baseline "
            "values; pair them by seed (the same seeds for both)"
        )
    better = m > b if higher_is_better else m < b
    outcome = np.where(m == b, 0.5, better.astype(float))
    low, high = _bootstrap(
        outcome, lambda x, axis=-1: np.mean(x, axis=axis), confidence, seed
    )
    return Interval(float(outcome.mean()), low, high, m.size)


def performance_profile(
    times: pd.DataFrame, taus: Sequence[float] | np.ndarray | None = None
) -> pd.DataFrame:
    """Performance profiles of the ratio-to-best kind (Dolan & More 2002; AlgoPerf).

    For each task (row of ``times``) every method's time is divided by the best
    (smallest) time of any method on that task; ``rho_m(tau)`` is the fraction of
    tasks on which method ``m``'s ratio is at most ``tau``. A method that misses the
    target on a task (``inf``) never counts on it; a task on which no method
    reaches the target counts for none.

    Args:
        times: index = tasks, columns = methods, values = time-to-target (e.g. the
            median over seeds of steps to target), ``inf`` when missed. A method
            not run on a task: NaN, which counts as missed on that task.
        taus: ratios at which to evaluate the profile (default: 301 points in
            [1, 4]); all >= 1.

    Returns:
        A frame with index ``tau`` and one column per method, values in [0, 1].

    Raises:
        ValueError: an empty table, a time <= 0, or a tau below 1.
    """
    if times.empty:
        raise ValueError("performance_profile: no tasks or methods")
    values = times.to_numpy(dtype=float)
    values = np.where(np.isnan(values), np.inf, values)
    if (values <= 0).any():
        raise ValueError("performance_profile: times must be > 0 (inf for a missed target)")
    taus = np.linspace(1.0, 4.0, 301) if taus is None else np.asarray(taus, dtype=float)
    if (taus < 1).any():
        raise ValueError(f"performance_profile: taus must be >= 1, got min {taus.min()}")
    best = values.min(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        ratios = np.where(np.isfinite(best), values / best, np.inf)
    rho = (ratios[None, :, :] <= taus[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=times.columns)
