"""The plain-PyTorch training backend (MNIST / LeNet-5; image and text classifiers).

Read it top to bottom: :func:`train_classifier` seeds, loads the data, builds the
model, optimizer and schedule, trains with per-step signals, evaluates on the
validation set at a fixed interval, evaluates on the test set once at the end, and
writes the run's ``metrics.json`` and ``history.csv`` (the outputs
contract shared with the Trainer backend).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import pickle
import platform
import random
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import uncertainty_lr
from uncertainty_lr import UncertaintyLR, gradient_norm, predictive_variance, uncertainty_part
from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.controls import TraceRecorder, load_control_input
from uncertainty_lr_study.io import atomic_open, atomic_write_csv, atomic_write_json, finite_or_none
from uncertainty_lr_study.metrics import classification_metrics, time_to_target
from uncertainty_lr_study.models import build_model
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.precision import cpu_kind
from uncertainty_lr_study.registry import (
    SCHEDULERS,
    build_peer_optimizer,
    build_scheduler,
    effective_lrs,
)
from uncertainty_lr_study.tasks import DATASETS, VAL_METRICS

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1000


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


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH_SIZE
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy loss (per sample) and the logits ``(N, C)`` on ``x``."""
    model.eval()
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    loss = F.cross_entropy(logits, y, reduction="mean").item()
    model.train()
    return loss, logits


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


def finite_lrs(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group's learning rate (as logged,
    :func:`uncertainty_lr_study.registry.effective_lrs`) is a finite number."""
    return all(math.isfinite(lr) for lr in effective_lrs(optimizer))


def finite_evaluation(row: dict[str, Any]) -> bool:
    """Whether an evaluation's validation values (the row's ``val_*`` entries:
    loss and metrics) are all finite; a run whose evaluation is not has diverged."""
    return all(math.isfinite(float(v)) for k, v in row.items() if k.startswith("val_"))


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


@dataclass
class _Window:
    """Running sums of per-step quantities between two evaluations."""

    loss: float = 0.0
    grad_norm: float = 0.0
    variance: float = 0.0
    n: int = 0

    def add(self, loss: float, grad_norm: float, variance: float) -> None:
        self.loss += loss
        self.grad_norm += grad_norm
        self.variance += variance
        self.n += 1

    def means(self) -> dict[str, float]:
        if not self.n:
            return dict.fromkeys(("train_loss", "grad_norm", "predictive_variance"), math.nan)
        return {
            "train_loss": self.loss / self.n,
            "grad_norm": self.grad_norm / self.n,
            "predictive_variance": self.variance / self.n,
        }


SYNC_EVERY_STEPS = 50
"""Most optimizer steps between two host reads of the per-step values when neither a
history row nor an evaluation asks for them sooner (:class:`_PendingSteps`)."""


class _PendingSteps:
    """Per-step values (loss, gradient norm, predictive variance) kept on the device
    until the host needs them, then read for all pending steps at once: one host
    synchronisation per read instead of three per step.

    :meth:`add` keeps a step's three 0-d tensors (no synchronisation); :meth:`read`
    returns ``(step, epoch, loss, grad_norm, variance)`` per step, in step order, the
    values the Python floats ``.item()`` would give, and empties the buffer.
    """

    def __init__(self) -> None:
        self.at: list[tuple[int, float]] = []  # (steps done before it, fractional epoch)
        self.values: list[torch.Tensor] = []  # 3 per step, 0-d

    def __len__(self) -> int:
        return len(self.at)

    def add(self, step: int, epoch: float, *values: torch.Tensor) -> None:
        """Keep the step's loss, gradient norm and predictive variance (0-d each)."""
        self.at.append((step, epoch))
        self.values += [v.detach() for v in values]

    def read(self) -> list[tuple[int, float, float, float, float]]:
        if not self.at:
            return []
        values = torch.stack(self.values).view(-1, 3).tolist()  # (n, 3); the one sync
        out = [(*at, *v) for at, v in zip(self.at, values)]
        self.at, self.values = [], []
        return out


PROGRESS_SECONDS_VARIABLE = "UNCERTAINTY_LR_PROGRESS_SECONDS"


def progress_interval() -> float:
    """Seconds between two progress lines of a run: the environment variable
    ``UNCERTAINTY_LR_PROGRESS_SECONDS`` (default 30; 0: a line after every step).

    Raises:
        ConfigError: the variable is not a number >= 0.
    """
    text = os.environ.get(PROGRESS_SECONDS_VARIABLE, "30")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds >= 0:  # NaN too
        raise ConfigError(
            f"{PROGRESS_SECONDS_VARIABLE} must be a number of seconds >= 0, got {text!r}"
        )
    return seconds


class ProgressLog:
    """A run's progress as one log line (INFO) at most every ``interval`` seconds, e.g.
    ``progress: step 1200/5160 (23%), 14.2 steps/s, ETA 4m39s, last val_accuracy 0.9812``.

    Call :meth:`update` after every optimizer step, and with the row after every
    evaluation; a line is written at the first call ``interval`` seconds after the
    previous line (or the start). Steps per second count this process's steps over
    its time, evaluations included, so that the ETA includes the evaluations to come.

    Args:
        total_steps: the run's optimizer steps.
        metric: the history column reported, e.g. ``"val_accuracy"``.
        done: steps done before this process (a resumed run).
        interval: seconds; default :func:`progress_interval`; ``math.inf``: no lines.
    """

    def __init__(
        self, total_steps: int, metric: str, done: int = 0, interval: float | None = None
    ) -> None:
        self.total, self.metric, self.done = total_steps, metric, done
        self.interval = progress_interval() if interval is None else interval
        self.t0 = self.last_line = time.perf_counter()
        self.value: float | None = None

    def update(self, step: int, row: dict[str, Any] | None = None) -> None:
        """Steps done so far; ``row``: an evaluation's history row (its ``metric``)."""
        if row is not None and self.metric in row:
            self.value = float(row[self.metric])
        now = time.perf_counter()
        if now - self.last_line < self.interval:
            return
        self.last_line = now
        rate = (step - self.done) / max(now - self.t0, 1e-9)
        eta = _clock((self.total - step) / rate) if rate > 0 else "unknown"
        log.info(
            "progress: step %d/%d (%d%%), %.3g steps/s, ETA %s, last %s %s",
            step,
            self.total,
            100 * step // max(self.total, 1),
            rate,
            eta,
            self.metric,
            "none yet" if self.value is None else f"{self.value:.4f}",
        )


def _clock(seconds: float) -> str:
    """``42s``, ``4m39s`` or ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


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
            :data:`uncertainty_lr_study.tasks.VAL_METRICS`: ``val_accuracy``, or
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
    score_names = [m for m in VAL_METRICS[s.dataset] if f"val_{m}" in evals]
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


def train_classifier(
    settings: RunSettings | dict[str, Any],
    out_dir: str | Path,
    progress: bool = False,
    keep_checkpoint: bool | None = None,
) -> dict[str, Any]:
    """Train and evaluate one classifier run; write ``metrics.json`` and ``history.csv``.

    Order per step: forward -> loss -> backward -> signals (gradient norm before any
    clipping; predictive variance of the training batch) -> ``observe`` (uncertainty
    schedules only) -> ``optimizer.step()``; ``scheduler.step()`` once per epoch, or
    after every optimizer step for the schedules whose spec says so
    (``ScheduleSpec.interval``: the warmup peers, OneCycle, GreedyLR with the batch
    loss); ``ReduceLROnPlateau`` also gets the validation loss after every
    evaluation. Schedule-Free's optimizer is switched to ``eval()`` for every
    evaluation and back to ``train()`` after it.
    Every arm logs both signals, so their traces can be compared across schedules.
    The signals and the loss stay on the device; the host reads them for several
    steps at once (before a history row, an evaluation or the epoch's end, at least
    every :data:`SYNC_EVERY_STEPS` steps; every step for the per-step schedules) and
    hands them to ``observe`` in step order, so the values observed, logged and
    averaged are those a read after every step would give.
    Evaluation on the validation split at step 0, then every ``eval_every_steps``
    optimizer steps (0: at the end of each epoch) and at the end of training; the
    test split is evaluated once, after the last epoch, with the final weights.

    Divergence: a non-finite training loss, gradient norm or learning rate (before
    an optimizer step or after the schedule's epoch step; a loss or norm found at a
    later read counts from its own step: ``steps`` and ``diverged_at_epoch`` are
    those of that step), or a non-finite validation loss or metric at any
    evaluation, stops the run with ``status: diverged`` and ``diverged_at_epoch``;
    the test split is not evaluated (``test: null``) and the outputs are written as
    for a completed run, every non-finite number in ``metrics.json`` as ``null``.

    Args:
        settings: the run's :class:`~uncertainty_lr_study.config.RunSettings` (or a dict
            of them, validated here before any work).
        out_dir: folder for ``metrics.json`` and ``history.csv``.
        progress: show a tqdm bar per epoch.
        keep_checkpoint: keep ``out_dir/checkpoint/last.pt`` after the run ends;
            default: :func:`keep_checkpoints_requested` (the config's
            ``keep_checkpoints``, passed by the pipeline; false: delete it).

    Checkpoints: at the end of every epoch the whole state (model, optimizer,
    schedule, the random-number states of torch, NumPy, Python and the data order,
    the history so far) is written atomically to ``out_dir/checkpoint/last.pt``,
    beside (not among) the pipeline's declared outputs. A run started again with the
    same settings resumes from it; on the CPU its final metrics equal those of an
    uninterrupted run apart from the timing fields. A checkpoint of other settings is
    ignored (and overwritten).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: invalid settings (before any data is read).
        DataFileError: missing or corrupt data files.
        CheckpointError: an unreadable checkpoint (the message says to delete it).
    """
    if isinstance(settings, dict):
        settings = RunSettings.from_dict(settings)
    s = settings
    if s.dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {s.dataset!r}; valid: {', '.join(DATASETS)}")
    device = resolve_device(s.device)
    use_deterministic_kernels()
    out_dir = Path(out_dir)
    # a control reads its source run first: a missing source fails before any work
    control = (
        load_control_input(s, out_dir) if SCHEDULERS[s.scheduler].family == "control" else None
    )
    t_start = time.perf_counter()
    torch.set_num_threads(s.num_threads)
    torch.set_flush_denormal(True)

    data = DATASETS[s.dataset](s)
    x_train, y_train = data.x_train, data.y_train
    if s.train_subset > len(x_train):
        raise ConfigError(
            f"train_subset {s.train_subset} exceeds the {len(x_train):,} training examples; "
            "use 0 for all"
        )
    if s.train_subset:
        x_train, y_train = x_train[: s.train_subset], y_train[: s.train_subset]
    x_train, y_train = x_train.to(device), y_train.to(device)
    x_val, y_val = data.x_val, data.y_val
    if s.val_subset:
        x_val, y_val = x_val[: s.val_subset], y_val[: s.val_subset]
    x_val, y_val = x_val.to(device), y_val.to(device)
    n_train = len(x_train)
    steps_per_epoch = math.ceil(n_train / s.batch_size)

    # The same seed gives every scheduler the same initial weights and data order:
    # weights come from the global generator seeded here, data order from its own.
    seed_everything(s.seed)
    model_kwargs = {**getattr(data, "model_kwargs", {}), **s.model_params}
    try:
        model = build_model(s.model, data.num_classes, **model_kwargs).to(device)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    params = list(model.parameters())  # once: model.parameters() walks the modules
    order_gen = torch.Generator().manual_seed(s.seed)
    optimizer = build_optimizer(s, model, run_steps=s.epochs * steps_per_epoch)
    # Schedule-Free keeps two parameter sequences: train() before training steps,
    # eval() before evaluations (its averaged weights are the ones evaluated).
    switches_mode = callable(getattr(optimizer, "train", None))
    per_step = SCHEDULERS[s.scheduler].interval == "step"
    scheduler, spec = build_scheduler(
        s.scheduler,
        optimizer,
        epochs=s.epochs,
        steps_per_epoch=steps_per_epoch,
        interval="step" if per_step else "epoch",
        scaling=s.scaling,
        reference_epochs=s.reference_epochs,
        control=control,
        **s.scheduler_params,
    )
    n_groups = len(optimizer.param_groups)
    trace = TraceRecorder()
    trace.record(optimizer, scheduler)

    def lrs() -> dict[str, float]:
        current = effective_lrs(optimizer)
        out = {"lr": current[0]}
        if n_groups > 1:
            out.update({f"lr_group{i}": lr for i, lr in enumerate(current)})
        return out

    rows: list[dict[str, Any]] = []
    window = _Window()
    pending = _PendingSteps()
    train_seconds = 0.0  # training loop time before this process (resumed runs)
    step = 0
    start_epoch = 0
    status, diverged_epoch = "completed", None
    ckpt_path = out_dir / "checkpoint" / "last.pt"
    state = load_checkpoint(ckpt_path, s, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        trace.load(state["trace"])
        restore_rng(state["rng"], order_gen)
        rows, step, start_epoch = state["rows"], state["step"], state["epoch"]
        train_seconds = state["train_seconds"]
        log.info("resumed from %s at epoch %d (step %d)", ckpt_path, start_epoch, step)
    progress_log = ProgressLog(s.epochs * steps_per_epoch, "val_accuracy", done=step)

    def diverge(epoch_float: float, what: str) -> None:
        nonlocal status, diverged_epoch
        status, diverged_epoch = "diverged", epoch_float
        log.warning("non-finite %s at step %d: run stopped as diverged", what, step)

    def read_due(i: int) -> bool:
        """Whether the host reads the pending values before step ``i`` of the epoch
        takes its optimizer step: before a history row or an evaluation needs them,
        at the end of the epoch (its evaluation and the schedule's decision), and at
        least every :data:`SYNC_EVERY_STEPS` steps. Per-step schedules read every
        step, as GreedyLR needs each loss, and a divergence found later would leave
        a later rate in the outputs than the one of the step where it happened."""
        done = step + 1
        return (
            per_step
            or i + 1 == steps_per_epoch
            or len(pending) >= SYNC_EVERY_STEPS
            or (s.sample_every_steps > 0 and done % s.sample_every_steps == 0)
            or (s.eval_every_steps > 0 and done % s.eval_every_steps == 0)
        )

    def read_pending() -> tuple[float, float, float] | None:
        """Read the pending steps' values on the host, in step order: each is
        observed by an uncertainty schedule and added to the window, as each step
        did before. Returns the last step's (loss, gradient norm, variance), or None
        if a loss or gradient norm is not finite: the run diverged at that step,
        which ``step`` then counts as the steps done, as if it had stopped there
        (the steps taken since change no output: a divergence stops the run before
        any evaluation, checkpoint or schedule step)."""
        nonlocal step
        last = None
        for k, at_epoch, loss_f, g_f, v_f in pending.read():
            if not (math.isfinite(loss_f) and math.isfinite(g_f)):
                step = k
                diverge(at_epoch, "loss or gradient")
                return None
            if isinstance(scheduler, UncertaintyLR):
                scheduler.observe(g_f if spec.signal == "grad_norm" else v_f)
            window.add(loss_f, g_f, v_f)
            last = (loss_f, g_f, v_f)
        return last

    def record_eval(epoch_float: float, lr_used: dict[str, float]) -> bool:
        """Evaluate and append the row; False (the run diverged) when it is non-finite."""
        if switches_mode:
            optimizer.eval()
        val_loss, val_logits = evaluate(model, x_val, y_val)
        if switches_mode:
            optimizer.train()
        val_acc = (val_logits.argmax(1) == y_val).float().mean().item()
        row = {
            "kind": "eval",
            "step": step,
            "epoch": epoch_float,
            "seconds": train_seconds + (time.perf_counter() - t_loop),
            **lr_used,
            **window.means(),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
        }
        rows.append(row)
        progress_log.update(step, row)
        log.info(
            "step %d epoch %.2f val_loss %.4f val_accuracy %.4f lr %.3g",
            step,
            epoch_float,
            val_loss,
            val_acc,
            lr_used["lr"],
        )
        if not finite_evaluation(row):
            diverge(epoch_float, "validation loss or metric")
            return False
        if spec.metric == "val_loss" and step > 0:
            scheduler.step(val_loss)
            trace.record(optimizer, scheduler)
        return True

    reuse_freed_memory()  # after the data set's loading, whose temporaries it would keep
    t_loop = time.perf_counter()
    if switches_mode:
        optimizer.train()
    if state is None:
        record_eval(0.0, lrs())
    model.train()
    for epoch in range(start_epoch if status == "completed" else s.epochs, s.epochs):
        perm = torch.randperm(n_train, generator=order_gen).to(device)
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}/{s.epochs}",
            disable=not progress,
            leave=False,
        )
        for i in bar:
            idx = perm[i * s.batch_size : (i + 1) * s.batch_size]
            x, y = x_train.index_select(0, idx), y_train.index_select(0, idx)
            logits = model(x)  # x: (B, 1, 28, 28) images or (B, T) ids; logits (B, C)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.max_grad_norm > 0:  # returns the norm before clipping
                g = torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
            else:
                g = gradient_norm(params)
            v = predictive_variance(logits.detach())
            pending.add(step, epoch + i / steps_per_epoch, loss, g, v)  # stays on the device
            lrs_finite = finite_lrs(optimizer)  # host numbers: no synchronisation
            if not lrs_finite or read_due(i):
                last = read_pending()
                if last is None:
                    break
                if not lrs_finite:
                    diverge(epoch + i / steps_per_epoch, "learning rate")
                    break
                loss_f, g_f, v_f = last
            optimizer.step()
            step += 1
            progress_log.update(step)
            if per_step and spec.metric == "train_loss":
                scheduler.step(loss_f)  # GreedyLR
            elif per_step:
                scheduler.step()  # per-step schedules; a plateau's warmup tick
            if per_step:
                trace.record(optimizer, scheduler)
            if s.sample_every_steps and step % s.sample_every_steps == 0:
                rows.append(
                    {
                        "kind": "step",
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "seconds": train_seconds + (time.perf_counter() - t_loop),
                        **lrs(),
                        "train_loss": loss_f,
                        "grad_norm": g_f,
                        "predictive_variance": v_f,
                    }
                )
            if s.eval_every_steps and step % s.eval_every_steps == 0 and i + 1 < steps_per_epoch:
                if not record_eval(step / steps_per_epoch, lrs()):
                    break
                window = _Window()
        if status == "diverged" or not record_eval(float(epoch + 1), lrs()):
            break
        window = _Window()
        if not per_step:
            scheduler.step()
            trace.record(optimizer, scheduler)
        if not finite_lrs(optimizer):
            diverge(float(epoch + 1), "learning rate")
            break
        save_checkpoint(
            ckpt_path,
            {
                "format": CHECKPOINT_FORMAT,
                "settings": s.to_dict(),
                "epoch": epoch + 1,
                "step": step,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": capture_rng(order_gen),
                "rows": rows,
                "trace": trace.state(),
                "train_seconds": train_seconds + (time.perf_counter() - t_loop),
            },
        )

    train_seconds += time.perf_counter() - t_loop
    history = pd.DataFrame(rows)

    # Test set: once, at the end, with the final weights (no selection on test data).
    if switches_mode:
        optimizer.eval()
    if status == "completed":
        test_loss, test_logits = evaluate(model, data.x_test.to(device), data.y_test.to(device))
        test = {
            "loss": test_loss,
            **classification_metrics(test_logits, data.y_test, data.num_classes),
        }
    else:
        test = None
    metrics = summarise_run(
        s,
        history=history,
        status=status,
        diverged_epoch=diverged_epoch,
        resumed_from_epoch=start_epoch if state is not None else None,
        test=test,
        steps=step,
        steps_per_epoch=steps_per_epoch,
        train_examples=n_train,
        val_examples=len(y_val),
        test_examples=len(data.y_test),
        optimizer=optimizer,
        scheduler=scheduler,
        wall_seconds=time.perf_counter() - t_start,
        train_seconds=train_seconds,
        device=device,
    )
    atomic_write_csv(out_dir / "history.csv", history)
    trace.write(out_dir)
    atomic_write_json(out_dir / "metrics.json", metrics)
    if not (keep_checkpoints_requested() if keep_checkpoint is None else keep_checkpoint):
        ckpt_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            ckpt_path.parent.rmdir()
    return metrics
