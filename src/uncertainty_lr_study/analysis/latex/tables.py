"""The paper's generated tables: the main comparison (:func:`comparison_tex`), the
per-run results (:func:`results_table`), the setup as it was run
(:func:`setup_tex`, with its macros) and the sensitivity sweep
(:func:`sensitivity_tex`)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from uncertainty_lr_study.analysis.latex.escape import (
    _count,
    _num,
    _pct,
    _pct_text,
    _with_ci,
    macro_name,
    tex_escape,
)
from uncertainty_lr_study.registry import SCHEDULERS, registry_order
from uncertainty_lr_study.tasks import HF_MODELS

BASELINES = tuple(n for n, spec in SCHEDULERS.items() if spec.family == "baseline")
"""The fixed schedules: the best of them (by the mean of the task's ranking metric,
test accuracy or, on SQuAD, F1: ``tasks.DataSet.primary_metric``) is the comparison for
each adaptive schedule."""


METRIC_WORDS = {"accuracy": "test accuracy", "f1": "test F1", "exact_match": "test exact match"}


ADAPTIVE = tuple(n for n, spec in SCHEDULERS.items() if spec.family == "uncertainty")


def _headline(g: pd.DataFrame, metric: str) -> str:
    """Column of the reported precision / recall / F1: the positive class's for a
    binary task (IMDB), else the macro average (MNIST)."""
    binary = f"test_{metric}"
    if binary in g and g[binary].notna().any():
        return binary
    return f"test_{metric}_macro"


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task and scheduler: means, standard deviations (ddof=1; 0 for one seed),
    medians of time-to-target (inf when the median run misses), counts."""
    rows = []
    for (task, sched), g in runs.groupby(["task", "scheduler"], sort=False):
        # over the runs that have the value (a diverged run has no test metrics):
        # NaN where fewer than two do, and _pct then shows the mean alone
        std = lambda c: float(g[c].std(ddof=1)) if len(g) > 1 else 0.0  # noqa: E731
        rows.append(
            {
                "task": task,
                "scheduler": sched,
                "n_seeds": len(g),
                "n_reached": int(g["target_reached"].sum()),
                "n_completed": int((g["status"] == "completed").sum()),
                "acc_mean": float(g["test_accuracy"].mean()),
                "acc_std": std("test_accuracy"),
                "em_mean": float(g["test_exact_match"].mean()),
                "em_std": std("test_exact_match"),
                "score_metric": g["score_metric"].iloc[0],
                "score_mean": float(g["test_score"].mean()),
                "score_std": std("test_score"),
                "f1_mean": float(g["test_f1_macro"].mean()),
                "f1_std": std("test_f1_macro"),
                **{
                    f"{m}_{stat}": value
                    for m in ("precision", "recall", "f1")
                    for stat, value in (
                        ("headline_mean", float(g[_headline(g, m)].mean())),
                        ("headline_std", std(_headline(g, m))),
                    )
                },
                "epochs_to_target_median": float(np.median(g["epochs_to_target"].to_numpy(float))),
                "seconds_to_target_median": float(
                    np.median(g["seconds_to_target"].to_numpy(float))
                ),
                "device_hours_sum": float(g["device_hours"].sum()),
                "decreases_mean": float(g["lr_decreases"].mean()),
                "increases_mean": float(g["lr_increases"].mean()),
                "epochs": float(g["epochs"].mean()),
                "train_seconds_mean": float(g["train_seconds"].mean()),
            }
        )
    out = pd.DataFrame(rows)
    # tasks in the order of the runs (the config's), schedulers in the registry's
    out["task_order"] = out["task"].map({t: i for i, t in enumerate(runs["task"].unique())})
    out["order"] = out["scheduler"].map({s: i for i, s in enumerate(registry_order(out["scheduler"]))})
    return (
        out.sort_values(["task_order", "order"])
        .drop(columns=["task_order", "order"])
        .reset_index(drop=True)
    )


def results_table(runs: pd.DataFrame) -> str:
    """The main results table (booktabs), one block of rows per task."""
    lines = [
        r"\begin{tabular}{llcccccccc}",
        r"\toprule",
        r"task & schedule & accuracy / EM (\%) & precision (\%) & recall (\%) & F1 (\%) "
        r"& epochs to target & seconds to target & reached & device-hours \\",
        r"\midrule",
    ]
    summary = summarise(runs)
    for i, (task, block) in enumerate(summary.groupby("task", sort=False)):
        if i:
            lines.append(r"\midrule")
        unit = runs.loc[runs["task"] == task, "device_hours_unit"].iloc[0]
        unit = {"cpu-core-hours": "core-h", "gpu-hours": "GPU-h"}.get(unit, unit)
        for j, r in enumerate(block.itertuples()):
            ep = (
                "not reached"
                if math.isinf(r.epochs_to_target_median)
                else f"{r.epochs_to_target_median:.2f}"
            )
            sec = (
                "not reached"
                if math.isinf(r.seconds_to_target_median)
                else f"{r.seconds_to_target_median:.0f}"
            )
            lines.append(
                f"{tex_escape(task) if j == 0 else ''} & \\texttt{{{tex_escape(r.scheduler)}}} & "
                f"{_accuracy_or_em(r)} & "
                f"{_pct(r.precision_headline_mean, r.precision_headline_std, r.n_seeds)} & "
                f"{_pct(r.recall_headline_mean, r.recall_headline_std, r.n_seeds)} & "
                f"{_pct(r.f1_headline_mean, r.f1_headline_std, r.n_seeds)} & "
                f"{ep} & {sec} & "
                f"{r.n_reached}/{r.n_seeds}{_diverged(r)} & "
                f"{r.device_hours_sum:.3f}\\,{tex_escape(unit)} \\\\"
            )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def _accuracy_or_em(r: Any) -> str:
    """Accuracy of a classification task, exact match of a QA task (SQuAD);
    ``diverged`` where every run of the row diverged."""
    if r.n_completed == 0:
        return "diverged"
    if math.isnan(r.acc_mean) and not math.isnan(r.em_mean):
        return _pct(r.em_mean, r.em_std, r.n_seeds)
    return _pct(r.acc_mean, r.acc_std, r.n_seeds)


def _diverged(r: Any) -> str:
    """``" (1 diverged)"`` when runs of a row diverged: their test metrics are missing,
    the means are over the completed runs, and they count as not reaching the target."""
    n = r.n_seeds - r.n_completed
    return f" (diverged on {n} of {r.n_seeds})" if n else ""


def _warmup(r: pd.Series) -> str:
    if r["warmup_steps"]:
        return f"linear, {int(r['warmup_steps'])} optimizer steps"
    return f"linear, {r['warmup_ratio']:g} of the run's optimizer steps"


def decision_interval_text(r: pd.Series) -> str:
    """When an uncertainty schedule decides in a run: per epoch (plain backend) or
    per evaluation interval (Trainer backend)."""
    if r["model"] in HF_MODELS and r["eval_every_steps"]:
        return f"every {int(r['eval_every_steps'])} optimizer steps"
    return "at the end of every epoch"


def schedules_by_seeds(task_runs: pd.DataFrame) -> list[tuple[str, str]]:
    """Setup-table rows naming the schedules of one task by the seeds they ran on.

    A reduced grid (peers and controls on fewer seeds than the study's schedules,
    ``peer_seeds``) shows as one row per set of seeds, the largest set first, e.g.
    ``("schedules, seeds 0, 1, 2", "constant, ...")`` and
    ``("schedules, seed 0 only", "warmup-linear, ...")``; one row ``("schedules",
    ...)`` when every schedule ran on every seed.

    Args:
        task_runs: the runs table of one task (columns ``scheduler``, ``seed``).
    """
    groups: dict[tuple[int, ...], list[str]] = {}
    for scheduler, g in task_runs.groupby("scheduler"):
        groups.setdefault(tuple(sorted(int(x) for x in g["seed"].unique())), []).append(scheduler)
    if len(groups) == 1:
        return [("schedules", ", ".join(registry_order(next(iter(groups.values())))))]
    rows = []
    for seeds, names in sorted(groups.items(), key=lambda kv: (-len(kv[0]), kv[0])):
        label = f"seed {seeds[0]} only" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))
        rows.append((f"schedules, {label}", ", ".join(registry_order(names))))
    return rows


def setup_tex(runs: pd.DataFrame) -> tuple[str, str]:
    """Setup table and its macros ``(table, macros)``, from the settings the runs
    recorded: per task its data items (:func:`_data_items`), its training items
    (:func:`_training_items`) and macros (:func:`_task_macros`); then the macros of
    the uncertainty schedules' hyperparameters (:func:`_schedule_macros`)."""
    lines = [r"\begin{tabular}{ll}", r"\toprule", r"setting & value \\", r"\midrule"]
    macros = []
    for task, g in runs.groupby("task", sort=False):
        r = g.iloc[0]
        seeds = sorted(g["seed"].unique())
        items = _data_items(task, r) + _training_items(r, g, seeds)
        lines += [f"{tex_escape(k)} & {tex_escape(v)} \\\\" for k, v in items]
        lines.append(r"\midrule")
        macros += _task_macros(task, r, len(seeds))
    lines[-1] = r"\bottomrule"
    lines += [r"\end{tabular}", ""]
    return "\n".join(lines), "\n".join(macros + _schedule_macros(runs)) + "\n"


def _data_items(task: str, r: pd.Series) -> list[tuple[str, str]]:
    """Setup-table rows of a task's data and model (``r``: one of its runs)."""
    model = r["model"]
    if model == "transformer":
        model = f"transformer, pretrained {r['pretrained']}"
    elif r["model_params"] not in ("{}", ""):
        params = json.loads(r["model_params"])
        model += " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in params.items()) + ")"
    task_item = ("task", f"{task} ({r['dataset']}, {model})")
    if r["dataset"] == "squad":
        return [
            task_item,
            (
                "training examples",
                f"{int(r['train_examples']):,} windows of {int(r['train_questions']):,} questions",
            ),
            (
                "validation / test questions",
                f"{_count(r['val_questions'])} / {_count(r['test_questions'])} "
                "(validation: held-out training articles; test: SQuAD v1.1 dev)",
            ),
            (
                "input",
                f"question + context windows of {int(r['max_length'])} tokens, "
                f"stride {int(r['doc_stride'])}; answers: n-best 20, at most 30 tokens",
            ),
        ]
    items = [
        task_item,
        ("training examples", f"{int(r['train_examples']):,}"),
        (
            "validation / test examples",
            f"{_count(r['val_examples'])} / {_count(r['test_examples'])}",
        ),
    ]
    if r["max_length"]:
        items.append(("input", f"{int(r['max_length'])} tokens, truncation {r['truncation']}"))
    return items


def _training_items(r: pd.Series, g: pd.DataFrame, seeds: list) -> list[tuple[str, str]]:
    """Setup-table rows of how a task trained (``r``: one of its runs, ``g``: all)."""
    return [
        (
            "optimizer",
            f"{r['optimizer']}, learning rate {r['lr']:g}, weight decay {r['weight_decay']:g}"
            + (f", gradient clipping at norm {r['max_grad_norm']:g}" if r["max_grad_norm"] else ""),
        ),
        (
            "batch size",
            f"{int(r['batch_size'])}"
            + (", length-grouped batches" if r.get("group_by_length", False) else ""),
        ),
        ("epochs", f"{int(r['epochs'])} ({int(r['steps_per_epoch'])} optimizer steps each)"),
        (
            "validation",
            "every epoch" if not r["eval_every_steps"] else f"every {int(r['eval_every_steps'])} steps",
        ),
        ("target", f"{r['target_metric'].replace('_', ' ')} {r['target_value']:g}"),
        *([("warmup", _warmup(r))] if r["warmup_steps"] or r["warmup_ratio"] else []),
        (  # the precision used (metrics.json); auto: bfloat16 where the device has it
            "precision",
            ("bfloat16 autocast" if r["precision"] == "bf16" else "float32")
            + (", chosen by the hardware (auto)" if r.get("precision_requested") == "auto" else ""),
        ),
        ("schedule times", f"{r['scaling']} (reference run {int(r['reference_epochs'])} epochs)"),
        ("seeds", ", ".join(map(str, seeds))),
        *schedules_by_seeds(g),
        (
            "device",
            f"{r['device']} ({r['num_threads']} thread(s) per run), torch {r['torch_version']}",
        ),
    ]


def _task_macros(task: str, r: pd.Series, n_seeds: int) -> list[str]:
    """The macros the paper's text takes a task's settings from."""
    target = (
        f"{100 * r['target_value']:g}\\%" if r["target_metric"] != "val_loss"
        else f"{r['target_value']:g}"
    )
    return [
        f"\\newcommand{{{macro_name(task, 'epochs')}}}{{{int(r['epochs'])}}}",
        f"\\newcommand{{{macro_name(task, 'num seeds')}}}{{{n_seeds}}}",
        f"\\newcommand{{{macro_name(task, 'batch size')}}}{{{int(r['batch_size'])}}}",
        f"\\newcommand{{{macro_name(task, 'lr')}}}{{{r['lr']:g}}}",
        f"\\newcommand{{{macro_name(task, 'train examples')}}}{{{int(r['train_examples']):,}}}",
        f"\\newcommand{{{macro_name(task, 'target')}}}{{{target}}}",
    ]


def _schedule_macros(runs: pd.DataFrame) -> list[str]:
    """The uncertainty schedules' hyperparameters as run (registry defaults and the
    config's overrides), one macro each."""
    macros = []
    for sched in ADAPTIVE:
        g = runs[runs["scheduler"] == sched]
        hp = dict(SCHEDULERS[sched].defaults)
        if len(g):
            hp.update(json.loads(g.iloc[0]["scheduler_params"]))
        for key, value in hp.items():
            text = f"{value:g}" if isinstance(value, (int, float)) else tex_escape(str(value))
            macros.append(f"\\newcommand{{{macro_name(sched, key)}}}{{{text}}}")
    return macros


def sensitivity_tex(
    sensitivity: pd.DataFrame | None, signal_levels: pd.DataFrame | None
) -> str:
    """The sensitivity and threshold-transfer paragraphs, from the sweep's runs and
    the signal levels of every task (:func:`~uncertainty_lr_study.analysis.aggregate.signal_levels`)."""
    parts = []
    if sensitivity is not None and not sensitivity.empty:
        task = sensitivity["task"].iloc[0]
        epochs = int(sensitivity["epochs"].iloc[0])
        seeds = sensitivity["seed"].nunique()
        text = [
            f"\\paragraph{{Sensitivity.}} On {tex_escape(task)} ({epochs} epochs, "
            f"{seeds} seed(s) per value), the sweeps of Figure~\\ref{{fig:sensitivity}} gave:"
        ]
        for (sched, setting), g in sensitivity.groupby(["scheduler", "setting"], sort=False):
            med = g.groupby("value")["test_score"].median()
            param = setting.split("-")[-1]
            default = SCHEDULERS[sched].defaults.get(param)
            at_default = (
                f"; the study's value {default:g} gave {_pct_text(med.loc[default])}"
                if default is not None and "rel" not in setting and default in med.index
                else ""
            )
            reached = g.groupby("value")["target_reached"].mean()
            cuts = g["lr_decreases"]
            text.append(
                f"\\texttt{{{tex_escape(sched)}}} with {tex_escape(setting.replace('_', ' '))} "
                f"from {med.index.min():g} to {med.index.max():g}: median test score "
                f"{_pct_text(med.min())} to {_pct_text(med.max())}{at_default}, "
                f"{cuts.min():.0f} to {cuts.max():.0f} learning-rate decreases per run, the "
                f"target reached at {int((reached > 0.5).sum())} of {len(reached)} values."
            )
        parts.append(" ".join(text))
    if signal_levels is not None and not signal_levels.empty:
        text = [
            "\\paragraph{Do the thresholds transfer?} Over the evaluation windows of every "
            "run of a task (each arm logs both signals), the fraction of windows whose mean "
            "signal exceeded the study's threshold was:"
        ]
        items = []
        for r in signal_levels.itertuples():
            if not r.windows:
                continue
            items.append(
                f"{tex_escape(r.task)}, {tex_escape(str(r.signal).replace('_', ' '))} (threshold {r.threshold:g}, "
                f"median {r.median:.3g}): {100 * r.fraction_above:.0f}\\%"
            )
        text.append("; ".join(items) + ".")
        text.append(
            "A fraction near 100\\% means the rule lowers the rate at nearly every "
            "decision (an exponential decay by the factor, down to its floor); near 0\\% "
            "it raises the rate to its cap and keeps it there (a constant rate). Only in "
            "between does the signal choose; where one absolute threshold falls on "
            "different sides of the signal on different tasks, it does not transfer."
        )
        parts.append(" ".join(text))
    return "\n\n".join(parts) + "\n"


def comparison_tex(table: pd.DataFrame) -> str:
    """The paper's main table (booktabs) from :func:`comparison`: one block per task."""
    lines = [
        r"\begin{tabular}{lllcccccc}",
        r"\toprule",
        r"task & method & family & test score (\%) & steps to target & epochs & speed-up "
        r"& $P(\text{faster})$ & $P(\text{higher score})$ \\",
        r"\midrule",
    ]
    for i, (task, block) in enumerate(table.groupby("task", sort=False)):
        if i:
            lines.append(r"\midrule")
        for j, r in enumerate(block.itertuples()):
            ref = " (ref.)" if r.scheduler == r.time_baseline else ""
            steps = _with_ci(r.steps_median, r.steps_low, r.steps_high, ".0f")
            lines.append(
                f"{tex_escape(task) if j == 0 else ''} & \\texttt{{{tex_escape(r.scheduler)}}}{ref} & "
                f"{tex_escape(r.family)} & {_with_ci(r.score_median, r.score_low, r.score_high, '.2f', 100)} & "
                f"{steps} ({r.n_reached}/{r.n_seeds}) & {_num(r.epochs_median, '.2f')} & "
                f"{_num(r.speedup, '.2f')} & "
                f"{_with_ci(r.p_faster, r.p_faster_low, r.p_faster_high, '.2f')} & "
                f"{_with_ci(r.p_better, r.p_better_low, r.p_better_high, '.2f')} \\\\"
            )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)
