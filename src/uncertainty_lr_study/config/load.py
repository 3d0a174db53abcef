"""Reading a config: plain YAML, the raw-input guards, the JSON Schema (with the
defaults it states), the results folder's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from uncertainty_lr_study.config.errors import ConfigError
from uncertainty_lr_study.config_guard import (
    input_problems,
    results_dir_problems,
    short_repr,
    symlink_problems,
)
from uncertainty_lr_study.paths import repo_root

MAX_CONFIG_BYTES = 1_000_000
"""Largest config file read (the study's largest is about 5 kB)."""


def schema_path() -> Path:
    """Path of the config's JSON Schema (``workflow/schemas/config.schema.yaml``)."""
    return repo_root() / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema as a dict."""
    return yaml.safe_load(schema_path().read_text())


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error: jsonschema.ValidationError, limit: int = 300) -> str:
    """A schema error's message: the schema's own ``x-message`` after the value
    where it has one (a pattern says what is allowed), else jsonschema's; cut to
    ``limit`` characters, since it quotes the offending value."""
    if error.context:  # oneOf / anyOf: the branch that came closest says why
        error = jsonschema.exceptions.best_match(error.context)
    hint = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    message = f"{short_repr(error.instance)} {hint}" if hint else error.message
    return message if len(message) <= limit else f"{message[:limit]}... (cut)"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate an experiment config, fill in defaults, and return it.

    First the raw-input guards of :mod:`uncertainty_lr_study.config_guard` (bounded size,
    no YTE template, every number finite); then every schema violation is collected
    (type, range, enum, unknown key, empty list); then the results folder's path.
    All are reported in one :class:`ConfigError`, one line per problem with its
    path, e.g. ``tasks/mnist/lr: -0.1 is less than or equal to the minimum of 0``;
    quoted values are cut short.

    Raises:
        ConfigError: listing all problems.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    problems = input_problems(config)  # bounded size first: the schema walks it all
    if not problems:
        validator = jsonschema.Draft202012Validator(load_schema())
        errors = sorted(
            validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))
        )
        problems = [f"  - {_path(err)}: {_message(err)}" for err in errors]
    if not problems:
        problems = results_dir_problems(config, repo_root())
    if not problems:
        problems = symlink_problems(config, repo_root())
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )
    config.setdefault("device", "auto")
    config.setdefault("threads_per_run", 1)
    config.setdefault("offline", True)
    config.setdefault("processes_per_run", 1)
    config.setdefault("keep_checkpoints", False)
    config.setdefault("schedule", {})
    config["schedule"].setdefault("scaling", "absolute")
    config["schedule"].setdefault("reference_epochs", 50)
    config.setdefault("scheduler_params", {})
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (:func:`validate_config`).

    Read as plain YAML (``yaml.safe_load``: no Python objects, no templates); a
    file over :data:`MAX_CONFIG_BYTES` is refused unread.

    Raises:
        ConfigError: the file is missing, too large, not UTF-8, not YAML, or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} has {path.stat().st_size:,} bytes; a config is at most "
            f"{MAX_CONFIG_BYTES:,} (is it the right file?)"
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests lists or mappings too deeply to read; a config "
            "needs a few levels"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err)[:500]}") from None
    return validate_config(config)
