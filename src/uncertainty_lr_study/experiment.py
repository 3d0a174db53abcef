"""Entry points of one run, as called by ``notebooks/train.ipynb``.

The notebook holds no logic: it resolves its parameters with :func:`prepare_run`
and trains with :func:`run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uncertainty_lr_study.config import ConfigError, RunSettings, load_config, resolve_run
from uncertainty_lr_study.paths import notebook_run_dir, repo_root


def prepare_run(
    settings: dict[str, Any] | None = None,
    config_file: str | None = None,
    task: str | None = None,
    scheduler: str | None = None,
    seed: int | None = None,
) -> RunSettings:
    """Resolve the settings of one run, checking every parameter before any work.

    Either ``settings`` (a dict of :class:`RunSettings` fields, as the pipeline
    passes; it takes precedence over the other arguments) or ``config_file`` + ``task`` + ``scheduler`` + ``seed`` (as a user
    opening the notebook would) must be given. A relative ``config_file`` is taken
    from the repository root.

    Raises:
        ConfigError: wrong types, unknown names, or neither form given.
    """
    if settings is not None:
        if not isinstance(settings, dict):
            raise ConfigError(
                f"`settings` must be a mapping of run settings, got {type(settings).__name__}"
            )
        return RunSettings.from_dict(dict(settings))
    if None in (config_file, task, scheduler, seed):
        raise ConfigError(
            "give either `settings` or all of `config_file`, `task`, `scheduler` and `seed`"
        )
    problems = [
        f"{name} must be a string, got {value!r}"
        for name, value in (("config_file", config_file), ("task", task), ("scheduler", scheduler))
        if not isinstance(value, str)
    ]
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed must be an integer, got {seed!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    path = Path(config_file)
    if not path.is_absolute():
        path = repo_root() / path
    return resolve_run(load_config(path), task, scheduler, seed)


def default_out_dir(settings: RunSettings) -> Path:
    """Where a run started by hand writes: ``results/notebook/<task>/<scheduler>/seed<k>``."""
    return notebook_run_dir(settings.task, settings.scheduler, settings.seed)


def run(
    settings: RunSettings, out_dir: str | Path | None = None, progress: bool = False
) -> dict[str, Any]:
    """Train and evaluate one run and write its outputs into ``out_dir`` (default
    :func:`default_out_dir`; relative paths are taken from the repository root).

    The backend follows the model: ``transformer`` trains through Hugging Face
    ``Trainer`` (:func:`uncertainty_lr_study.engine.trainer.train_transformer`), as distributed
    data parallel in ``num_processes`` worker processes when that is > 1
    (:func:`uncertainty_lr_study.distributed.launch`); the others in the plain PyTorch loop
    (:func:`uncertainty_lr_study.engine.train_classifier`).
    Returns the run's metrics, with the folder written under ``"out_dir"``."""
    from uncertainty_lr_study.tasks import HF_MODELS  # noqa: PLC0415

    out = Path(out_dir) if out_dir is not None else default_out_dir(settings)
    if not out.is_absolute():
        out = repo_root() / out
    if settings.model in HF_MODELS and settings.num_processes > 1:
        import json  # noqa: PLC0415

        from uncertainty_lr_study.distributed import launch  # noqa: PLC0415
        from uncertainty_lr_study.engine.trainer import train_transformer  # noqa: PLC0415 (heavy)

        launch(train_transformer, settings, out, num_processes=settings.num_processes)
        metrics = json.loads((out / "metrics.json").read_text())  # written by rank 0
    elif settings.model in HF_MODELS:
        from uncertainty_lr_study.engine.trainer import train_transformer  # noqa: PLC0415 (heavy)

        metrics = train_transformer(settings, out, progress=progress)
    else:
        from uncertainty_lr_study.engine import train_classifier  # noqa: PLC0415 (heavy imports)

        metrics = train_classifier(settings, out, progress=progress)
    return {**metrics, "out_dir": str(out)}


def check_parameters(text: str) -> RunSettings:
    """Check papermill parameters (the YAML given to ``papermill -y``) before papermill
    starts a kernel: papermill itself checks no types.

    Args:
        text: YAML mapping with ``settings`` (a dict of :class:`RunSettings` fields),
            ``out_dir`` (str or null) and ``progress`` (bool).

    Returns:
        The checked settings.

    Raises:
        ConfigError: not a mapping, unknown keys, or a value of the wrong type (all
            listed).
    """
    import yaml  # noqa: PLC0415

    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"notebook parameters are not valid YAML: {err}") from err
    if not isinstance(params, dict):
        raise ConfigError(f"notebook parameters must be a mapping, got {type(params).__name__}")
    allowed = {"settings", "config_file", "task", "scheduler", "seed", "out_dir", "progress"}
    problems = [f"  - {k}: unknown parameter (valid: {', '.join(sorted(allowed))})" for k in params if k not in allowed]
    if not isinstance(params.get("out_dir"), (str, type(None))):
        problems.append(f"  - out_dir: expected a path or null, got {params['out_dir']!r}")
    if not isinstance(params.get("progress", False), bool):
        problems.append(f"  - progress: expected true or false, got {params['progress']!r}")
    if problems:
        raise ConfigError("invalid notebook parameters:\n" + "\n".join(problems))
    return prepare_run(
        params.get("settings"),
        params.get("config_file"),
        params.get("task"),
        params.get("scheduler"),
        params.get("seed"),
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m uncertainty_lr_study.experiment check-parameters YAML``; exit status 1
    with the problems on stderr (no traceback) when they are wrong."""
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415

    parser = argparse.ArgumentParser(description="checks of one run's notebook parameters")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check-parameters", help="check papermill -y parameters")
    check.add_argument("parameters", help="the YAML mapping given to papermill -y")
    args = parser.parse_args(argv)
    try:
        check_parameters(args.parameters)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
