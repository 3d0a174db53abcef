"""The plan of a config: which runs it makes (task x schedule x seed, the sweep's
points) and in which order Snakemake starts them."""

from __future__ import annotations

from typing import Any

from uncertainty_lr_study.registry import SCHEDULERS


def task_schedulers(config: dict[str, Any], task: str) -> list[str]:
    """The schedulers a task runs: its own ``schedulers`` list, else the config's."""
    return list(config["tasks"][task].get("schedulers", config["schedulers"]))


def task_seeds(config: dict[str, Any], task: str, scheduler: str | None = None) -> list[int]:
    """The seeds a task runs: its own ``seeds`` list, else the config's; for a peer
    or control ``scheduler``, the task's ``peer_seeds`` where it sets them."""
    t = config["tasks"][task]
    seeds = list(t.get("seeds", config["seeds"]))
    if scheduler is not None and SCHEDULERS[scheduler].family in ("peer", "control"):
        return list(t.get("peer_seeds", seeds))
    return seeds


RUN_PRIORITY = {"transformer": 2, "lstm": 1}
"""Scheduling priority of a training run by its task's model (others 0): see
:func:`run_priority`."""


def run_priority(config: dict[str, Any], task: str) -> int:
    """Snakemake priority of a task's training runs: the longest runs first.

    On the default config's 2 cores a MiniLM run takes 11-16 minutes, an LSTM run
    about 3 and a LeNet-5 run about 2. Started last, one long run leaves a core idle
    at the end of the pipeline (the first end-to-end run of the issue-6 default
    started its last SQuAD run about 100 minutes in); started first, the short runs
    fill both cores at the end (longest-processing-time-first scheduling).

    Args:
        config: a validated config.
        task: one of its tasks.

    Returns:
        2 for the transformer tasks, 1 for the LSTM, 0 otherwise.
    """
    return RUN_PRIORITY.get(config["tasks"][task]["model"], 0)


def planned_runs(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every ``(task, scheduler, seed)`` of a validated config, in config order."""
    return [
        (task, scheduler, seed)
        for task in config["tasks"]
        for scheduler in task_schedulers(config, task)
        for seed in task_seeds(config, task, scheduler)
    ]


def sweep_label(sweep: dict[str, Any], value: float) -> str:
    """Folder name of one point of a sensitivity sweep: the fixed overrides' values,
    the swept parameter and its value, e.g. ``threshold_0.1``,
    ``rel-threshold_1.25``, ``increase_factor_1.2``."""
    prefix = "".join(f"{v}-" for v in sweep.get("fixed", {}).values())
    return f"{prefix}{sweep['param']}_{value:g}"


def sensitivity_points(config: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every point of the config's sensitivity sweep: ``(scheduler, label)`` -> the
    scheduler overrides of its runs (the config's ``scheduler_params`` of that
    scheduler, the sweep's ``fixed`` ones, the swept value). Empty without a sweep."""
    sens = config.get("sensitivity")
    if not sens:
        return {}
    points = {}
    for sweep in sens["sweeps"]:
        base = {
            **config["scheduler_params"].get(sweep["scheduler"], {}),
            **sweep.get("fixed", {}),
        }
        for value in sweep["values"]:
            points[(sweep["scheduler"], sweep_label(sweep, value))] = {
                **base,
                sweep["param"]: value,
            }
    return points


def sensitivity_runs(config: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every ``(task, scheduler, label, seed)`` run of the sensitivity sweep."""
    sens = config.get("sensitivity")
    if not sens:
        return []
    return [
        (sens["task"], scheduler, label, seed)
        for scheduler, label in sensitivity_points(config)
        for seed in sens["seeds"]
    ]
