"""Fetch everything a config needs onto local disk, so that its jobs run offline.

Run it on a machine with network access (a cluster's login node)::

    python -m uncertainty_lr_study.prepare --configfile config/paper.yaml

It checks the vendored data files (``data/raw``), loads every ``data_source: hub``
data set once (into the Hugging Face ``datasets`` cache), and saves every transformer
task's ``pretrained`` checkpoint that has no local copy into ``data/models/<id>``
(``/`` in the id becomes ``__``), where :func:`uncertainty_lr_study.pretrained.resolve_pretrained`
finds it with ``HF_HUB_OFFLINE=1``. What is already local is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uncertainty_lr_study.config import ConfigError, load_config
from uncertainty_lr_study.data.checksums import DataFileError
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.pretrained import (
    PretrainedError,
    local_folder_name,
    models_dir,
    resolve_pretrained,
)
from uncertainty_lr_study.tasks import DATA_SETS, HF_MODELS


def prepare(config_file: str | Path) -> list[str]:
    """Make every data set and checkpoint of a config available offline.

    Args:
        config_file: an experiment config (relative paths from the repository root).

    Returns:
        One line per item: what was found or fetched, and where.

    Raises:
        ConfigError: invalid config.
        DataFileError: a vendored file is missing or corrupt.
        OSError: a download failed (no network).
    """
    path = Path(config_file)
    config = load_config(path if path.is_absolute() else repo_root() / path)
    report, verified = [], set()
    for name, task in config["tasks"].items():
        source = task.get("data_source", "local")
        if (task["dataset"], source) in verified:
            pass
        elif source == "local":
            DATA_SETS[task["dataset"]].verify()
            report.append(f"{name}: data {task['dataset']} vendored and verified")
        else:
            try:
                import datasets  # noqa: PLC0415 (optional)
            except ImportError as err:
                raise ConfigError(
                    f"tasks/{name}/data_source: 'hub' needs the `datasets` package "
                    "(pip install datasets)"
                ) from err
            datasets.load_dataset(task["dataset"])
            report.append(f"{name}: data {task['dataset']} in the datasets cache")
        verified.add((task["dataset"], source))
        if task["model"] not in HF_MODELS:
            continue
        model_id = task.get("pretrained")
        if not model_id:
            raise ConfigError(f"tasks/{name}/pretrained: model 'transformer' needs a checkpoint")
        found = resolve_pretrained(model_id, offline=False)
        if found != model_id:
            report.append(f"{name}: model {model_id} found at {found}")
            continue
        from transformers import AutoModel, AutoTokenizer  # noqa: PLC0415

        target = models_dir() / local_folder_name(model_id)
        try:
            AutoTokenizer.from_pretrained(model_id).save_pretrained(target)
            AutoModel.from_pretrained(model_id).save_pretrained(target)
        except (OSError, ValueError) as err:
            raise OSError(
                f"tasks/{name}/pretrained: cannot fetch {model_id!r} from the hub ({err}); "
                "run this where the hub is reachable, or give a local folder"
            ) from err
        report.append(f"{name}: model {model_id} saved to {target}")
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m uncertainty_lr_study.prepare [--configfile PATH]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", default="config/config.yaml", help="experiment config")
    args = parser.parse_args(argv)
    try:
        for line in prepare(args.configfile):
            print(line)
    except (ConfigError, DataFileError, PretrainedError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
