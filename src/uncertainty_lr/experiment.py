"""Entry points of one run, as called by ``notebooks/train.ipynb``.

The notebook holds no logic: it resolves its parameters with :func:`prepare_run`
and trains with :func:`run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uncertainty_lr.config import ConfigError, RunSettings, load_config, resolve_run
from uncertainty_lr.paths import repo_root


def prepare_run(
    settings: dict[str, Any] | None = None,
    config_file: str | None = None,
    task: str | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
) -> RunSettings:
    """Resolve the settings of one run, checking every parameter before any work.

    Either ``settings`` (a dict of :class:`RunSettings` fields, as the pipeline
    passes) or ``config_file`` + ``task`` + ``scheduler`` + ``seed`` (as a user
    opening the notebook would) must be given. A relative ``config_file`` is taken
    from the repository root.

    Raises:
        ConfigError: wrong types, unknown names, or neither form given.
    """
    if settings is not None:
        return RunSettings.from_dict(dict(settings))
    if None in (config_file, task, scheduler, seed):
        raise ConfigError(
            "give either `settings` or all of `config_file`, `task`, `scheduler` and `seed`"
        )
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    path = Path(config_file)
    if not path.is_absolute():
        path = repo_root() / path
    return resolve_run(load_config(path), task, scheduler, seed)


def default_out_dir(settings: RunSettings) -> Path:
    """Where a run started by hand writes: ``results/notebook/<task>/<scheduler>/seed<k>``."""
    return (
        Path("results") / "notebook" / settings.task / settings.scheduler / f"seed{settings.seed}"
    )


def run(
    settings: RunSettings, out_dir: str | Path | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train and evaluate one run and write its outputs into ``out_dir`` (default
    :func:`default_out_dir`; relative paths are taken from the repository root).
    Returns the run's metrics, with the folder written under ``"out_dir"``."""
    from uncertainty_lr.training import train_classifier  # noqa: PLC0415 (heavy imports)

    out = Path(out_dir) if out_dir is not None else default_out_dir(settings)
    if not out.is_absolute():
        out = repo_root() / out
    metrics = train_classifier(settings, out, progress=progress)
    return {**metrics, "out_dir": str(out)}
