"""Controls that separate the uncertainty signal from the decay it produces.

Every run writes ``lr_trace.csv`` beside its ``metrics.json``: one row per call of
the schedule's ``step()`` (row 0: before the first call) with the learning rate of
every parameter group and, where an :class:`~uncertainty_lr.UncertaintyLR` took a
decision at that call, the signal it decided on. A control run of a task and seed
reads the trace of its source run (``ScheduleSpec.source``: the uncertainty schedule
it controls, on the same task and seed, or for ``replay-xseed-*`` on the seed
``RunSettings.source_seed``):

- ``replay-*`` trains with the source's learning rates as a fixed schedule; on the
  same seed it is the source run again (a check that the two arms differ only in
  their schedule);
- ``replay-xseed-*`` trains with the learning rates the source produced on another
  seed: a schedule of the same shape that did not react to this run;
- ``shuffled-*`` trains with the source's rule, fed the source's decision signals in
  a shuffled order.

If the cross-seed replay or the shuffled control matches its source, the signal is
not what helps; if the source wins, it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.io import atomic_write_csv
from uncertainty_lr_study.paths import sibling_run_dir
from uncertainty_lr import uncertainty_part
from uncertainty_lr_study.registry import SCHEDULERS, ControlInput

TRACE_FILE = "lr_trace.csv"

SETTINGS_A_CONTROL_MAY_CHANGE = ("scheduler", "scheduler_params")


@dataclass
class TraceRecorder:
    """Collects the rows of ``lr_trace.csv`` while a run trains.

    Call :meth:`record` after constructing the schedule and after every call of its
    ``step()``; :meth:`write` at the end. ``rows`` is plain data, so it can be kept
    in a checkpoint and restored.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    _decisions: int = 0

    def record(self, optimizer: Any, scheduler: Any) -> None:
        """Append the rates now in ``optimizer`` and the decision taken, if any."""
        row: dict[str, float] = {"call": float(len(self.rows))}
        for i, group in enumerate(optimizer.param_groups):
            row[f"lr_group{i}"] = float(group["lr"])
        adaptive = uncertainty_part(scheduler)
        signal = math.nan
        if adaptive is not None and adaptive.num_decisions > self._decisions:
            self._decisions = adaptive.num_decisions
            signal = float(next(iter(adaptive.last_signal.values()), math.nan))
        row["signal"] = signal
        self.rows.append(row)

    def state(self) -> dict[str, Any]:
        """Plain-data state (for checkpoints)."""
        return {"rows": self.rows, "decisions": self._decisions}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.rows = [dict(r) for r in state["rows"]]
        self._decisions = int(state["decisions"])

    def write(self, out_dir: str | Path) -> None:
        """Write ``lr_trace.csv`` into ``out_dir``."""
        atomic_write_csv(Path(out_dir) / TRACE_FILE, pd.DataFrame(self.rows))


def source_seed(settings: RunSettings) -> int:
    """The seed of the run a control reads: ``settings.source_seed`` for a
    cross-seed control, else the control's own seed.

    Raises:
        ConfigError: a cross-seed control without a ``source_seed`` (settings made
            by hand: ``uncertainty_lr_study.config.resolve_run`` sets it).
    """
    if SCHEDULERS[settings.scheduler].cross_seed:
        if settings.source_seed < 0:
            raise ConfigError(
                f"control {settings.scheduler!r} replays another seed's run: set "
                "source_seed to that seed (resolve_run sets it from the config)"
            )
        return settings.source_seed
    return settings.seed


def source_dir(settings: RunSettings, out_dir: str | Path) -> Path:
    """Folder of the run a control reads: the run beside ``out_dir`` in the
    pipeline's layout (:func:`uncertainty_lr_study.paths.sibling_run_dir`), with the
    source's scheduler and seed (:func:`source_seed`)."""
    spec = SCHEDULERS[settings.scheduler]
    return sibling_run_dir(out_dir, str(spec.source), source_seed(settings))


def load_control_input(settings: RunSettings, out_dir: str | Path) -> ControlInput:
    """What a control run needs from its source run, checked before any training.

    Args:
        settings: the control run's settings (``scheduler`` a control of the
            registry).
        out_dir: the control run's folder (its source is found beside it,
            :func:`source_dir`).

    Raises:
        ConfigError: the source run is missing or incomplete (the message names the
            run to make first), or it was made with other settings.
    """
    spec = SCHEDULERS[settings.scheduler]
    seed = source_seed(settings)
    src = source_dir(settings, out_dir)
    metrics_path, trace_path = src / "metrics.json", src / TRACE_FILE
    if not metrics_path.is_file() or not trace_path.is_file():
        raise ConfigError(
            f"control {settings.scheduler!r} reads the run {spec.source} of task "
            f"{settings.task!r}, seed {seed}, expected in {src} (metrics.json and "
            f"{TRACE_FILE}); run it first (the pipeline does: add {spec.source!r} to the "
            "task's schedulers)"
        )
    source = json.loads(metrics_path.read_text())
    mine = {**settings.to_dict(), "seed": seed}
    mine.pop("source_seed", None)
    theirs = dict(source.get("settings", {}))
    differ = sorted(
        k
        for k in mine
        if k not in SETTINGS_A_CONTROL_MAY_CHANGE and mine.get(k) != theirs.get(k)
    )
    if theirs.get("scheduler") != spec.source or differ:
        raise ConfigError(
            f"the run in {src} is not {spec.source} with this control's settings "
            f"(differs in: {', '.join(differ) or 'scheduler'}); rerun it with the same config"
        )
    trace = pd.read_csv(trace_path)
    groups = sorted(
        (c for c in trace.columns if c.startswith("lr_group")), key=lambda c: int(c[8:])
    )
    if trace.empty or not groups:
        raise ConfigError(f"{trace_path} has no learning rates; rerun {spec.source}")
    return ControlInput(
        lr_trace=trace[groups].to_numpy(float).tolist(),
        signals=trace["signal"].dropna().to_numpy(float).tolist(),
        source_params=dict(theirs.get("scheduler_params", {})),
        seed=settings.seed,
    )
