"""The time budget: the default config's plan against measured per-run times
(benchmarks/run_times.csv), and the estimate's rules on constructed inputs."""

import copy
import json

import pandas as pd
import pytest

from uncertainty_lr_study import budget
from uncertainty_lr_study.budget import Job, estimate, makespan
from uncertainty_lr_study.config import (
    ConfigError,
    load_config,
    planned_runs,
    resolve_run,
    resolve_sensitivity_run,
    sensitivity_runs,
)
from uncertainty_lr_study.paths import repo_root

DEFAULT = repo_root() / "config" / "config.yaml"


def test_the_default_config_fits_its_budget_on_a_cpu_without_native_bf16():
    """Every change to the default's grid must keep `make run` within 2 hours on 2
    cores of an AVX2 CPU, by the measured per-run times."""
    result = estimate(load_config(DEFAULT), budget.load_run_times(), "AVX2", 2)
    assert result.seconds <= budget.BUDGET_SECONDS, result.report()
    # every task and the sweep measured (unmeasured schedules: their task's slowest)
    assert set(result.per_task) == {*load_config(DEFAULT)["tasks"], "sweep"}


def test_the_run_times_table_names_its_cpu_and_commit():
    times = budget.load_run_times()
    assert list(times.columns) == budget.COLUMNS
    avx2 = times[times["cpu_kind"] == "AVX2"]
    assert set(budget.OVERHEADS) <= set(avx2["kind"])
    assert (avx2["cpu_model"] != "").all() and (avx2["commit"] != "").all()
    assert (times["seconds"] > 0).all()


def _times(config, seconds=60.0, kind="AVX2", skip=()):
    """A table with a measured time for every planned run of ``config``."""
    rows = []
    for task, schedule, seed in planned_runs(config):
        if schedule in skip:
            continue
        s = resolve_run(config, task, schedule, seed).to_dict()
        rows.append({"kind": "run", "task": task, "schedule": schedule, "seed": seed,
                     "seconds": seconds, "train_seconds": 0.75 * seconds, "epochs": s["epochs"],
                     "train_subset": s["train_subset"], "train_examples": 1000,
                     "size": budget.size_key(s)})
    for task, schedule, label, seed in sensitivity_runs(config):
        s = resolve_sensitivity_run(config, schedule, label, seed).to_dict()
        rows.append({"kind": "sweep", "task": task, "schedule": schedule, "seed": seed,
                     "seconds": seconds / 2, "train_seconds": seconds / 4, "epochs": s["epochs"],
                     "train_subset": s["train_subset"], "train_examples": 1000,
                     "size": budget.size_key(s)})
    rows += [{"kind": k, "task": "", "schedule": "", "seed": -1, "seconds": 100.0,
              "train_seconds": 0.0, "epochs": 0, "train_subset": 0, "train_examples": 0,
              "size": ""}
             for k in budget.OVERHEADS]
    table = pd.DataFrame(rows)
    table["cpu_kind"], table["cpu_model"], table["commit"], table["measured_on"] = kind, "x", "c", "d"
    return table[budget.COLUMNS]


def test_makespan_schedules_the_highest_priority_and_longest_first():
    # 2 cores, longest first: 3 | 3, then 2 | 2, then 2: 7 s
    assert makespan([Job(str(i), s) for i, s in enumerate([2, 3, 2, 3, 2])], 2) == 7
    # priority before length: the short job of priority 1 starts first
    jobs = [Job("long", 10), Job("short", 1, priority=1), Job("mid", 5)]
    assert makespan(jobs, 1) == 16
    assert makespan(jobs, 2) == 10  # short, then mid after it on the same core: 6 < 10
    # a job waits for its source; a 2-thread job for both cores
    assert makespan([Job("a", 4), Job("b", 1, after=("a",)), Job("c", 1)], 2) == 5
    assert makespan([Job("a", 4), Job("w", 1, threads=2)], 2) == 5


def test_makespan_refuses_impossible_plans():
    with pytest.raises(ValueError, match="needs 3 cores"):
        makespan([Job("a", 1, threads=3)], 2)
    with pytest.raises(ValueError, match="unknown jobs"):
        makespan([Job("a", 1, after=("b",))], 2)
    with pytest.raises(ValueError, match="cycle"):
        makespan([Job("a", 1, after=("b",)), Job("b", 1, after=("a",))], 2)


def test_estimate_adds_overheads_and_counts_every_run():
    config = load_config(DEFAULT)
    result = estimate(config, _times(config), "AVX2", 2)
    n = len(planned_runs(config))
    assert sum(runs for task, (runs, _) in result.per_task.items() if task != "sweep") == n
    assert result.overheads == {"setup": 100.0, "after-training": 100.0}
    assert result.seconds == pytest.approx(result.makespan + 200.0)
    # 2 cores: at least half the summed core time, at most all of it
    total = sum(s for _, s in result.per_task.values())
    assert total / 2 <= result.makespan <= total


def test_estimate_scales_the_training_loop_by_steps_and_refuses_other_size_changes():
    config = load_config(DEFAULT)
    times = _times(config)
    base = estimate(config, times, "AVX2", 2)
    # twice the epochs: the training loop (0.75 of each job) twice as long
    doubled = copy.deepcopy(config)
    for t in doubled["tasks"].values():
        t["epochs"] = 2 * t["epochs"]
    cost = estimate(doubled, times, "AVX2", 2).per_task
    for task, (n, seconds) in base.per_task.items():
        if task != "sweep":  # the sweep's epochs are its own
            assert cost[task] == (n, pytest.approx(seconds * 1.75))
    # half the LSTM's training subset: its training loop half as long
    half = copy.deepcopy(config)
    half["tasks"]["imdb-lstm"]["train_subset"] //= 2
    n, seconds = estimate(half, times, "AVX2", 2).per_task["imdb-lstm"]
    assert seconds == pytest.approx(base.per_task["imdb-lstm"][1] * (0.25 + 0.75 / 2))
    # a subset of MNIST's measured full set (1000 examples here): by examples
    full = copy.deepcopy(config)
    full["tasks"]["mnist"]["train_subset"] = 0
    full_times = _times(full)
    mnist = copy.deepcopy(full)
    mnist["tasks"]["mnist"]["train_subset"] = 250
    n, seconds = estimate(mnist, full_times, "AVX2", 2).per_task["mnist"]
    full_seconds = estimate(full, full_times, "AVX2", 2).per_task["mnist"][1]
    assert seconds == pytest.approx(full_seconds * (0.25 + 0.75 / 4))
    # another size setting, or the full training set where a subset was measured
    for key, value in (("val_subset", 2000), ("batch_size", 64), ("train_subset", 0)):
        changed = copy.deepcopy(config)
        changed["tasks"]["imdb-lstm"][key] = value
        with pytest.raises(ConfigError, match="size settings differ"):
            estimate(changed, times, "AVX2", 2)


def test_an_unmeasured_schedule_is_as_slow_as_its_tasks_slowest_and_is_named():
    config = load_config(DEFAULT)
    times = _times(config, skip=("prodigy",))
    slow = times["schedule"] == "cosine"
    times.loc[slow, "seconds"] = 90.0
    result = estimate(config, times, "AVX2", 2)
    assert "mnist/prodigy/seed0" in result.assumed
    assert result.per_task["mnist"][1] == pytest.approx(
        sum(90.0 if s in ("cosine", "prodigy") else 60.0
            for t, s, _ in planned_runs(config) if t == "mnist"))


def test_estimate_needs_the_cpu_kind_and_every_task_measured():
    config = load_config(DEFAULT)
    with pytest.raises(ConfigError, match="no job measured on CPU kind 'AVX512'"):
        estimate(config, _times(config), "AVX512", 2)
    times = _times(config)
    with pytest.raises(ConfigError, match="no measured run of task 'squad-minilm'"):
        estimate(config, times[times["task"] != "squad-minilm"], "AVX2", 2)


def test_record_reads_snakemake_benchmarks_and_replaces_a_commit_rows(tmp_path):
    config = load_config(DEFAULT)
    settings = resolve_run(config, "mnist", "cosine", 0).to_dict()
    run = tmp_path / "res" / "runs" / "mnist" / "cosine" / "seed0"
    run.mkdir(parents=True)
    cpu = {"kind": "AVX2", "model": "Some CPU"}
    (run / "metrics.json").write_text(json.dumps({"settings": settings, "host": {"cpu": cpu}}))
    bench = tmp_path / "res" / "benchmarks" / "train" / "mnist" / "cosine" / "seed0.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n101.234\t0:01:41\t300\n")
    (run / "metrics.json").write_text(
        json.dumps({"settings": settings, "host": {"cpu": cpu}, "train_seconds": 80.04})
    )
    table_path = tmp_path / "times.csv"
    for _ in range(2):  # the second record of the same commit replaces the first
        table = budget.record(tmp_path / "res", {"setup": 90, "after-training": 50},
                              table_path, commit="abc1234")
    assert len(table) == 3
    row = table[table["kind"] == "run"].iloc[0]
    assert (row["task"], row["schedule"], row["seconds"], row["train_seconds"]) == (
        "mnist", "cosine", 101.2, 80.0)
    assert (row["cpu_model"], row["train_subset"], row["train_examples"]) == (
        "Some CPU", settings["train_subset"], 0)
    assert budget.load_run_times(table_path).equals(table)
    with pytest.raises(ConfigError, match="overheads must be"):
        budget.record(tmp_path / "res", {"setup": -1}, table_path)
    with pytest.raises(ConfigError, match="no run with both"):
        budget.record(tmp_path / "empty", {}, table_path)


def test_the_run_layout_is_written_once():
    """Every run, sweep, log and benchmark path comes from uncertainty_lr_study.paths."""
    import re

    from uncertainty_lr_study import paths

    run = paths.run_dir("res", "mnist", "cosine", 2)
    assert run.as_posix() == "res/runs/mnist/cosine/seed2"
    assert paths.sibling_run_dir(run, "uncertainty-variance", 0).as_posix() == (
        "res/runs/mnist/uncertainty-variance/seed0")
    sweep = paths.sweep_run_dir("res", "mnist", "u", "threshold_0.1", 0)
    assert sweep.as_posix() == "res/sensitivity/mnist/u/threshold_0.1/seed0"
    assert paths.job_log("res", run).as_posix() == "res/logs/train/mnist/cosine/seed2.log"
    assert paths.job_benchmark("res", sweep).as_posix() == (
        "res/benchmarks/sensitivity/mnist/u/threshold_0.1/seed0.tsv")
    # a pattern of wildcards, as the train rules use it
    assert paths.job_log("r", paths.run_dir("r", "{task}", "{s}", "{seed}")).as_posix() == (
        "r/logs/train/{task}/{s}/seed{seed}.log")
    written = re.compile(
        r"""["'/](runs|sensitivity)/|["']runs["']\s*/|/\s*f?["']seed|(logs|benchmarks)/train/"""
    )
    root = repo_root()
    lines = {}
    for f in [*root.glob("src/**/*.py"), *root.glob("workflow/**/*.smk"), root / "Snakefile"]:
        if f.name != "paths.py":
            lines[f.relative_to(root)] = f.read_text().splitlines()
    for f in root.glob("notebooks/*.ipynb"):
        cells = json.loads(f.read_text())["cells"]
        code = "".join("".join(c["source"]) + "\n" for c in cells if c["cell_type"] == "code")
        lines[f.relative_to(root)] = code.splitlines()
    offenders = [
        f"{name}:{i}: {line.strip()}"
        for name, text in lines.items()
        for i, line in enumerate(text, 1)
        if written.search(line) and "``" not in line and not line.lstrip().startswith("#")
    ]
    assert offenders == []
