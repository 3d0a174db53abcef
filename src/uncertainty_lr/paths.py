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


def run_dir(results_dir: str | Path, task: str, scheduler: str, seed: int) -> Path:
    """Folder of one run: ``<results>/runs/<task>/<scheduler>/seed<k>``."""
    return Path(results_dir) / "runs" / task / scheduler / f"seed{seed}"


def export_source_path() -> None:
    """Prepend this checkout's ``src`` folder to ``$PYTHONPATH`` of this process, so
    that every job the pipeline starts (in any environment: venv, conda) imports the
    project's own code."""
    src = str(Path(__file__).resolve().parents[1])
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != src]
    os.environ["PYTHONPATH"] = os.pathsep.join([src, *parts])
