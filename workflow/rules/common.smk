# Helpers of the rules: parameters derived from the validated config.

import math
import os

import yaml

from uncertainty_lr_study import paths

from uncertainty_lr_study.config import resolve_run, resolve_sensitivity_run, run_priority


def run_parameters(wildcards):
    """Papermill parameters (YAML, one line) of one run: settings and out_dir.

    YAML, not JSON: papermill reads ``-y`` with PyYAML (YAML 1.1), which takes a JSON
    float such as ``5e-05`` for a string; PyYAML's own dump writes ``5.0e-05``.

    A function of the wildcards only: Snakemake does not track params derived from a
    rule's input or output, and these must be tracked, so that a changed config
    reruns the runs it changes."""
    settings = resolve_run(config, wildcards.task, wildcards.scheduler, int(wildcards.seed))
    out_dir = paths.run_dir(RESULTS, wildcards.task, wildcards.scheduler, wildcards.seed)
    return _papermill_yaml(settings, str(out_dir))


def _papermill_yaml(settings, out_dir):
    """One-line YAML of a run's papermill parameters."""
    parameters = {"settings": settings.to_dict(), "out_dir": out_dir, "progress": False}
    return yaml.safe_dump(parameters, default_flow_style=True, width=math.inf, sort_keys=False).strip()


def sensitivity_parameters(wildcards):
    """Papermill parameters of one run of the sensitivity sweep (as run_parameters)."""
    settings = resolve_sensitivity_run(
        config, wildcards.scheduler, wildcards.label, int(wildcards.seed)
    )
    out_dir = paths.sweep_run_dir(
        RESULTS, wildcards.task, wildcards.scheduler, wildcards.label, wildcards.seed
    )
    return _papermill_yaml(settings, str(out_dir))


def train_priority(wildcards):
    """Priority of a training job: the longest runs first (``run_priority``)."""
    return run_priority(config, wildcards.task)


def control_source(wildcards):
    """Input of a control run: the learning-rate trace of its source run (the same
    task, ``ScheduleSpec.source``; the same seed, or the next one for a cross-seed
    control: ``uncertainty_lr_study.controls.source_seed``); nothing for other schedules."""
    from uncertainty_lr_study.controls import source_seed
    from uncertainty_lr_study.registry import SCHEDULERS

    spec = SCHEDULERS.get(wildcards.scheduler)
    if spec is None or spec.source is None:
        return []
    settings = resolve_run(config, wildcards.task, wildcards.scheduler, int(wildcards.seed))
    seed = source_seed(settings)
    return [str(paths.run_dir(RESULTS, wildcards.task, spec.source, seed) / "lr_trace.csv")]


def run_outputs(run):
    """The named output files of a training rule whose run folder is ``run`` (a
    pattern of :mod:`uncertainty_lr_study.paths`): ``paths.RUN_FILES``."""
    names = {"metrics.json": "metrics", "history.csv": "history", "lr_trace.csv": "trace",
             "train.ipynb": "notebook"}
    return {names[f]: str(run / f) for f in paths.RUN_FILES}


def folder_of(name):
    """A params function: the folder of the rule's output or input file ``name``."""

    def get(wildcards, input, output):
        files = output if name in output.keys() else input
        return os.path.dirname(getattr(files, name))

    return get
