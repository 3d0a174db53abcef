"""Check an experiment config before Snakemake reads it.

``python -m uncertainty_lr_study.check_config FILE`` reads FILE as plain YAML (never as a
template), validates it (:func:`uncertainty_lr_study.config.load_config`) and runs the
preflight (:func:`uncertainty_lr_study.config.preflight`): exit status 0 and one line
when the config is fine, 2 and every problem otherwise. ``make run``,
``make smoke`` and ``make paper-config`` run it before Snakemake, because Snakemake
itself evaluates a config file that sets ``__use_yte__: true`` as a YTE template
(Python expressions) when it loads it, before the workflow can refuse it.
"""

from __future__ import annotations

import argparse
import sys

from uncertainty_lr_study.config import ConfigError, load_config, preflight


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 fine, 2 refused)."""
    parser = argparse.ArgumentParser(prog="python -m uncertainty_lr_study.check_config")
    parser.add_argument("configfile", nargs="+", help="experiment config(s), YAML or JSON")
    args = parser.parse_args(argv)
    status = 0
    for path in args.configfile:
        try:
            preflight(load_config(path))
        except ConfigError as err:
            print(f"error: {path}: {err}", file=sys.stderr)
            status = 2
        else:
            print(f"{path}: valid")
    return status


if __name__ == "__main__":
    sys.exit(main())
