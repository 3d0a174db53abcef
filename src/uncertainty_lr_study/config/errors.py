"""The error every config and run-settings check raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """The experiment config (or a run's settings) is invalid. The message lists
    every problem with its path in the config."""
