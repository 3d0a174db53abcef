"""The paper's generated text: the macros of every number it quotes and the
results paragraph (:func:`numbers_and_findings`), the ranking
(:func:`ranking_text`) and the controls' verdicts (:func:`controls_text`)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from uncertainty_lr_study.analysis.latex.escape import (
    _pct_text,
    _percent_or_dash,
    macro_name,
    tex_escape,
)
from uncertainty_lr_study.analysis.latex.tables import (
    ADAPTIVE,
    BASELINES,
    METRIC_WORDS,
    decision_interval_text,
    summarise,
)
from uncertainty_lr_study.analysis.stats import CONFIDENCE
from uncertainty_lr_study.registry import SCHEDULERS


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
            text += [_against_baseline(runs, task, block, a, b, metric) for a in adapt]
        text += _task_notes(runs, task, block)
        paragraphs.append(" ".join(text))
    return "\n".join(macros) + "\n", "\n\n".join(paragraphs) + "\n"


def _against_baseline(
    runs: pd.DataFrame, task: str, block: pd.DataFrame, a: str, b: str, metric: str
) -> str:
    """The sentence comparing adaptive schedule ``a`` with the best fixed baseline
    ``b`` on ``task`` (``block``: the task's summary rows, indexed by schedule)."""
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
    return (
        f"\\texttt{{{tex_escape(a)}}} reached a {metric} of ${acc_a:.2f}\\%$, "
        f"{relation} the best "
        f"fixed baseline \\texttt{{{tex_escape(b)}}} (${acc_b:.2f}\\%$){note}; {speed}."
        + decisions
    )


def _task_notes(runs: pd.DataFrame, task: str, block: pd.DataFrame) -> list[str]:
    """Sentences on identical trajectories of the two uncertainty schedules and on
    diverged runs of ``task``."""
    notes = []
    if all(a in block.index for a in ADAPTIVE) and _same_trajectory(runs, task, *ADAPTIVE):
        notes.append(
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
        notes.append(
            f"{len(diverged)} run(s) on {tex_escape(task)} diverged (a non-finite loss or "
            f"gradient stopped them): {names}. They count as not reaching the target; "
            "their test metrics are missing, and the means above are over the completed runs."
        )
    return notes


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
