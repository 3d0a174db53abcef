"""A run's checkpoint: the whole training state written atomically at the end of
every epoch of the plain backend, read back by a run started again with the same
settings; and whether a finished run keeps it."""

from __future__ import annotations

import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uncertainty_lr_study.config import RunSettings
from uncertainty_lr_study.io import atomic_open

log = logging.getLogger(__name__)


KEEP_CHECKPOINTS_VARIABLE = "UNCERTAINTY_LR_KEEP_CHECKPOINTS"

def keep_checkpoints_requested() -> bool:
    """Whether completed runs keep their checkpoint: the environment variable
    ``UNCERTAINTY_LR_KEEP_CHECKPOINTS=1``, which the pipeline's train rule sets from the
    config's ``keep_checkpoints``. (An environment variable, not a run setting: keeping
    a checkpoint changes no result, so it must not make Snakemake rerun a run.)"""
    return os.environ.get(KEEP_CHECKPOINTS_VARIABLE, "0") == "1"

CHECKPOINT_FORMAT = 2  # 2: with the learning-rate trace

CORRUPT_FILE_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
)
"""What ``torch.load(weights_only=True)`` raises on a truncated or foreign file."""

class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read; the message names it and the fix."""

def capture_rng(order_gen: torch.Generator) -> dict[str, Any]:
    """Random-number states as tensors and lists (``weights_only``-loadable)."""
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "order": order_gen.get_state(),
        "numpy": [np_name, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_cached)],
        "python": [py_version, list(py_state), py_gauss],
    }

def restore_rng(state: dict[str, Any], order_gen: torch.Generator) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    order_gen.set_state(state["order"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))

def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of ``state`` to ``path`` through :func:`uncertainty_lr_study.io.atomic_open`
    (a temporary file, fsynced, renamed onto ``path``).

    Raises:
        OSError: the checkpoint folder or file cannot be written.
    """
    with atomic_open(path, "wb") as f:
        torch.save(state, f)

def load_checkpoint(path: Path, settings: RunSettings, device: torch.device) -> dict | None:
    """The checkpoint at ``path`` if it belongs to these settings, else None.

    Raises:
        CheckpointError: the file exists but cannot be read as a checkpoint.
    """
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a checkpoint of this version")
    except CORRUPT_FILE_ERRORS as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); delete it to "
            "start the run from scratch"
        ) from err
    if not settings.same_run(state["settings"]):
        log.warning("checkpoint %s is of other settings: ignored, starting from scratch", path)
        return None
    return state
