"""Experiment config: reading and schema validation (:mod:`.load`), the plan of runs
it makes (:mod:`.plan`), the settings of one run (:mod:`.settings`, where a run's
defaults live) and the checks the schema cannot make (:mod:`.checks`)."""

from uncertainty_lr_study.config.checks import preflight
from uncertainty_lr_study.config.errors import ConfigError
from uncertainty_lr_study.config.load import (
    MAX_CONFIG_BYTES,
    load_config,
    load_schema,
    schema_path,
    validate_config,
)
from uncertainty_lr_study.config.plan import (
    RUN_PRIORITY,
    planned_runs,
    run_priority,
    sensitivity_points,
    sensitivity_runs,
    sweep_label,
    task_schedulers,
    task_seeds,
)
from uncertainty_lr_study.config.settings import (
    RunSettings,
    cross_seed_source,
    resolve_run,
    resolve_sensitivity_run,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "RUN_PRIORITY",
    "ConfigError",
    "RunSettings",
    "cross_seed_source",
    "load_config",
    "load_schema",
    "planned_runs",
    "preflight",
    "resolve_run",
    "resolve_sensitivity_run",
    "run_priority",
    "schema_path",
    "sensitivity_points",
    "sensitivity_runs",
    "sweep_label",
    "task_schedulers",
    "task_seeds",
    "validate_config",
]
