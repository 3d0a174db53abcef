# uncertainty-lr: the study as a Snakemake workflow.
#   snakemake --cores all                          default config (CPU, offline)
#   snakemake --cores all --configfile config/paper.yaml    full spec (GPU)
# Data flow: train (one papermill notebook per task x scheduler x seed) -> aggregate
# -> figures + tables -> paper/main.pdf. The config is validated before any job runs.

import os
import sys

sys.path.insert(0, os.path.abspath("src"))  # the project, also where it is not installed

import yaml
from snakemake.exceptions import WorkflowError

from uncertainty_lr_study.config import (
    ConfigError,
    planned_runs,
    preflight,
    sensitivity_runs,
    validate_config,
)
from uncertainty_lr_study.paths import aggregate_dir, export_source_path

# The default config, unless one is given with --configfile (the `configfile:`
# directive would merge the two, leaking the default's tasks into other configs).
# Values given with --config still override the default's top-level keys.
if not workflow.overwrite_configfiles:
    with open("config/config.yaml") as f:
        config.update({**yaml.safe_load(f), **config})

try:
    validate_config(config)
    preflight(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

# Jobs import the project from src/ whichever environment runs them (venv or conda).
export_source_path()
# `offline: true` travels in each run's settings: the job sets HF_HUB_OFFLINE itself.

RESULTS = config["results_dir"]
AGGREGATE = str(aggregate_dir(RESULTS))
RUNS = planned_runs(config)  # task x scheduler x seed (a task may reduce its grid)
SENSITIVITY_RUNS = sensitivity_runs(config)  # task x scheduler x point x seed


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/paper.smk"


localrules:
    all,
    aggregate,
    aggregate_sensitivity,
    figures,
    tables,
    paper,


rule all:
    default_target: True
    input:
        "paper/main.pdf",
