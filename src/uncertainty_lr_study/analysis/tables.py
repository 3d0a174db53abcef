"""LaTeX tables and macros for the paper, generated from the aggregate tables.

Writes into the paper's ``generated/`` folder:

- ``comparison_table.tex``: the main table: per task and method, the median test
  score and steps to target with bootstrap intervals, speed-up and paired
  probability of improvement against the best baselines
  (:mod:`uncertainty_lr_study.analysis.comparison`).
- ``results_table.tex``: per task and scheduler, test accuracy (SQuAD: exact
  match), precision, recall and F1 (mean +- standard deviation over seeds), epochs and seconds to the validation
  target (median over seeds; a run that misses the target counts as infinite),
  and device-hours (sum over seeds).
- ``setup.tex``: the experimental setup as it was run (from the runs' recorded
  settings), as a table (its macros go to ``numbers.tex``).
- ``numbers.tex``: every number the paper's text uses, as ``\\newcommand`` macros.
- ``findings.tex``: the results paragraph, worded from the measured numbers.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uncertainty_lr_study.analysis.stats import CONFIDENCE
from uncertainty_lr_study.io import atomic_write_text
from uncertainty_lr_study.registry import SCHEDULERS, registry_order
from uncertainty_lr_study.tasks import HF_MODELS

BASELINES = tuple(n for n, spec in SCHEDULERS.items() if spec.family == "baseline")
"""The fixed schedules: the best of them (by the mean of the task's ranking metric,
test accuracy or, on SQuAD, F1: ``tasks.PRIMARY_METRIC``) is the comparison for
each adaptive schedule."""
METRIC_WORDS = {"accuracy": "test accuracy", "f1": "test F1", "exact_match": "test exact match"}
ADAPTIVE = tuple(n for n, spec in SCHEDULERS.items() if spec.family == "uncertainty")


def macro_name(*parts: str) -> str:
    """CamelCase LaTeX macro name from parts: ``("mnist", "step", "acc")`` ->
    ``\\MnistStepAcc`` (digits spelled out, since macro names take letters only)."""
    digits = "Zero One Two Three Four Five Six Seven Eight Nine".split()
    words = []
    for part in parts:
        part = re.sub(r"\d", lambda m: digits[int(m.group())], str(part))
        words += [w.capitalize() for w in re.split(r"[^A-Za-z]+", part) if w]
    return "\\" + "".join(words)


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def tex_escape(text: str) -> str:
    """Plain text as LaTeX source that prints it, and nothing else.

    Every character TeX gives a meaning (``\\ { } $ & # ^ _ % ~``, and ``< > |``,
    which T1 prints otherwise as other glyphs) becomes a macro or an escaped
    character, so no input can start a command (``\\input``), a group, math mode or
    a comment. Control characters (newlines, tabs) become spaces; other non-ASCII
    characters become their ASCII letters where Unicode decomposes them (``e`` for
    ``é``) and ``?`` elsewhere, since pdfLaTeX stops on a character it has no glyph
    for. Every config string that reaches the paper goes through here.

    Args:
        text: any string (e.g. the config's ``paper.config_name``).

    Returns:
        LaTeX source for text mode.
    """
    out = []
    for char in str(text):
        if char in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[char])
        elif char.isascii():
            out.append(char if char.isprintable() else " ")
        else:
            ascii_form = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(tex_escape(ascii_form) if ascii_form.isprintable() and ascii_form else "?")
    return "".join(out)


def _pct(mean: float, std: float, n: int) -> str:
    """Mean +- standard deviation in percent; the mean alone for a single seed or
    where no standard deviation exists (one completed run of several); ``--`` where
    no run completed (a diverged run has no test metrics)."""
    if not math.isfinite(mean):
        return "--"
    if n < 2 or not math.isfinite(std):
        return f"${100 * mean:.2f}$"
    return f"${100 * mean:.2f} \\pm {100 * std:.2f}$"


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


def _count(value: float) -> str:
    return "--" if pd.isna(value) else f"{int(value):,}"


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
    recorded."""
    lines = [r"\begin{tabular}{ll}", r"\toprule", r"setting & value \\", r"\midrule"]
    macros = []
    for task, g in runs.groupby("task", sort=False):
        r = g.iloc[0]
        seeds = sorted(g["seed"].unique())
        model = r["model"]
        if model == "transformer":
            model = f"transformer, pretrained {r['pretrained']}"
        elif r["model_params"] not in ("{}", ""):
            params = json.loads(r["model_params"])
            model += " (" + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in params.items()) + ")"
        items = [
            ("task", f"{task} ({r['dataset']}, {model})"),
            ("training examples", f"{int(r['train_examples']):,}"),
            (
                "validation / test examples",
                f"{_count(r['val_examples'])} / {_count(r['test_examples'])}",
            ),
        ]
        if r["dataset"] == "squad":
            items[1] = (
                "training examples",
                f"{int(r['train_examples']):,} windows of {int(r['train_questions']):,} questions",
            )
            items[2] = (
                "validation / test questions",
                f"{_count(r['val_questions'])} / {_count(r['test_questions'])} "
                "(validation: held-out training articles; test: SQuAD v1.1 dev)",
            )
            items.append(
                (
                    "input",
                    f"question + context windows of {int(r['max_length'])} tokens, "
                    f"stride {int(r['doc_stride'])}; answers: n-best 20, at most 30 tokens",
                )
            )
        elif r["max_length"]:
            items.append(
                ("input", f"{int(r['max_length'])} tokens, truncation {r['truncation']}")
            )
        items += [
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
                "every epoch"
                if not r["eval_every_steps"]
                else f"every {int(r['eval_every_steps'])} steps",
            ),
            ("target", f"{r['target_metric'].replace('_', ' ')} {r['target_value']:g}"),
            *(
                [("warmup", _warmup(r))]
                if r["warmup_steps"] or r["warmup_ratio"]
                else []
            ),
            (  # the precision used (metrics.json); auto: bfloat16 where the device has it
                "precision",
                ("bfloat16 autocast" if r["precision"] == "bf16" else "float32")
                + (
                    ", chosen by the hardware (auto)"
                    if r.get("precision_requested") == "auto"
                    else ""
                ),
            ),
            (
                "schedule times",
                f"{r['scaling']} (reference run {int(r['reference_epochs'])} epochs)",
            ),
            ("seeds", ", ".join(map(str, seeds))),
            *schedules_by_seeds(g),
            (
                "device",
                f"{r['device']} ({r['num_threads']} thread(s) per run), torch {r['torch_version']}",
            ),
        ]
        lines += [f"{tex_escape(k)} & {tex_escape(v)} \\\\" for k, v in items]
        lines.append(r"\midrule")
        macros += [
            f"\\newcommand{{{macro_name(task, 'epochs')}}}{{{int(r['epochs'])}}}",
            f"\\newcommand{{{macro_name(task, 'num seeds')}}}{{{len(seeds)}}}",
            f"\\newcommand{{{macro_name(task, 'batch size')}}}{{{int(r['batch_size'])}}}",
            f"\\newcommand{{{macro_name(task, 'lr')}}}{{{r['lr']:g}}}",
            f"\\newcommand{{{macro_name(task, 'train examples')}}}{{{int(r['train_examples']):,}}}",
            f"\\newcommand{{{macro_name(task, 'target')}}}{{{100 * r['target_value']:g}\\%}}"
            if r["target_metric"] != "val_loss"
            else f"\\newcommand{{{macro_name(task, 'target')}}}{{{r['target_value']:g}}}",
        ]
    lines[-1] = r"\bottomrule"
    lines += [r"\end{tabular}", ""]
    # The uncertainty schedulers' hyperparameters, as run (registry defaults + overrides).
    for sched in ADAPTIVE:
        g = runs[runs["scheduler"] == sched]
        hp = dict(SCHEDULERS[sched].defaults)
        if len(g):
            hp.update(json.loads(g.iloc[0]["scheduler_params"]))
        for key, value in hp.items():
            text = f"{value:g}" if isinstance(value, (int, float)) else tex_escape(str(value))
            macros.append(f"\\newcommand{{{macro_name(sched, key)}}}{{{text}}}")
    return "\n".join(lines), "\n".join(macros) + "\n"


def _same_trajectory(runs: pd.DataFrame, task: str, a: str, b: str) -> bool:
    """Whether two schedules' runs of a task agree seed by seed in the test score,
    final learning rate and decision counts (i.e. took the same decisions)."""
    cols = ["seed", "test_score", "final_lr", "lr_decreases", "lr_increases"]
    ra = runs[(runs["task"] == task) & (runs["scheduler"] == a)][cols].sort_values("seed")
    rb = runs[(runs["task"] == task) & (runs["scheduler"] == b)][cols].sort_values("seed")
    return len(ra) == len(rb) and ra.reset_index(drop=True).equals(rb.reset_index(drop=True))


def numbers_and_findings(runs: pd.DataFrame, config_name: str = "") -> tuple[str, str]:
    """Macros of the headline numbers and the results paragraph built from them.

    Every sentence states a comparison as measured: each adaptive schedule against
    the best fixed baseline (by the mean of the task's ranking metric: test accuracy,
    or F1 on SQuAD), and epochs to target.
    """
    summary = summarise(runs)
    macros = [
        f"\\newcommand{{\\ConfigName}}{{{tex_escape(config_name) or 'unnamed'}}}",
        f"\\newcommand{{\\NumRuns}}{{{len(runs)}}}",
        f"\\newcommand{{\\TotalDeviceHours}}{{{runs['device_hours'].sum():.2f}}}",
        f"\\newcommand{{\\ConfidenceLevel}}{{{100 * CONFIDENCE:g}\\%}}",
    ]
    paragraphs = []
    for task, block in summary.groupby("task", sort=False):
        block = block.set_index("scheduler")
        for sched, r in block.iterrows():
            macros += [
                f"\\newcommand{{{macro_name(task, sched, 'acc')}}}{{{_percent_or_dash(r.acc_mean)}}}",
                f"\\newcommand{{{macro_name(task, sched, 'f one')}}}{{{_percent_or_dash(r.f1_mean)}}}",
                f"\\newcommand{{{macro_name(task, sched, 'score')}}}"
                f"{{{_percent_or_dash(r.score_mean)}}}",
            ]
        metric = METRIC_WORDS.get(block["score_metric"].iloc[0], "test score")
        scored = block[block["score_mean"].notna()]  # schedules with a completed run
        if len(scored):
            best = scored["score_mean"].idxmax()
            text = [
                f"On {tex_escape(task)}, the highest mean {metric} over "
                f"{int(block['n_seeds'].max())} seed(s) was reached by "
                f"\\texttt{{{tex_escape(best)}}} (${100 * block.loc[best, 'score_mean']:.2f}\\%$)."
            ]
        else:
            text = [f"On {tex_escape(task)}, no run completed."]
        base = [b for b in BASELINES if b in scored.index]
        adapt = [a for a in ADAPTIVE if a in scored.index]
        if base and adapt:
            b = scored.loc[base, "score_mean"].idxmax()
            for a in adapt:
                diff = 100 * (block.loc[a, "score_mean"] - block.loc[b, "score_mean"])
                pooled = 100 * math.hypot(block.loc[a, "score_std"], block.loc[b, "score_std"])
                acc_a, acc_b = 100 * block.loc[a, "score_mean"], 100 * block.loc[b, "score_mean"]
                note = ""
                if min(block.loc[a, "n_completed"], block.loc[b, "n_completed"]) < 2:
                    relation = f"{abs(diff):.2f} points {'above' if diff > 0 else 'below'}"
                    note = " (a single seed: no estimate of seed-to-seed variation)"
                elif abs(diff) <= pooled:
                    relation = f"within one pooled standard deviation ({pooled:.2f} points) of"
                else:
                    relation = f"{abs(diff):.2f} points {'above' if diff > 0 else 'below'}"
                ea, eb = (
                    block.loc[a, "epochs_to_target_median"],
                    block.loc[b, "epochs_to_target_median"],
                )
                speed = (
                    f"it reached the validation target in a median of {ea:.2f} epochs against "
                    f"{eb:.2f} for \\texttt{{{tex_escape(b)}}}"
                    if math.isfinite(ea) and math.isfinite(eb)
                    else f"its median run {'did not reach' if math.isinf(ea) else 'reached'} the "
                    f"validation target ({int(block.loc[a, 'n_reached'])} of "
                    f"{int(block.loc[a, 'n_seeds'])} seeds did), against "
                    f"{int(block.loc[b, 'n_reached'])} of {int(block.loc[b, 'n_seeds'])} for "
                    f"\\texttt{{{tex_escape(b)}}}"
                )
                r = block.loc[a]
                first = runs[(runs["task"] == task) & (runs["scheduler"] == a)].iloc[0]
                decisions = (
                    f" Deciding {decision_interval_text(first)}, it lowered the learning rate "
                    f"{r.decreases_mean:.1f} times and raised it {r.increases_mean:.1f} times "
                    "per run (mean over seeds; at a bound the rate stays)."
                )
                text.append(
                    f"\\texttt{{{tex_escape(a)}}} reached a {metric} of ${acc_a:.2f}\\%$, "
                    f"{relation} the best "
                    f"fixed baseline \\texttt{{{tex_escape(b)}}} (${acc_b:.2f}\\%$){note}; {speed}."
                    + decisions
                )
        if all(a in block.index for a in ADAPTIVE) and _same_trajectory(runs, task, *ADAPTIVE):
            text.append(
                f"The two uncertainty schedules took the same decisions in every run on "
                f"{tex_escape(task)}, so they trained identically: with these thresholds the "
                "choice of signal made no difference."
            )
        diverged = runs[(runs["task"] == task) & (runs["status"] != "completed")]
        if len(diverged):
            names = ", ".join(
                f"\\texttt{{{tex_escape(r.scheduler)}}} (seed {r.seed})"
                for r in diverged.itertuples()
            )
            text.append(
                f"{len(diverged)} run(s) on {tex_escape(task)} diverged (a non-finite loss or "
                f"gradient stopped them): {names}. They count as not reaching the target; "
                "their test metrics are missing, and the means above are over the completed runs."
            )
        paragraphs.append(" ".join(text))
    return "\n".join(macros) + "\n", "\n\n".join(paragraphs) + "\n"


def _percent_or_dash(value: float) -> str:
    """A fraction as a percentage with two decimals; ``--`` where it does not exist
    (every run diverged), never ``nan``."""
    return f"{100 * value:.2f}" if math.isfinite(value) else "--"


def _pct_text(value: float) -> str:
    return "--" if math.isnan(value) else f"${100 * value:.2f}\\%$"


def ranking_text(table: pd.DataFrame) -> str:
    """Per task with more than the study's schedules: the best method by median
    test score, the fastest to the target, and where each uncertainty schedule
    ranks among all methods run on the task (from the comparison table)."""
    sentences = []
    for task, block in table.groupby("task", sort=False):
        if not (block["family"].isin(["peer", "control"])).any():
            continue
        scored = block.dropna(subset=["score_median"]).sort_values(
            "score_median", ascending=False, kind="stable"
        )
        if scored.empty:
            continue
        best = scored.iloc[0]
        text = (
            f"Over all {len(block)} methods run on {tex_escape(task)}, the highest median "
            f"test score was \\texttt{{{tex_escape(best.scheduler)}}}'s "
            f"({_pct_text(best.score_median)}, {tex_escape(best.family)})"
        )
        least = block["steps_median"].min()
        if math.isfinite(least):
            tied = block[block["steps_median"] == least]
            names = ", ".join(
                f"\\texttt{{{tex_escape(r.scheduler)}}} ({tex_escape(r.family)})" for r in tied.itertuples()
            )
            text += f"; the fewest median steps to the target ({least:.0f}) were taken by {names}"
        else:
            text += "; no method's median run reached the target"
        ranks = [
            f"\\texttt{{{tex_escape(r.scheduler)}}} ranked "
            f"{list(scored['scheduler']).index(r.scheduler) + 1} of {len(scored)}"
            for r in scored.itertuples()
            if r.family == "uncertainty"
        ]
        sentences.append(text + ("; by test score, " + ", ".join(ranks) if ranks else "") + ".")
    if not sentences:
        return ""
    return "\\paragraph{Against the peers.} " + " ".join(sentences) + "\n"


def _medians(g: pd.DataFrame) -> tuple[float, float]:
    """Median test score and median steps to target (``inf``: missed) of some runs."""
    return (
        float(np.median(g["test_score"].to_numpy(float))),
        float(np.median(g["steps_to_target"].to_numpy(float))),
    )


def _paired_summary(g: pd.DataFrame) -> str:
    """Median test score and steps to target of some runs, as text."""
    score, steps = _medians(g)
    reached = "missed the target" if math.isinf(steps) else f"{steps:.0f} steps to target"
    return f"{_pct_text(score)} and {reached}"


def control_verdict(control: pd.DataFrame, source: pd.DataFrame) -> str:
    """What a control says about its uncertainty schedule, from their runs on the
    same seeds: ``"same"`` (equal median score and steps to target), ``"control"``
    (the control at least as good on both and better on one: the signal is not what
    helps), ``"source"`` (the uncertainty schedule at least as good on both and
    better on one: reacting to the signal helped) or ``"mixed"``.

    Args:
        control, source: rows of ``runs.csv`` (``test_score``, ``steps_to_target``).
    """
    (cs, ct), (ss, st) = _medians(control), _medians(source)
    if cs == ss and ct == st:
        return "same"
    if cs >= ss and ct <= st:
        return "control"
    if cs <= ss and ct >= st:
        return "source"
    return "mixed"


VERDICT_TEXT = {
    "same": "the same result, so here the signal is not what helps",
    "control": "the control did as well or better, so here the signal is not what helps",
    "source": "the uncertainty schedule did better, so here reacting to its signal helped",
    "mixed": "a mixed result (better on one count, worse on the other)",
}
"""How :func:`controls_text` states each :func:`control_verdict` of an informative
control (cross-seed replay, shuffled); a same-seed replay's is stated as a check."""

SAME_SEED_REPLAY_TEXT = {
    "same": "the same result, as it must be when nothing but the schedule differs",
    **{
        k: "a different result: something other than the schedule differs between the "
        "arms (nondeterministic kernels, for example)"
        for k in ("control", "source", "mixed")
    },
}
"""How :func:`controls_text` states a same-seed replay's :func:`control_verdict`."""


def controls_text(runs: pd.DataFrame) -> str:
    """Sentences comparing each control with the uncertainty run it controls, per
    task, on the control's own seeds (median test score and steps to target).

    Paired by seed: a control often runs on fewer seeds than the study's schedules
    (``peer_seeds``), so it is compared with the source's runs on the control's own
    seeds (for a cross-seed replay too: the source run that shares its initial
    weights and data order), not with the source's median over all seeds.

    Args:
        runs: the aggregate table (``runs.csv``: ``task``, ``scheduler``, ``seed``,
            ``test_score``, ``steps_to_target`` with ``inf`` for a miss).
    """
    sentences, cross_seed = [], False
    for task, t in runs.groupby("task", sort=False):
        for name, spec in SCHEDULERS.items():
            control = t[t["scheduler"] == name]
            if spec.family != "control" or control.empty:
                continue
            seeds = sorted(int(k) for k in control["seed"].unique())
            source = t[(t["scheduler"] == spec.source) & t["seed"].isin(seeds)]
            if source.empty:
                continue
            texts = VERDICT_TEXT
            if spec.cross_seed:
                kind = "replaying the learning rates of its source's run on the next seed"
            elif name.startswith("replay"):
                kind, texts = "replaying its learning rates", SAME_SEED_REPLAY_TEXT
            else:
                kind = "fed its decision signals in shuffled order"

            cross_seed |= spec.cross_seed
            several = len(seeds) > 1
            on = "seeds " + ", ".join(map(str, seeds)) if several else f"seed {seeds[0]}"
            sentences.append(
                f"On {tex_escape(task)} ({on}), \\texttt{{{tex_escape(name)}}} ({kind}) reached "
                f"{'a median test score' if several else 'a test score'} of "
                f"{_paired_summary(control)}, against {_paired_summary(source)} for "
                f"\\texttt{{{tex_escape(spec.source)}}} on the same seed{'s' if several else ''}: "
                f"{texts[control_verdict(control, source)]}."
            )
    if not sentences:
        return ""
    return (
        "\\paragraph{Controls.} A replay trains on the same seed with the rates of the "
        "uncertainty run it copies; the engines are deterministic, so a replay that "
        "equals its run shows only that nothing but the schedule differs between the "
        "arms. "
        + (
            "A cross-seed replay trains on one seed with the rates the uncertainty "
            "schedule produced on the next: rates of the same kind that did not react to "
            "this run. "
            if cross_seed
            else ""
        )
        + "A shuffled control makes the same kind of decisions at times unrelated to "
        "the model's state: where the uncertainty schedule does no better than its "
        + ("cross-seed replay or " if cross_seed else "")
        + "shuffled control, the signal's timing is not what its results come from. "
        + " ".join(sentences)
        + "\n"
    )


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


def write_tables(
    runs: pd.DataFrame,
    out_dir: str | Path,
    config_name: str = "",
    comparison: pd.DataFrame | None = None,
    sensitivity: pd.DataFrame | None = None,
    signal_levels: pd.DataFrame | None = None,
) -> None:
    """Write ``results_table.tex``, ``comparison_table.tex``, ``setup.tex``,
    ``numbers.tex``, ``findings.tex`` and ``sensitivity.tex`` into ``out_dir``;
    ``config_name`` (the config's ``paper.config_name``) becomes the macro
    ``\\ConfigName``. ``comparison``, ``sensitivity`` and ``signal_levels`` are the
    aggregate's CSV tables (the comparison is computed from ``runs`` when not
    given; the others are left out of the text when missing)."""
    from uncertainty_lr_study.analysis import comparison as comp  # noqa: PLC0415

    out = Path(out_dir)
    table = comp.comparison(runs) if comparison is None else comparison
    setup_table, setup_macros = setup_tex(runs)
    numbers, findings = numbers_and_findings(runs, config_name)
    texts = {
        "comparison_table.tex": comp.comparison_tex(table),
        "sensitivity.tex": ranking_text(table)
        + "\n"
        + controls_text(runs)
        + "\n"
        + sensitivity_tex(sensitivity, signal_levels),
        "results_table.tex": results_table(runs),
        "setup.tex": setup_table,
        "numbers.tex": setup_macros + numbers,
        "findings.tex": findings,
    }
    for name, text in texts.items():  # all checked before any is written
        check_no_missing_numbers(name, text)
    for name, text in texts.items():
        atomic_write_text(out / name, text)


# a number's place (math, a table cell, a macro's value) holding nan or inf
_MISSING_NUMBER = re.compile(
    r"(?:[{$&]|\\pm)\s*[-+]?(?:nan|inf|infinity)\s*(?:[}$&%\\]|$)", re.IGNORECASE
)


def check_no_missing_numbers(name: str, text: str) -> None:
    """Refuse generated LaTeX in which a missing or infinite number was formatted
    as ``nan`` or ``inf`` (the paper says ``--``, ``diverged`` or ``not reached``).

    Raises:
        ValueError: naming the file and the line, so a formatting gap fails the
            tables job instead of printing ``nan`` in the paper.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MISSING_NUMBER.search(line)
        if match:
            raise ValueError(
                f"{name}, line {number}: a missing number was written as "
                f"{match.group()!r} ({line.strip()[:120]}); format it with a rule for "
                "missing values (e.g. _percent_or_dash)"
            )
