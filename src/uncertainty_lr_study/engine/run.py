"""What every training run shares, whichever backend trains it: the device, seeds and
deterministic kernels, glibc's memory setting, the optimizer, the divergence checks,
the progress lines, the ``metrics.json`` record, and the end of a run (its outputs
written, its checkpoint removed)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import platform
import random
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import uncertainty_lr
from uncertainty_lr import uncertainty_part
from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.controls import TraceRecorder
from uncertainty_lr_study.engine.checkpoint import keep_checkpoints_requested
from uncertainty_lr_study.io import atomic_write_csv, atomic_write_json, finite_or_none
from uncertainty_lr_study.metrics import time_to_target
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.precision import cpu_kind
from uncertainty_lr_study.registry import SCHEDULERS, build_peer_optimizer, effective_lrs
from uncertainty_lr_study.tasks import DATA_SETS

log = logging.getLogger(__name__)

HISTORY_COLUMNS = (
    "kind",
    "step",
    "epoch",
    "seconds",
    "lr",
    "train_loss",
    "grad_norm",
    "predictive_variance",
    "val_loss",
    "val_accuracy",
    "val_exact_match",
    "val_f1",
)
"""Column order of ``history.csv`` (an output contract of both backends: the plain
backend writes its rows in it, the Trainer backend orders its columns by it)."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error.

    Raises:
        ConfigError: ``"cuda"`` requested but unavailable, or an unknown name.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is visible; use 'auto' or 'cpu'")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)

def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

def use_deterministic_kernels() -> None:
    """Make a run repeat itself exactly on the GPU too, as the controls need.

    A replay control (:class:`uncertainty_lr_study.registry.ReplayLR`) is compared with
    the run whose learning rates it replays; any difference must come from the
    schedule, not from kernels that sum in a different order on each call. On the
    CPU the runs already repeat bit for bit. On CUDA, cuDNN's autotuner and some
    kernels (convolution backward, cuBLAS with its default workspace) do not: a GPU
    check of this code (H200, torch 2.11) gave replays that differed from their
    sources by up to 0.13 accuracy points on MNIST. This sets cuDNN to deterministic
    algorithms without autotuning, cuBLAS to a fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, unless already set; it must be set before
    the first cuBLAS call, so call this before any CUDA work), and
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: an operation with
    no deterministic implementation warns instead of failing the run. See PyTorch's
    "Reproducibility" notes. That mode also fills every new uninitialised tensor
    (``torch.empty``) with NaN, tens of fills per LeNet-5 step; torch's documentation
    of ``torch.utils.deterministic.fill_uninitialized_memory`` says a program that
    never reads uninitialised memory stays deterministic without them, so they are
    turned off (a run's results are the same bit for bit; see
    ``benchmarks/bench_epoch.py`` for the time).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False

REUSE_TRIM_THRESHOLD = 256 * 2**20
"""Bytes of free memory glibc may keep at the top of the heap before it gives any
back to the system (:func:`reuse_freed_memory`; twice the 128 MiB that already kept
the LSTM's faults to a few hundred per step)."""

def reuse_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep the memory a training step frees for the next step.

    By default glibc serves large blocks (above 128 KiB, a threshold it raises up to
    32 MiB) with ``mmap`` and unmaps them when freed, and gives the top of the heap
    back to the system once more than twice that threshold of it is free; so the
    next step's tensors of the same sizes are mapped again and fault their pages in
    anew. Measured here: 200-500 page faults per LeNet-5 step in a loop of steps,
    12,000 per LSTM step (its buffers exceed 32 MiB), the kernel's time for them
    15-20% of the LSTM step. With this setting every block comes from the heap
    (``M_MMAP_MAX = 0``) and up to :data:`REUSE_TRIM_THRESHOLD` bytes of free heap
    are kept (``M_TRIM_THRESHOLD``): a few hundred faults per LSTM step, none per
    LeNet-5 step. It changes where tensors lie, not what is computed: results are
    the same. Made after the data set is loaded (the heap would keep its
    temporaries), it left a tiny MNIST run's peak memory as it was and raised a
    tiny LSTM run's by 2-8% (20-80 MB of 1 GB). A process-wide setting; nothing is
    changed where the C library is not glibc.

    Returns:
        Whether the setting was made (glibc found).
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(
        libc.mallopt(m_trim_threshold, REUSE_TRIM_THRESHOLD)
    )

def finite_lrs(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group's learning rate (as logged,
    :func:`uncertainty_lr_study.registry.effective_lrs`) is a finite number."""
    return all(math.isfinite(lr) for lr in effective_lrs(optimizer))

def finite_evaluation(row: dict[str, Any]) -> bool:
    """Whether an evaluation's validation values (the row's ``val_*`` entries:
    loss and metrics) are all finite; a run whose evaluation is not has diverged."""
    return all(math.isfinite(float(v)) for k, v in row.items() if k.startswith("val_"))

def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None

def _versions() -> dict[str, str]:
    import torchmetrics  # noqa: PLC0415

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchmetrics": torchmetrics.__version__,
        "numpy": np.__version__,
        "uncertainty_lr": uncertainty_lr.__version__,
    }

def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the peak resident set of this process.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def summarise_run(
    s: RunSettings,
    *,
    history: pd.DataFrame,
    status: str,
    diverged_epoch: float | None,
    resumed_from_epoch: float | None,
    test: dict[str, Any] | None,
    steps: int,
    steps_per_epoch: int,
    train_examples: int,
    val_examples: int,
    test_examples: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    wall_seconds: float,
    train_seconds: float,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, Any]:
    """The ``metrics.json`` record of a run, shared by both training backends.

    Args:
        s: the run's settings.
        history: the run's history rows (``kind`` ``"eval"`` rows carry ``step``,
            ``epoch``, ``seconds``, ``val_loss`` and the data set's validation metrics,
            :attr:`uncertainty_lr_study.tasks.DataSet.val_metrics`: ``val_accuracy``, or
            ``val_exact_match`` and ``val_f1``).
        status: ``"completed"`` or ``"diverged"``.
        diverged_epoch: fractional epoch of the divergence, or None.
        resumed_from_epoch: epoch the run resumed from a checkpoint, or None.
        test: test-set metrics (None when the run diverged).
        steps, steps_per_epoch, train_examples: the run's length.
        val_examples, test_examples: sizes of the evaluated validation and test sets.
        optimizer, scheduler: their final state gives the final LR and the
            decisions of an :class:`UncertaintyLR`.
        wall_seconds: the whole run, data loading and test included (seconds).
        train_seconds: the training loop with its evaluations (seconds).
        device: where it ran (device-hours count GPUs on CUDA, threads on CPU).
        precision: the precision it computed in (``"fp32"``, ``"bf16"``; the plain
            backend: always ``"fp32"``), beside the settings' ``precision_requested``.

    Returns:
        The record, with every non-finite number (a diverged run's last
        validation loss, a non-finite learning rate or setting) as None, as
        :func:`uncertainty_lr_study.io.atomic_write_json` writes it.
    """
    evals = history[history["kind"] == "eval"]
    ttt = time_to_target(
        evals[s.target_metric].tolist(),
        s.target_value,
        evals["step"].tolist(),
        evals["epoch"].tolist(),
        evals["seconds"].tolist(),
        mode="min" if s.target_metric == "val_loss" else "max",
    )
    units = 1 if device.type == "cuda" else s.num_threads
    last_eval = evals.iloc[-1]
    score_names = [m for m in DATA_SETS[s.dataset].val_metrics if f"val_{m}" in evals]
    adaptive = uncertainty_part(scheduler)
    return finite_or_none({
        "task": s.task,
        "dataset": s.dataset,
        "model": s.model,
        "scheduler": s.scheduler,
        "seed": s.seed,
        "status": status,
        "diverged_at_epoch": diverged_epoch,
        "resumed_from_epoch": resumed_from_epoch,
        "test": test,
        "final_val": {
            "loss": float(last_eval["val_loss"]),
            **{m: float(last_eval[f"val_{m}"]) for m in score_names},
        },
        "best_val": {m: float(evals[f"val_{m}"].max()) for m in score_names},
        "best_val_accuracy": (
            float(evals["val_accuracy"].max()) if "val_accuracy" in evals else None
        ),
        "time_to_target": {"metric": s.target_metric, "target": s.target_value, **ttt},
        "history_rows": len(history),
        "steps": steps,
        "epochs_completed": float(steps / steps_per_epoch),
        "steps_per_epoch": steps_per_epoch,
        "train_examples": train_examples,
        "val_examples": val_examples,
        "test_examples": test_examples,
        "final_lr": [float(g["lr"]) for g in optimizer.param_groups],
        "lr_decisions": (
            {
                "decreases": adaptive.num_decreases,
                "increases": adaptive.num_increases,
                "nonfinite_signals": adaptive.num_nonfinite,
            }
            if adaptive is not None
            else None
        ),
        "wall_seconds": wall_seconds,
        "train_seconds": train_seconds,
        "device": str(device),
        "precision": precision,
        "precision_requested": s.precision,
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
        "num_threads": s.num_threads,
        "device_hours": wall_seconds * units / 3600.0,
        "device_hours_unit": "gpu-hours" if device.type == "cuda" else "cpu-core-hours",
        "peak_memory_mb": _peak_memory_mb(device),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "host": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "cpu": cpu_kind(),
            "argv0": Path(sys.argv[0]).name,
        },
        "settings": s.to_dict(),
    })

def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups for decoupled weight decay: ``weight_decay`` on the weights
    with 2 or more dimensions, none on biases and normalisation weights (as usual
    for transformers); trainable parameters only, empty groups left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]

def build_optimizer(
    s: RunSettings, model: torch.nn.Module, run_steps: int = 0, warmup_steps: int | None = None
) -> torch.optim.Optimizer:
    """The run's optimizer: ``adam`` (``torch.optim.Adam``, L2 ``weight_decay``) or
    ``adamw`` (``torch.optim.AdamW``, decoupled weight decay; Loshchilov & Hutter
    2019, :func:`decay_groups`). A schedule that brings its own optimizer
    (Schedule-Free, Prodigy: ``ScheduleSpec.optimizer``) replaces it, with the same
    decoupled weight decay groups (:func:`uncertainty_lr_study.registry.build_peer_optimizer`).

    Adam and AdamW use torch's multi-tensor implementation (``foreach=True``), which
    torch picks by itself only on CUDA. On the CPU it gives the same numbers, bit for
    bit, as the per-parameter loop torch would otherwise use there, at a fraction of
    the cost (8-10 ms instead of 19-20 ms per step for the LSTM with its
    2.6M-parameter embedding; ``benchmarks/bench_epoch.py``). ``fused=True`` would be faster still,
    but it rounds differently: results would change.

    Args:
        s: the run's settings.
        model: the model whose parameters are optimised.
        run_steps: the run's length in optimizer steps (a replacing optimizer's
            warmup is a fraction of it).
        warmup_steps: the task's warmup in optimizer steps (default: the settings'
            ``warmup_steps``; the Trainer backend passes the one ``warmup_ratio``
            gives).

    Raises:
        ConfigError: an unknown optimizer name, or a replacing optimizer's bad
            hyperparameters.
    """
    spec = SCHEDULERS[s.scheduler]
    if spec.replaces_optimizer:
        try:
            return build_peer_optimizer(
                s.scheduler,
                decay_groups(model, s.weight_decay),
                lr=s.lr,
                run_steps=max(run_steps, 1),
                warmup_steps=s.warmup_steps if warmup_steps is None else warmup_steps,
                **s.scheduler_params,
            )
        except ValueError as err:
            raise ConfigError(str(err)) from err
    if s.optimizer == "adam":
        return torch.optim.Adam(
            model.parameters(), lr=s.lr, weight_decay=s.weight_decay, foreach=True
        )
    if s.optimizer == "adamw":
        return torch.optim.AdamW(decay_groups(model, s.weight_decay), lr=s.lr, foreach=True)
    raise ConfigError(f"unknown optimizer {s.optimizer!r}; valid: adam, adamw")


def lr_columns(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning-rate columns of a history row: ``lr`` (the first group's step
    size, :func:`uncertainty_lr_study.registry.effective_lrs`) and, with several
    parameter groups, ``lr_group<i>`` for each."""
    current = effective_lrs(optimizer)
    out = {"lr": current[0]}
    if len(current) > 1:
        out.update({f"lr_group{i}": lr for i, lr in enumerate(current)})
    return out


def write_outputs(
    out_dir: Path,
    history: pd.DataFrame,
    trace: TraceRecorder,
    metrics: dict[str, Any],
    checkpoint: Path,
    keep_checkpoint: bool | None,
) -> None:
    """The end of a run: ``history.csv``, ``lr_trace.csv`` and then ``metrics.json``
    (the pipeline's sign that the run is done) written atomically; the checkpoint
    file and its folder removed unless kept (``keep_checkpoint``; None:
    :func:`~uncertainty_lr_study.engine.checkpoint.keep_checkpoints_requested`)."""
    atomic_write_csv(out_dir / "history.csv", history)
    trace.write(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if not (keep_checkpoints_requested() if keep_checkpoint is None else keep_checkpoint):
        checkpoint.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            checkpoint.parent.rmdir()
