"""Collect every run's outputs into tidy tables.

``runs.csv``: one row per run (task, scheduler, seed) with final metrics,
time-to-target, cost and the settings that matter. ``history.csv``: every row of
every run's ``history.csv`` with ``task``, ``scheduler`` and ``seed`` columns (and
``val_score``: the data set's ranking metric at each evaluation).
``comparison.csv``: every method against the best baselines, per task
(:mod:`uncertainty_lr_study.analysis.comparison`). ``signal_levels.csv``: where each
task's signals sit against the thresholds (:func:`signal_levels`).
``sensitivity.csv``: the runs of the sensitivity sweep (:func:`aggregate_sensitivity`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from uncertainty_lr_study.analysis.comparison import comparison, family
from uncertainty_lr_study.io import atomic_write_csv
from uncertainty_lr_study.tasks import DATA_SETS


class ResultsError(ValueError):
    """A run's output file is missing, truncated or malformed; the message names it
    (one line)."""


UNREADABLE = (OSError, UnicodeDecodeError)
"""What reading a run's file raises when it is not a readable UTF-8 file (a
folder in its place, bad permissions, binary bytes)."""

HISTORY_COLUMNS = ("kind", "step", "epoch", "lr", "grad_norm", "predictive_variance", "val_loss")
"""Columns of a run's ``history.csv`` that the aggregate, its tables and figures
read (besides the data set's ranking metric, ``val_<DataSet.primary_metric>``)."""


def _why(err: BaseException) -> str:
    """An exception's reason on one line (an ``OSError``'s without the file name)."""
    text = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return " ".join(text.split())


def _read_json(path: Path) -> dict[str, Any]:
    """A run's ``metrics.json`` as a dict (``null`` values, e.g. a diverged run's
    last validation loss, as None).

    Raises:
        ResultsError: the file is missing, unreadable, not UTF-8, not valid JSON or
            not a JSON object (one line naming it and the fix).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ResultsError(f"run output {path} is missing; re-run its training job") from err
    except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: deep nesting
        raise ResultsError(
            f"run output {path} is not valid JSON ({_why(err)}); delete it and re-run its job"
        ) from err
    except UNREADABLE as err:
        raise ResultsError(
            f"run output {path} cannot be read ({type(err).__name__}: {_why(err)}); "
            "delete it and re-run its job"
        ) from err
    if not isinstance(data, dict):
        raise ResultsError(f"run output {path} is not a JSON object; delete it and re-run its job")
    return data


def _run_row(path: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_row` of the file at ``path``.

    Raises:
        ResultsError: a field is missing or of the wrong type (one line naming the file).
    """
    try:
        return run_row(metrics)
    except KeyError as err:
        raise ResultsError(f"run output {path} lacks field {err}; re-run its job") from err
    except (TypeError, IndexError, AttributeError, ValueError) as err:
        raise ResultsError(
            f"run output {path} has a field of the wrong type ({_why(err)}); re-run its job"
        ) from err


def _read_history(path: Path, metrics: dict[str, Any]) -> pd.DataFrame:
    """The ``history.csv`` of a run, checked against its ``metrics.json``.

    Raises:
        ResultsError: the file is missing, unreadable, not CSV, lacks a column of
            :data:`HISTORY_COLUMNS` or the ranking metric, has a non-numeric
            ``step`` or ``epoch``, or has another number of rows than
            ``metrics["history_rows"]`` (one line naming it and the fix).
    """
    try:
        hist = pd.read_csv(path)
    except FileNotFoundError as err:
        raise ResultsError(f"run history {path} is missing; re-run its training job") from err
    except (*UNREADABLE, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ResultsError(
            f"run history {path} is malformed ({type(err).__name__}: {_why(err)}); "
            "delete it and re-run its job"
        ) from err
    needed = [*HISTORY_COLUMNS, f"val_{DATA_SETS[metrics['dataset']].primary_metric}"]
    missing = [c for c in needed if c not in hist.columns]
    if missing:
        raise ResultsError(
            f"run history {path} lacks column(s) {', '.join(missing)}; re-run its job"
        )
    expected = metrics.get("history_rows")
    if expected is not None and len(hist) != expected:
        raise ResultsError(
            f"run history {path} has {len(hist)} rows, its metrics.json says "
            f"{expected}: it is truncated or from another run; re-run the job"
        )
    for column in ("step", "epoch"):
        if len(hist) and not pd.api.types.is_numeric_dtype(hist[column]):
            raise ResultsError(
                f"run history {path} has non-numeric values in column {column!r}; re-run its job"
            )
    return hist


def run_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """Flatten one ``metrics.json`` into a row of ``runs.csv`` (its columns in the
    order of :func:`_result_columns`, :func:`_cost_columns`, :func:`_settings_columns`).

    A ``null`` number (how a run writes NaN and infinity, e.g. a diverged run's last
    validation loss or a non-finite learning rate) becomes NaN.

    Raises:
        KeyError, TypeError, IndexError, AttributeError: a field is missing or of
            the wrong type.
    """
    row = {**_result_columns(metrics), **_cost_columns(metrics), **_settings_columns(metrics)}
    return {k: (math.nan if v is None else v) for k, v in row.items()}


def _result_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Who the run is, its scores, its time to target and its size."""
    test = metrics.get("test") or {}
    ttt = metrics["time_to_target"]
    s = metrics["settings"]
    nan = math.nan
    primary = DATA_SETS[metrics["dataset"]].primary_metric
    final_val = metrics["final_val"]
    return {
        "task": metrics["task"],
        "dataset": metrics["dataset"],
        "model": metrics["model"],
        "scheduler": metrics["scheduler"],
        "family": family(metrics["scheduler"]),
        "seed": metrics["seed"],
        "status": metrics["status"],
        "test_accuracy": test.get("accuracy", nan),
        "test_precision_macro": test.get("precision_macro", nan),
        "test_recall_macro": test.get("recall_macro", nan),
        "test_f1_macro": test.get("f1_macro", nan),
        "test_precision": test.get("precision", nan),
        "test_recall": test.get("recall", nan),
        "test_f1": test.get("f1", nan),
        "test_exact_match": test.get("exact_match", nan),
        "test_loss": test.get("loss", nan),
        # the data set's ranking metric (accuracy; SQuAD: F1), tasks.DataSet.primary_metric
        "score_metric": primary,
        "test_score": test.get(primary, nan),
        "final_val_score": final_val.get(primary, nan),
        "final_val_accuracy": final_val.get("accuracy", nan),
        "best_val_accuracy": (
            nan if metrics.get("best_val_accuracy") is None else metrics["best_val_accuracy"]
        ),
        "target_metric": ttt["metric"],
        "target_value": ttt["target"],
        "target_reached": bool(ttt["reached"]),
        # Runs that miss the target count as infinitely slow, never dropped.
        "steps_to_target": ttt["steps"] if ttt["reached"] else math.inf,
        "epochs_to_target": ttt["epochs"] if ttt["reached"] else math.inf,
        "seconds_to_target": ttt["seconds"] if ttt["reached"] else math.inf,
        "steps": metrics["steps"],
        "epochs_completed": metrics["epochs_completed"],
        "steps_per_epoch": metrics["steps_per_epoch"],
        "train_examples": metrics["train_examples"],
        # SQuAD: questions (the examples above are their windows)
        "train_questions": metrics.get("train_questions", nan),
        "val_questions": metrics.get("val_questions", nan),
        "test_questions": metrics.get("test_questions", nan),
        "doc_stride": s.get("doc_stride", 0) if metrics["dataset"] == "squad" else 0,
        "group_by_length": bool(s.get("group_by_length", False)),
        "val_examples": metrics.get("val_examples", math.nan),
        "test_examples": metrics.get("test_examples", math.nan),
    }


def _cost_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The last rate, the decisions of an uncertainty schedule, time and memory."""
    nan = math.nan
    return {
        "final_lr": metrics["final_lr"][0],
        # decisions of an uncertainty schedule (NaN for fixed schedules)
        "lr_decreases": (metrics.get("lr_decisions") or {}).get("decreases", nan),
        "lr_increases": (metrics.get("lr_decisions") or {}).get("increases", nan),
        "wall_seconds": metrics["wall_seconds"],
        "train_seconds": metrics["train_seconds"],
        "device": metrics["device"],
        "device_name": metrics["device_name"],
        "num_threads": metrics["num_threads"],
        "device_hours": metrics["device_hours"],
        "device_hours_unit": metrics["device_hours_unit"],
        "peak_memory_mb": metrics["peak_memory_mb"],
    }


def _settings_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's settings, the versions and the commit."""
    s = metrics["settings"]
    return {
        "epochs": s["epochs"],
        "batch_size": s["batch_size"],
        "lr": s["lr"],
        "optimizer": s["optimizer"],
        "weight_decay": s["weight_decay"],
        "eval_every_steps": s["eval_every_steps"],
        "train_subset": s["train_subset"],
        "scaling": s["scaling"],
        "reference_epochs": s["reference_epochs"],
        # text tasks (absent from runs of older versions: defaults)
        "test_subset": s.get("test_subset", 0),
        "val_subset": s.get("val_subset", 0),
        "max_length": s.get("max_length", 0),
        "truncation": s.get("truncation", "head"),
        "pretrained": s.get("pretrained", ""),
        "warmup_steps": s.get("warmup_steps", 0),
        "warmup_ratio": s.get("warmup_ratio", 0.0),
        "max_grad_norm": s.get("max_grad_norm", 0.0),
        # the precision the run used (older runs recorded only the settings' choice)
        "precision": metrics.get("precision", s.get("precision", "fp32")),
        "precision_requested": s.get("precision", "fp32"),
        "model_params": json.dumps(s.get("model_params", {}), sort_keys=True),
        "scheduler_params": json.dumps(s["scheduler_params"], sort_keys=True),
        "torch_version": metrics["versions"]["torch"],
        "git_commit": metrics["git_commit"],
    }


def aggregate(metrics_files: Iterable[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the runs' ``metrics.json`` (and the ``history.csv`` beside each).

    Returns:
        ``(runs, history)`` data frames, sorted by task (in the order the files
        were given: the config's), scheduler, seed.

    Raises:
        ResultsError: a file is missing, unreadable, truncated or malformed, or a
            history lacks a column the analysis reads (one line naming the file),
            or no file was given.
    """
    rows, histories = [], []
    for path in map(Path, metrics_files):
        metrics = _read_json(path)
        rows.append(_run_row(path, metrics))
        hist = _read_history(path.with_name("history.csv"), metrics)
        # each evaluation's value of the data set's ranking metric (DataSet.primary_metric)
        hist["val_score"] = hist[f"val_{DATA_SETS[metrics['dataset']].primary_metric}"]
        hist.insert(0, "seed", metrics["seed"])
        hist.insert(0, "scheduler", metrics["scheduler"])
        hist.insert(0, "task", metrics["task"])
        histories.append(hist)
    if not rows:
        raise ResultsError("no run outputs were given to aggregate")
    keys = ["task", "scheduler", "seed"]
    runs = pd.DataFrame(rows)
    _check_consistent(runs, keys)
    task_order = {t: i for i, t in enumerate(runs["task"].unique())}

    def by_task_first(column: pd.Series) -> pd.Series:
        return column.map(task_order) if column.name == "task" else column

    runs = runs.sort_values(keys, kind="stable", key=by_task_first).reset_index(drop=True)
    history = (
        pd.concat(histories, ignore_index=True)
        .sort_values([*keys, "step", "kind"], kind="stable", key=by_task_first)
        .reset_index(drop=True)
    )
    return runs, history


SETTINGS_THAT_MUST_MATCH = (
    "dataset",
    "model",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "weight_decay",
    "eval_every_steps",
    "train_subset",
    "scaling",
    "reference_epochs",
    "test_subset",
    "val_subset",
    "max_length",
    "truncation",
    "doc_stride",
    "group_by_length",
    "pretrained",
    "warmup_steps",
    "warmup_ratio",
    "max_grad_norm",
    "precision",
    "model_params",
    "target_metric",
    "target_value",
)
"""Settings shared by every run of a task: runs that differ in them are not seeds of
one experiment and must not be averaged together."""


def _check_consistent(runs: pd.DataFrame, keys: list[str]) -> None:
    dup = runs[runs.duplicated(keys, keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise ResultsError(
            f"run {first['task']}/{first['scheduler']}/seed{first['seed']} was given "
            f"{int((runs[keys] == first[keys]).all(axis=1).sum())} times; give each run once"
        )
    for task, g in runs.groupby("task"):
        for col in SETTINGS_THAT_MUST_MATCH:
            if g[col].nunique(dropna=False) > 1:
                raise ResultsError(
                    f"runs of task {task!r} differ in {col!r} ({sorted(map(str, g[col].unique()))}): "
                    "they come from different configs; re-run them with one config"
                )


def write_aggregate(metrics_files: Iterable[str | Path], out_dir: str | Path) -> None:
    """Aggregate and write ``runs.csv``, ``history.csv``, ``comparison.csv``
    (:func:`uncertainty_lr_study.analysis.comparison.comparison`) and
    ``signal_levels.csv`` (:func:`signal_levels`) into ``out_dir``."""
    runs, history = aggregate(metrics_files)
    atomic_write_csv(Path(out_dir) / "runs.csv", runs)
    atomic_write_csv(Path(out_dir) / "history.csv", history)
    atomic_write_csv(Path(out_dir) / "comparison.csv", comparison(runs))
    atomic_write_csv(Path(out_dir) / "signal_levels.csv", signal_levels(runs, history))


SIGNAL_THRESHOLDS = {"grad_norm": "uncertainty-gradnorm", "predictive_variance": "uncertainty-variance"}
"""Each logged signal and the uncertainty schedule that decides on it."""


def recorded_threshold(runs: pd.DataFrame, scheduler: str, task: str | None = None) -> float:
    """The threshold ``scheduler`` ran with: the config's override as its first run
    (of ``task``, if given) in ``runs`` recorded it, else its registry default.

    Args:
        runs: the aggregate's ``runs.csv`` (``scheduler_params`` as JSON).
        scheduler: an uncertainty schedule with a ``threshold``.
        task: only its runs of this task.
    """
    from uncertainty_lr_study.registry import SCHEDULERS  # noqa: PLC0415

    threshold = SCHEDULERS[scheduler].defaults["threshold"]
    own = runs[runs["scheduler"] == scheduler]
    if task is not None:
        own = own[own["task"] == task]
    if len(own):
        threshold = json.loads(own.iloc[0]["scheduler_params"]).get("threshold", threshold)
    return threshold


def signal_levels(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """How each task's signals sit against the uncertainty schedules' thresholds.

    For every task and signal, over the evaluation windows of all its runs (every
    arm logs both signals) after step 0: the number of windows, the median window
    mean of the signal, and the fraction of windows whose mean exceeds the
    threshold of the schedule that decides on it (its registry default, or the
    config's override as recorded by that schedule's runs). Near 1, the rule only
    ever lowers the rate (a decay); near 0, it only raises it, up to its cap (a
    constant rate): the threshold then does not transfer to the task.

    Returns:
        Columns ``task``, ``signal``, ``scheduler``, ``threshold``, ``windows``,
        ``median``, ``fraction_above``.
    """
    rows = []
    evals = history[(history["kind"] == "eval") & (history["step"] > 0)]
    for task, g in evals.groupby("task", sort=False):
        for signal, sched in SIGNAL_THRESHOLDS.items():
            threshold = recorded_threshold(runs, sched, task)
            values = g[signal].dropna().to_numpy(float) if signal in g else []
            rows.append(
                {
                    "task": task,
                    "signal": signal,
                    "scheduler": sched,
                    "threshold": float(threshold),
                    "windows": len(values),
                    "median": float(pd.Series(values).median()) if len(values) else math.nan,
                    "fraction_above": float((values > threshold).mean()) if len(values) else math.nan,
                }
            )
    return pd.DataFrame(rows)


def aggregate_sensitivity(metrics_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run of the sensitivity sweep (``runs.csv``'s columns), plus
    ``label`` (its folder, :func:`uncertainty_lr_study.config.sweep_label`), ``setting``
    (the swept parameter, prefixed by fixed values, e.g. ``rel-threshold``) and
    ``value``. Empty (with those columns) when there is no sweep.

    Raises:
        ResultsError: a missing, unreadable or malformed ``metrics.json`` (named).
    """
    rows = []
    for path in map(Path, metrics_files):
        metrics = _read_json(path)
        row = _run_row(path, metrics)
        label = path.parent.parent.name
        setting, _, value = label.rpartition("_")
        rows.append({**row, "label": label, "setting": setting, "value": float(value)})
    columns = ["task", "scheduler", "label", "setting", "value", "seed"]
    if not rows:
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame(rows)
    return out.sort_values(["scheduler", "setting", "value", "seed"], kind="stable").reset_index(
        drop=True
    )
