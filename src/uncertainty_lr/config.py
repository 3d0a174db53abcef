"""Experiment config: loading, validation against the JSON Schema, and resolution
of the settings of one run (task x scheduler x seed)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from uncertainty_lr.paths import repo_root
from uncertainty_lr.schedulers import SCHEDULERS


class ConfigError(ValueError):
    """The experiment config (or a run's settings) is invalid. The message lists
    every problem with its path in the config."""


def schema_path() -> Path:
    """Path of the config's JSON Schema (``workflow/schemas/config.schema.yaml``)."""
    return repo_root() / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema as a dict."""
    return yaml.safe_load(schema_path().read_text())


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate an experiment config, fill in defaults, and return it.

    Every schema violation is collected (type, range, enum, unknown key, empty list)
    and reported in one :class:`ConfigError`, one line per problem with its path,
    e.g. ``tasks/mnist/lr: -0.1 is less than or equal to the minimum of 0``.

    Raises:
        ConfigError: listing all problems.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = []
    for err in errors:
        problems.append(f"  - {_path(err)}: {err.message}")
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )
    config.setdefault("device", "auto")
    config.setdefault("threads_per_run", 1)
    config.setdefault("schedule", {})
    config["schedule"].setdefault("scaling", "absolute")
    config["schedule"].setdefault("reference_epochs", 50)
    config.setdefault("scheduler_params", {})
    return config


def preflight(config: dict[str, Any]) -> None:
    """Checks of a validated config that the schema cannot make, before any job.

    - every ``scheduler_params`` entry builds its scheduler (unknown keys, values out
      of range: the registry's own errors);
    - accuracy targets lie in (0, 1];
    - ``train_subset`` does not exceed the training split;
    - local data files exist and match their checksums; a ``hub`` source has the
      ``datasets`` package.

    Raises:
        ConfigError: listing every problem with its path.
    """
    import importlib.util  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from uncertainty_lr.data.checksums import DataFileError  # noqa: PLC0415
    from uncertainty_lr.schedulers import build_scheduler  # noqa: PLC0415
    from uncertainty_lr.tasks import DATA_CHECKS, TRAIN_SIZES  # noqa: PLC0415

    problems = []
    for name, params in config.get("scheduler_params", {}).items():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        try:
            build_scheduler(name, optimizer, epochs=1, steps_per_epoch=1, **params)
        except (ValueError, TypeError) as err:
            problems.append(f"  - scheduler_params/{name}: {err}")
    checked = set()
    for task, t in config["tasks"].items():
        target = t["target"]
        if target["metric"] == "val_accuracy" and not 0 < target["value"] <= 1:
            problems.append(
                f"  - tasks/{task}/target/value: an accuracy target must lie in (0, 1], "
                f"got {target['value']}"
            )
        size = TRAIN_SIZES.get(t["dataset"])
        if size is not None and t.get("train_subset", 0) > size:
            problems.append(
                f"  - tasks/{task}/train_subset: {t['train_subset']} exceeds the {size:,} "
                f"training examples of {t['dataset']}; use 0 for all"
            )
        source = t.get("data_source", "local")
        if source == "hub" and importlib.util.find_spec("datasets") is None:
            problems.append(
                f"  - tasks/{task}/data_source: 'hub' needs the `datasets` package "
                "(pip install datasets) and network access; use 'local' offline"
            )
        elif source == "local" and t["dataset"] not in checked:
            checked.add(t["dataset"])
            try:
                DATA_CHECKS[t["dataset"]]()
            except DataFileError as err:
                problems.append(f"  - tasks/{task}/dataset: {err}")
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (:func:`validate_config`).

    Raises:
        ConfigError: the file is missing, not YAML, or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    return validate_config(config)


@dataclass
class RunSettings:
    """Everything one training run needs; the parameters of ``notebooks/train.ipynb``.

    Times are in epochs unless the name says steps. See ``config.schema.yaml`` for
    the meaning of each field.
    """

    task: str
    dataset: str
    model: str
    scheduler: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    target_metric: str
    target_value: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    data_source: str = "local"
    eval_every_steps: int = 0
    sample_every_steps: int = 50
    train_subset: int = 0
    scheduler_params: dict[str, float] = field(default_factory=dict)
    scaling: str = "absolute"
    reference_epochs: int = 50
    device: str = "auto"
    num_threads: int = 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """Build from a mapping, checking names and types of every field.

        Raises:
            ConfigError: unknown or missing fields, or a value of the wrong type
                (all listed at once).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"run settings must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        problems = [
            f"  - {k}: unknown field (valid: {', '.join(known)})" for k in data if k not in known
        ]
        for name, f in known.items():
            if name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    problems.append(f"  - {name}: missing")
                continue
            value, expected = data[name], f.type
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                "str": isinstance(value, str),
                "dict[str, float]": isinstance(value, dict),
            }[expected]
            if not ok:
                problems.append(f"  - {name}: expected {expected}, got {value!r}")
        if data.get("scheduler") not in SCHEDULERS and "scheduler" in data:
            problems.append(
                f"  - scheduler: unknown {data['scheduler']!r} (valid: {', '.join(SCHEDULERS)})"
            )
        if problems:
            raise ConfigError("invalid run settings:\n" + "\n".join(problems))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML-serialisable)."""
        return asdict(self)


def resolve_run(config: dict[str, Any], task: str, scheduler: str, seed: int) -> RunSettings:
    """Settings of one run of a validated config.

    Raises:
        ConfigError: the task, scheduler or seed is not in the config.
    """
    if task not in config["tasks"]:
        raise ConfigError(f"unknown task {task!r}; the config has: {', '.join(config['tasks'])}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    if scheduler not in config["schedulers"]:
        raise ConfigError(
            f"scheduler {scheduler!r} is not in the config's list: {', '.join(config['schedulers'])}"
        )
    t = config["tasks"][task]
    return RunSettings(
        task=task,
        dataset=t["dataset"],
        model=t["model"],
        scheduler=scheduler,
        seed=int(seed),
        epochs=int(t["epochs"]),  # the schema admits 3.0 as an integer
        lr=float(t["lr"]),
        batch_size=int(t["batch_size"]),
        target_metric=t["target"]["metric"],
        target_value=float(t["target"]["value"]),
        optimizer=t.get("optimizer", "adam"),
        weight_decay=float(t.get("weight_decay", 0.0)),
        data_source=t.get("data_source", "local"),
        eval_every_steps=int(t.get("eval_every_steps", 0)),
        sample_every_steps=int(t.get("sample_every_steps", 50)),
        train_subset=int(t.get("train_subset", 0)),
        scheduler_params=dict(config["scheduler_params"].get(scheduler, {})),
        scaling=config["schedule"]["scaling"],
        reference_epochs=config["schedule"]["reference_epochs"],
        device=config["device"],
        num_threads=int(config["threads_per_run"]),
    )
