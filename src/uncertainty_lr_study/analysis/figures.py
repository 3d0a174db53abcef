"""Figures of the paper, drawn from the aggregate tables only (seaborn/matplotlib).

Each figure is saved as PDF (for the paper) and PNG (for a quick look) under the
figures folder. Where a figure has bands, they are over seeds: the line is the mean,
the band spans the minimum to the maximum seed; the learning-rate figure draws one
line per seed instead.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter
import pandas as pd
import seaborn as sns

from uncertainty_lr_study.analysis.aggregate import SIGNAL_THRESHOLDS, recorded_threshold
from uncertainty_lr_study.io import atomic_open
from uncertainty_lr_study.registry import SCHEDULERS, registry_order

FIGURES = ("val_accuracy", "lr", "signals", "performance_profile", "sensitivity")
"""Names of the paper's figures (files ``<name>.pdf`` and ``<name>.png``)."""

SIGNAL_LABELS = {"grad_norm": "gradient norm", "predictive_variance": "predictive variance"}


def _palette(order: list[str]) -> list:
    """One distinct colour per schedule (seaborn's default ten, tab20 beyond)."""
    return sns.color_palette("tab10" if len(order) <= 10 else "tab20", len(order))


def _save(fig: plt.Figure, out_dir: Path, name: str) -> None:
    """Save ``fig`` as ``<name>.pdf`` and ``<name>.png`` in ``out_dir``, each through
    :func:`uncertainty_lr_study.io.atomic_open` (the format given, not guessed from the
    temporary file's name), and close it."""
    # No creation date in the PDF: the same data give the same bytes.
    with atomic_open(out_dir / f"{name}.pdf", "wb") as f:
        fig.savefig(f, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    with atomic_open(out_dir / f"{name}.png", "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight", dpi=150)
    plt.close(fig)


def _facet(
    history: pd.DataFrame, y: str, ylabel: str, log: bool = False, **line_kws
) -> sns.FacetGrid:
    order = registry_order(history["scheduler"])
    line_kws = {"errorbar": ("pi", 100), **line_kws}
    grid = sns.relplot(
        data=history,
        x="epoch",
        y=y,
        hue="scheduler",
        hue_order=order,
        palette=_palette(order),
        col="task",
        kind="line",
        height=3.2,
        aspect=1.35,
        facet_kws={"sharey": False, "sharex": False},
        **line_kws,
    )
    grid.set_axis_labels("epoch", ylabel)
    grid.set(xlim=(0, None))
    if log:
        grid.set(yscale="log")
    return grid


def validation_score(evals: pd.DataFrame) -> pd.Series:
    """Each evaluation row's ranking metric (``tasks.DataSet.primary_metric``): the
    aggregate's ``val_score`` column; for a single run's history (no such column),
    ``val_accuracy``, or ``val_f1`` where a task has no accuracy (SQuAD)."""
    if "val_score" in evals:
        return evals["val_score"]
    score = evals["val_accuracy"] if "val_accuracy" in evals else pd.Series(float("nan"), evals.index)
    if "val_f1" in evals:
        score = score.fillna(evals["val_f1"])
    return score


def plot_val_accuracy(history: pd.DataFrame, out_dir: Path) -> None:
    """Validation error (1 - accuracy; on SQuAD 1 - F1; log scale) against epochs,
    per scheduler."""
    evals = history[history["kind"] == "eval"].copy()
    evals["val_error"] = 1.0 - validation_score(evals)
    label = "validation error (1 - accuracy)"
    if "val_f1" in evals and evals["val_f1"].notna().any():
        label = "validation error (1 - accuracy or F1)"
    grid = _facet(evals, "val_error", label, log=True)
    _save(grid.figure, out_dir, "val_accuracy")


def plot_lr(history: pd.DataFrame, out_dir: Path) -> None:
    """Learning rate of parameter group 0 against epochs, one line per seed and
    scheduler (log scale).

    Each evaluation row holds the rate used in the interval that ends there, so the
    lines are drawn as steps that end at the evaluation."""
    evals = history[(history["kind"] == "eval") & (history["epoch"] > 0)]
    grid = _facet(
        evals,
        "lr",
        "learning rate",
        log=True,
        drawstyle="steps-pre",
        units="seed",
        estimator=None,
        errorbar=None,
        linewidth=1.0,
    )
    _save(grid.figure, out_dir, "lr")


def plot_signals(history: pd.DataFrame, out_dir: Path, thresholds: dict[str, float]) -> None:
    """Both uncertainty signals (per-epoch means) against epochs, per scheduler.

    Args:
        thresholds: the threshold of each signal's uncertainty scheduler, drawn as a
            dashed line where given.
    """
    evals = history[(history["kind"] == "eval") & (history["epoch"] > 0)]
    long = evals.melt(
        id_vars=["task", "scheduler", "seed", "epoch"],
        value_vars=list(SIGNAL_LABELS),
        var_name="signal",
        value_name="value",
    )
    grid = sns.relplot(
        data=long,
        x="epoch",
        y="value",
        hue="scheduler",
        hue_order=registry_order(long["scheduler"]),
        palette=_palette(registry_order(long["scheduler"])),
        row="signal",
        col="task",
        kind="line",
        errorbar=("pi", 100),
        height=2.8,
        aspect=1.5,
        facet_kws={"sharey": False, "sharex": False},
    )
    grid.set(yscale="log", xlim=(0, None))
    for (signal, _task), ax in grid.axes_dict.items():
        ax.set_ylabel(SIGNAL_LABELS[signal])
        if signal in thresholds:
            ax.axhline(thresholds[signal], color="black", linestyle="--", linewidth=0.8)
    _save(grid.figure, out_dir, "signals")


def plot_performance_profile(runs: pd.DataFrame, out_dir: Path) -> None:
    """Performance profiles of the median steps to the validation target
    (:func:`uncertainty_lr_study.analysis.comparison.profile`): for each method, the
    fraction of the tasks it ran on where it was within a factor tau of the
    fastest method, for tau in [1, 4]."""
    from uncertainty_lr_study.analysis.comparison import profile  # noqa: PLC0415

    rho = profile(runs)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    palette = sns.color_palette("tab20", n_colors=max(len(rho.columns), 1))
    for (name, values), color in zip(rho.items(), palette):
        style = "-" if SCHEDULERS.get(name) is None or SCHEDULERS[name].family != "peer" else "--"
        ax.step(rho.index, values, where="post", label=name, color=color, linestyle=style)
    ax.set(
        xlabel=r"$\tau$ (steps to target / fastest method's)",
        ylabel="fraction of tasks",
        xlim=(1, 4),
        ylim=(-0.02, 1.02),
    )
    ax.legend(fontsize="x-small", ncol=2, loc="lower right", frameon=True)
    _save(fig, out_dir, "performance_profile")


def plot_sensitivity(sensitivity: pd.DataFrame | None, out_dir: Path) -> None:
    """Test score and the number of learning-rate decreases against each swept
    hyperparameter of the uncertainty schedule (one panel column per sweep; dots:
    seeds, line: median; dashed: the registry's default). The decreases show what
    the rule did: one at every decision is a plain decay, none a constant rate.
    Without a sweep, a panel saying so."""
    if sensitivity is None or sensitivity.empty:
        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.text(0.5, 0.5, "no sensitivity sweep in this config", ha="center", va="center")
        ax.axis("off")
        _save(fig, out_dir, "sensitivity")
        return
    data = sensitivity.copy()
    data["sweep"] = data["scheduler"].str.replace("uncertainty-", "") + ": " + data["setting"]
    data["test score (%)"] = 100 * data["test_score"]
    data["LR decreases"] = data["lr_decreases"]
    sweeps = list(dict.fromkeys(data["sweep"]))
    fig, axes = plt.subplots(
        2, len(sweeps), figsize=(2.6 * len(sweeps) + 0.6, 4.6), squeeze=False, sharey="row"
    )
    for j, sweep in enumerate(sweeps):
        g = data[data["sweep"] == sweep]
        sched, setting = g["scheduler"].iloc[0], g["setting"].iloc[0]
        param = setting.split("-")[-1]
        default = SCHEDULERS[sched].defaults.get(param)
        for i, column in enumerate(("test score (%)", "LR decreases")):
            ax = axes[i, j]
            sns.stripplot(data=g, x="value", y=column, ax=ax, native_scale=True, color="0.3", size=4)
            medians = g.groupby("value")[column].median()
            ax.plot(medians.index, medians.to_numpy(), color="tab:blue")
            if param in ("threshold",) and g["value"].min() > 0 and "rel" not in setting:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
            if default is not None and "rel" not in setting:
                ax.axvline(default, color="black", linestyle="--", linewidth=0.8)
            ax.set_xlabel(setting.replace("_", " ") if i else "")
            ax.set_ylabel(column if j == 0 else "")
        axes[0, j].set_title(sweep.replace("_", " "), fontsize="small")
    fig.tight_layout()
    _save(fig, out_dir, "sensitivity")


def write_figures(
    runs: pd.DataFrame,
    history: pd.DataFrame,
    out_dir: str | Path,
    sensitivity: pd.DataFrame | None = None,
) -> None:
    """Draw every figure of :data:`FIGURES` into ``out_dir`` (``sensitivity``: the
    aggregate's ``sensitivity.csv``, None or empty without a sweep)."""
    sns.set_theme(style="whitegrid", context="paper")
    out = Path(out_dir)
    thresholds = {
        signal: recorded_threshold(runs, sched)
        for signal, sched in SIGNAL_THRESHOLDS.items()
        if (runs["scheduler"] == sched).any()
    }
    plot_val_accuracy(history, out)
    plot_lr(history, out)
    plot_signals(history, out, thresholds)
    plot_performance_profile(runs, out)
    plot_sensitivity(sensitivity, out)


def plot_run(run_dir: str | Path) -> plt.Figure:
    """Learning curve, LR and signal traces of one run (for ``train.ipynb``).

    Args:
        run_dir: a run folder holding ``history.csv`` (relative to the repository
            root if not absolute).

    Returns:
        The matplotlib figure (three panels against epochs).
    """
    from uncertainty_lr_study.paths import repo_root  # noqa: PLC0415

    run_dir = Path(run_dir)
    if not run_dir.is_absolute():
        run_dir = repo_root() / run_dir
    hist = pd.read_csv(run_dir / "history.csv")
    evals, steps = hist[hist["kind"] == "eval"], hist[hist["kind"] == "step"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    name = "accuracy" if "val_accuracy" in evals else "F1"
    axes[0].plot(evals["epoch"], validation_score(evals), marker="o", label=f"validation {name}")
    axes[0].set(xlabel="epoch", ylabel=f"validation {name}")
    ax2 = axes[0].twinx()
    ax2.plot(evals["epoch"], evals["val_loss"], color="tab:red", label="validation loss")
    ax2.set_ylabel("validation loss")
    axes[1].step(evals["epoch"], evals["lr"], where="post")
    axes[1].set(xlabel="epoch", ylabel="learning rate", yscale="log")
    src = steps if len(steps) else evals
    for signal, label in SIGNAL_LABELS.items():
        axes[2].plot(src["epoch"], src[signal], label=label, alpha=0.8)
    axes[2].set(xlabel="epoch", ylabel="signal", yscale="log")
    axes[2].legend()
    fig.tight_layout()
    return fig
