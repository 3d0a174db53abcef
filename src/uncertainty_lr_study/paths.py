"""Every file-system location the project uses, in one place.

All paths are derived from the repository root, which is the working directory of
the pipeline by default and can be overridden with the ``UNCERTAINTY_LR_ROOT``
environment variable (for example when the package is installed elsewhere and run
from a notebook in another folder).
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """Return the repository root.

    Resolution order: ``$UNCERTAINTY_LR_ROOT``; the nearest parent of the current
    directory that holds a ``Snakefile``; the source checkout this module lives in.
    """
    env = os.environ.get("UNCERTAINTY_LR_ROOT")
    if env:
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "Snakefile").is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


def raw_data_dir() -> Path:
    """Folder of the vendored real data sets (``data/raw``)."""
    return repo_root() / "data" / "raw"


def datasets_cache_dir() -> Path:
    """Cache of the Hugging Face ``datasets`` the study builds from the vendored files
    (the Arrow copies and every ``Dataset.map`` tokenisation; ``data/cache/datasets``,
    or ``$UNCERTAINTY_LR_DATASETS_CACHE``). Deleting it costs one re-tokenisation."""
    env = os.environ.get("UNCERTAINTY_LR_DATASETS_CACHE")
    return Path(env).resolve() if env else repo_root() / "data" / "cache" / "datasets"


RUN_FILES = ("metrics.json", "history.csv", "lr_trace.csv", "train.ipynb")
"""The files of one run folder, as the pipeline's ``train`` rules declare them."""


def run_dir(results_dir: str | Path, task: str, scheduler: str, seed: int | str) -> Path:
    """Folder of one run: ``<results>/runs/<task>/<scheduler>/seed<k>``.

    The one place the run layout is written: the Snakefile's rules (called with
    wildcard patterns such as ``"{task}"``), the controls (:func:`sibling_run_dir`),
    the aggregate's inputs and the explore notebook all call it.
    """
    return Path(results_dir) / "runs" / task / scheduler / f"seed{seed}"


def sibling_run_dir(out_dir: str | Path, scheduler: str, seed: int) -> Path:
    """The folder of another run of the same task and results folder as the run in
    ``out_dir`` (a :func:`run_dir`): ``scheduler`` on ``seed``, e.g. a control's
    source run."""
    out = Path(out_dir)
    return run_dir(out.parents[2].parent, out.parents[1].name, scheduler, seed)


def sweep_run_dir(
    results_dir: str | Path, task: str, scheduler: str, label: str, seed: int | str
) -> Path:
    """Folder of one run of the sensitivity sweep:
    ``<results>/sensitivity/<task>/<scheduler>/<label>/seed<k>``."""
    return Path(results_dir) / "sensitivity" / task / scheduler / label / f"seed{seed}"


def job_log(results_dir: str | Path, run: Path) -> Path:
    """A training job's log: ``<results>/logs/`` + the run folder below the results
    folder (``train/...`` for runs, ``sensitivity/...`` for the sweep) + ``.log``."""
    return _beside(results_dir, run, "logs").with_suffix(".log")


def job_benchmark(results_dir: str | Path, run: Path) -> Path:
    """A training job's Snakemake benchmark file (its wall seconds):
    ``<results>/benchmarks/`` + the run folder as in :func:`job_log` + ``.tsv``."""
    return _beside(results_dir, run, "benchmarks").with_suffix(".tsv")


def _beside(results_dir: str | Path, run: Path, folder: str) -> Path:
    rel = Path(run).relative_to(results_dir)
    kind = "train" if rel.parts[0] == "runs" else rel.parts[0]
    return Path(results_dir) / folder / kind / Path(*rel.parts[1:])


def aggregate_dir(results_dir: str | Path) -> Path:
    """The aggregate tables' folder: ``<results>/aggregate``."""
    return Path(results_dir) / "aggregate"


def notebook_run_dir(task: str, scheduler: str, seed: int) -> Path:
    """Where a run started by hand from the notebook writes (relative to the
    repository root): ``results/notebook/<task>/<scheduler>/seed<k>``."""
    return Path("results") / "notebook" / task / scheduler / f"seed{seed}"


def export_source_path() -> None:
    """Prepend this checkout's ``src`` folder to ``$PYTHONPATH`` of this process, so
    that every job the pipeline starts (in any environment: venv, conda) imports the
    project's own code."""
    src = str(Path(__file__).resolve().parents[1])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
