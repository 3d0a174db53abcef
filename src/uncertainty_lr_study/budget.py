"""The time budget of a config: each job's measured seconds, per CPU kind, and the
plan's end-to-end estimate on a number of cores.

``make run`` of the default config must finish within :data:`BUDGET_SECONDS` on two
cores of a CPU without native bfloat16. Rather than rerunning two hours for every
change to the grid, the repository keeps what each job took
(:data:`RUN_TIMES`, one row per measured job, recorded with ``python -m
uncertainty_lr_study.budget record RESULTS_DIR``) and :func:`estimate` plays the plan of a
config through Snakemake's way of scheduling it: the jobs of the highest priority
first (:func:`uncertainty_lr_study.config.run_priority`), each on ``threads_per_run``
cores as soon as they are free and its inputs (a control's source run) exist; the
set-up before and the aggregate, figures, tables and paper after are added as
measured. ``tests/test_budget.py`` fails when the default's estimate exceeds the
budget, so every change to the grid is checked against it.

A planned run takes the median measured seconds of the same task and schedule on
the same CPU kind, else the slowest measured schedule of its task (a new schedule
is assumed as slow as the slowest one measured). A job's seconds are its training
loop (``metrics.json``'s ``train_seconds``: the optimizer steps and the validation
passes between them) plus the rest (kernel start, data, model, the test pass). The
training loop is scaled by the planned number of optimizer steps: by the ratio of
``epochs`` and of the training examples (``train_subset``, or the measured run's
``train_examples`` where it used the full set; not on SQuAD, whose subset counts
questions and whose steps count windows), the evaluations being every so many
steps; the rest is kept. A run whose other size settings
(:data:`SIZE_FIELDS`: validation and test subsets, batch size, sequence length,
evaluation interval, model, precision, threads) differ from every measured one has
no estimate: measure it (one job of the task is enough, e.g. ``snakemake
--cores 2 <its metrics.json>``, then ``record``).

Command line::

    python -m uncertainty_lr_study.budget record results --overhead setup=95 \\
        --overhead after-training=60      # add the run's jobs to benchmarks/run_times.csv
    python -m uncertainty_lr_study.budget estimate config/config.yaml --cpu-kind AVX2 --cores 2
"""

from __future__ import annotations

import argparse
import heapq
import json
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from uncertainty_lr_study import paths
from uncertainty_lr_study.config import (
    ConfigError,
    load_config,
    planned_runs,
    resolve_run,
    resolve_sensitivity_run,
    run_priority,
    sensitivity_runs,
)
from uncertainty_lr_study.controls import source_seed
from uncertainty_lr_study.io import atomic_write_csv
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.registry import SCHEDULERS

BUDGET_SECONDS = 2 * 3600
"""``make run`` of the default config end to end, on :data:`BUDGET_CORES` cores."""
BUDGET_CORES = 2
BUDGET_CPU_KIND = "AVX2"
"""The CPU kind the budget is for: AVX2 vector kernels, no native bfloat16
(:func:`uncertainty_lr_study.precision.cpu_kind`)."""
RUN_TIMES = repo_root() / "benchmarks" / "run_times.csv"
"""One row per measured job: :data:`COLUMNS`."""
COLUMNS = [
    "cpu_kind",
    "cpu_model",
    "kind",
    "task",
    "schedule",
    "seed",
    "seconds",
    "train_seconds",
    "epochs",
    "train_subset",
    "train_examples",
    "size",
    "commit",
    "measured_on",
]
"""``kind``: ``run`` (a training job), ``sweep`` (a job of the sensitivity sweep) or
an overhead (``setup``, ``after-training``; no task). ``seconds``: the job's wall
seconds as Snakemake's ``benchmark:`` file records them (papermill and its kernel
start included); ``train_seconds``: the part of it in the training loop
(``metrics.json``). ``size``: the run's :data:`SIZE_FIELDS` as JSON."""
SIZE_FIELDS = (
    "dataset",
    "model",
    "model_params",
    "pretrained",
    "batch_size",
    "val_subset",
    "test_subset",
    "max_length",
    "doc_stride",
    "vocab_size",
    "eval_every_steps",
    "sample_every_steps",
    "precision",
    "device",
    "num_threads",
    "num_processes",
    "group_by_length",
)
"""Run settings that change a run's time other than by its number of optimizer steps
(``epochs``, ``train_subset``)."""
OVERHEADS = ("setup", "after-training")


def size_key(settings: dict[str, Any]) -> str:
    """The :data:`SIZE_FIELDS` of run settings (``RunSettings.to_dict()``) as sorted
    JSON, the key a planned run is matched on."""
    return json.dumps({k: settings.get(k) for k in SIZE_FIELDS}, sort_keys=True)


def collect_run_times(results_dir: str | Path) -> pd.DataFrame:
    """The measured jobs of a pipeline run, as rows of :data:`RUN_TIMES`.

    Args:
        results_dir: a config's ``results_dir`` after a pipeline run, holding
            ``runs/<task>/<schedule>/seed<k>/metrics.json`` (and ``sensitivity/...``)
            and Snakemake's ``benchmarks/{train,sensitivity}/.../seed<k>.tsv``.

    Returns:
        One row per run with both files; ``commit`` and ``measured_on`` empty.

    Raises:
        ConfigError: no run with a benchmark file, or runs on different CPU kinds.
    """
    root = Path(results_dir)
    rows = []
    patterns = {
        "run": paths.run_dir(".", "*", "*", "*"),
        "sweep": paths.sweep_run_dir(".", "*", "*", "*", "*"),
    }
    for kind, pattern in patterns.items():
        for metrics_path in sorted(root.glob(str(pattern / "metrics.json"))):
            bench = paths.job_benchmark(root, metrics_path.parent)
            if not bench.is_file():
                continue
            metrics = json.loads(metrics_path.read_text())
            cpu = metrics.get("host", {}).get("cpu") or {}
            settings = metrics["settings"]
            rows.append({
                "cpu_kind": cpu.get("kind", "unknown"),
                "cpu_model": cpu.get("model", "unknown"),
                "kind": kind,
                "task": settings["task"],
                "schedule": settings["scheduler"],
                "seed": settings["seed"],
                "seconds": round(float(pd.read_csv(bench, sep="\t")["s"].iloc[0]), 1),
                "train_seconds": round(float(metrics["train_seconds"]), 1),
                "epochs": settings["epochs"],
                "train_subset": settings["train_subset"],
                "train_examples": int(metrics.get("train_examples", 0)),
                "size": size_key(settings),
                "commit": "",
                "measured_on": "",
            })
    if not rows:
        raise ConfigError(
            f"{root}: no run with both metrics.json and a Snakemake benchmark file "
            "(paths.job_benchmark); run the pipeline into it first"
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    kinds = sorted(table["cpu_kind"].unique())
    if len(kinds) > 1:
        raise ConfigError(f"{root}: runs measured on different CPU kinds {kinds}; record one")
    return table


@dataclass
class Job:
    """One job of the plan: ``seconds`` on ``threads`` cores after ``after`` ends."""

    name: str
    seconds: float
    threads: int = 1
    priority: int = 0
    after: tuple[str, ...] = ()


def makespan(jobs: list[Job], cores: int) -> float:
    """Seconds until the last job ends, scheduling as Snakemake does on a local
    machine: whenever cores are free, the ready job of the highest priority (the
    longest first among equals) that fits starts.

    Args:
        jobs: the jobs; names unique, ``after`` names among them, no cycle.
        cores: cores available (``--cores``).

    Raises:
        ValueError: a job needs more cores than there are, or waits on an unknown
            job, or the dependencies have a cycle.
    """
    by_name = {j.name: j for j in jobs}
    for j in jobs:
        if j.threads > cores:
            raise ValueError(f"job {j.name} needs {j.threads} cores, there are {cores}")
        missing = [a for a in j.after if a not in by_name]
        if missing:
            raise ValueError(f"job {j.name} waits on unknown jobs {missing}")
    done: set[str] = set()
    waiting = list(jobs)
    running: list[tuple[float, str]] = []  # (end time, name), a heap
    now, free = 0.0, cores
    while waiting or running:
        ready = [j for j in waiting if all(a in done for a in j.after)]
        ready.sort(key=lambda j: (-j.priority, -j.seconds, j.name))
        for j in ready:
            if j.threads <= free:
                heapq.heappush(running, (now + j.seconds, j.name))
                free -= j.threads
                waiting.remove(j)
        if not running:
            raise ValueError(f"dependency cycle among {[j.name for j in waiting]}")
        now, name = heapq.heappop(running)
        done.add(name)
        free += by_name[name].threads
    return now


@dataclass
class Estimate:
    """:func:`estimate`'s answer; ``seconds`` = set-up + training makespan + after."""

    seconds: float
    makespan: float
    overheads: dict[str, float]
    per_task: dict[str, tuple[int, float]]
    """task -> (runs, their summed seconds)."""
    assumed: list[str] = field(default_factory=list)
    """Runs estimated from the slowest measured schedule of their task."""

    def report(self, budget: float = BUDGET_SECONDS) -> str:
        """The estimate as lines of text, against ``budget`` seconds."""
        lines = [
            f"estimate {self.seconds / 60:.1f} min against a budget of {budget / 60:.0f} min "
            f"(training {self.makespan / 60:.1f} min on the cores; "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in self.overheads.items())
            + ")"
        ]
        for task, (n, s) in self.per_task.items():
            lines.append(f"  {task}: {n} runs, {s / 60:.1f} core-minutes")
        if self.assumed:
            lines.append(f"  as slow as their task's slowest measured schedule: {', '.join(self.assumed)}")
        return "\n".join(lines)


def load_run_times(path: str | Path = RUN_TIMES) -> pd.DataFrame:
    """:data:`RUN_TIMES` (or another file of its :data:`COLUMNS`) as a DataFrame."""
    return pd.read_csv(path, dtype={"size": str, "commit": str}, keep_default_na=False)


def _run_seconds(
    times: pd.DataFrame, kind: str, settings: dict[str, Any], assumed: list[str], name: str
) -> float:
    """Measured seconds of one planned run (the rule in the module docs)."""
    task = times[(times["kind"] == kind) & (times["task"] == settings["task"])]
    if task.empty:
        raise ConfigError(
            f"no measured {kind} of task {settings['task']!r} on this CPU kind: run the "
            "pipeline and record its times (python -m uncertainty_lr_study.budget record)"
        )
    planned_subset = settings["train_subset"]
    # a subset of a measured full set is scaled by examples, except on SQuAD, whose
    # subset counts questions and whose runs count windows
    from_full = planned_subset > 0 and settings["dataset"] != "squad"
    same = task[
        (task["size"] == size_key(settings))
        & (
            ((task["train_subset"] > 0) == (planned_subset > 0))
            | (from_full & (task["train_subset"] == 0))
        )
    ]
    if same.empty:
        raise ConfigError(
            f"{name}: its size settings differ from every measured {kind} of task "
            f"{settings['task']!r} (epochs and a train_subset may change without "
            f"measuring, not the others or to or from the full training set): planned "
            f"{size_key(settings)} (train_subset {planned_subset}), measured "
            f"{sorted(task['size'].unique())} (train_subset "
            f"{sorted(task['train_subset'].unique())}); measure one job of it and record it"
        )
    steps = settings["epochs"] / same["epochs"]
    if planned_subset > 0:
        measured = same["train_subset"].where(same["train_subset"] > 0, same["train_examples"])
        steps = steps * planned_subset / measured
    scaled = same["seconds"] - same["train_seconds"] + same["train_seconds"] * steps
    medians = scaled.groupby(same["schedule"]).median()
    if settings["scheduler"] in medians.index:
        return float(medians[settings["scheduler"]])
    assumed.append(name)
    return float(medians.max())


def estimate(
    config: dict[str, Any],
    times: pd.DataFrame,
    cpu_kind: str = BUDGET_CPU_KIND,
    cores: int = BUDGET_CORES,
) -> Estimate:
    """End-to-end seconds of ``make run`` of ``config`` on ``cores`` cores of
    ``cpu_kind``, from the measured ``times`` (the rule in the module docs).

    Args:
        config: a validated config (:func:`uncertainty_lr_study.config.load_config`).
        times: rows of :data:`COLUMNS` (:func:`load_run_times`).
        cpu_kind: e.g. ``"AVX2"`` (:func:`uncertainty_lr_study.precision.cpu_kind`).
        cores: Snakemake's ``--cores``.

    Raises:
        ConfigError: nothing measured on ``cpu_kind``, a task never measured, a run
            whose size settings were never measured, or a missing overhead.
    """
    times = times[times["cpu_kind"] == cpu_kind]
    if times.empty:
        raise ConfigError(f"no job measured on CPU kind {cpu_kind!r}")
    threads = int(config["threads_per_run"])
    jobs, assumed, per_task = [], [], {}
    for task, schedule, seed in planned_runs(config):
        settings = resolve_run(config, task, schedule, seed)
        name = f"{task}/{schedule}/seed{seed}"
        seconds = _run_seconds(times, "run", settings.to_dict(), assumed, name)
        source = SCHEDULERS[schedule].source
        after = (f"{task}/{source}/seed{source_seed(settings)}",) if source else ()
        jobs.append(Job(name, seconds, threads, run_priority(config, task), after))
        n, s = per_task.get(task, (0, 0.0))
        per_task[task] = (n + 1, s + seconds * threads)
    for task, schedule, label, seed in sensitivity_runs(config):
        settings = resolve_sensitivity_run(config, schedule, label, seed)
        name = f"sweep {task}/{schedule}/{label}/seed{seed}"
        seconds = _run_seconds(times, "sweep", settings.to_dict(), assumed, name)
        jobs.append(Job(name, seconds, threads))
        n, s = per_task.get("sweep", (0, 0.0))
        per_task["sweep"] = (n + 1, s + seconds * threads)
    overheads = {}
    for kind in OVERHEADS:
        rows = times[times["kind"] == kind]
        if rows.empty:
            raise ConfigError(f"no measured {kind} time on CPU kind {cpu_kind!r}")
        overheads[kind] = float(rows["seconds"].max())
    span = makespan(jobs, cores)
    return Estimate(span + sum(overheads.values()), span, overheads, per_task, assumed)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(), capture_output=True,
            text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def record(
    results_dir: str | Path,
    overheads: dict[str, float],
    path: str | Path = RUN_TIMES,
    commit: str | None = None,
) -> pd.DataFrame:
    """Add a pipeline run's jobs and overheads to the table at ``path``, replacing
    the rows of the same CPU kind measured at the same commit.

    Args:
        results_dir: see :func:`collect_run_times`.
        overheads: ``{"setup": seconds, "after-training": seconds}``, as measured.
        path: the table (created if absent).
        commit: the measured commit (default: the repository's HEAD, short).

    Returns:
        The whole table as written.

    Raises:
        ConfigError: see :func:`collect_run_times`; an unknown or negative overhead.
    """
    bad = {k: v for k, v in overheads.items() if k not in OVERHEADS or not v >= 0}
    if bad:
        raise ConfigError(f"overheads must be {'/'.join(OVERHEADS)}=SECONDS >= 0, got {bad}")
    new = collect_run_times(results_dir)
    kind, model = new["cpu_kind"].iloc[0], new["cpu_model"].iloc[0]
    extra = [
        {"cpu_kind": kind, "cpu_model": model, "kind": k, "task": "", "schedule": "",
         "seed": -1, "seconds": round(float(v), 1), "train_seconds": 0.0, "epochs": 0,
         "train_subset": 0, "train_examples": 0, "size": ""}
        for k, v in overheads.items()
    ]
    new = pd.concat([new, pd.DataFrame(extra)], ignore_index=True)
    new["commit"] = commit if commit is not None else _git_commit()
    new["measured_on"] = date.today().isoformat()
    path = Path(path)
    old = load_run_times(path) if path.is_file() else pd.DataFrame(columns=COLUMNS)
    keep = old[~((old["cpu_kind"] == kind) & (old["commit"] == new["commit"].iloc[0]))]
    table = pd.concat([keep, new], ignore_index=True)[COLUMNS]
    atomic_write_csv(path, table)
    return table


def main(argv: list[str] | None = None) -> int:
    """The command line of the module docs; 0 when within the budget, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m uncertainty_lr_study.budget", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="add a pipeline run's job times to the table")
    rec.add_argument("results_dir")
    rec.add_argument("--overhead", action="append", default=[], metavar="KIND=SECONDS")
    rec.add_argument("--table", default=str(RUN_TIMES), help="the table (default: %(default)s)")
    est = sub.add_parser("estimate", help="a config's end-to-end time from the table")
    est.add_argument("config")
    est.add_argument("--cpu-kind", default=BUDGET_CPU_KIND)
    est.add_argument("--cores", type=int, default=BUDGET_CORES)
    est.add_argument("--table", default=str(RUN_TIMES), help="the table (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "record":
            overheads = {}
            for item in args.overhead:
                key, _, value = item.partition("=")
                try:
                    overheads[key] = float(value)
                except ValueError:
                    raise ConfigError(f"--overhead {item!r}: expected KIND=SECONDS") from None
            table = record(args.results_dir, overheads, args.table)
            print(f"{args.table}: {len(table)} rows")
            return 0
        result = estimate(
            load_config(args.config), load_run_times(args.table), args.cpu_kind, args.cores
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.report())
    return 0 if result.seconds <= BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
