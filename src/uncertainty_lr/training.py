"""The plain-PyTorch training backend (MNIST / LeNet-5; image and text classifiers).

Read it top to bottom: :func:`train_classifier` seeds, loads the data, builds the
model, optimizer and schedule, trains with per-step signals, evaluates on the
validation set at a fixed interval, evaluates on the test set once at the end, and
writes the run's ``metrics.json`` and ``history.csv`` (the outputs
contract shared with the Trainer backend).
"""

from __future__ import annotations

import contextlib
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
from uncertainty_lr.config import ConfigError, RunSettings
from uncertainty_lr.controls import TraceRecorder, load_control_input
from uncertainty_lr.io import atomic_open, atomic_write_csv, atomic_write_json, finite_or_none
from uncertainty_lr.metrics import classification_metrics, time_to_target
from uncertainty_lr.models import build_model
from uncertainty_lr.paths import repo_root
from uncertainty_lr.schedulers import (
    SCHEDULERS,
    UncertaintyLR,
    build_peer_optimizer,
    build_scheduler,
    effective_lrs,
    uncertainty_part,
)
from uncertainty_lr.signals import gradient_norm, predictive_variance
from uncertainty_lr.tasks import DATASETS, VAL_METRICS

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

    A replay control (:class:`uncertainty_lr.schedulers.ReplayLR`) is compared with
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
    "Reproducibility" notes.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


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
    """``torch.save`` of ``state`` to ``path`` through :func:`uncertainty_lr.io.atomic_open`
    (a temporary file, fsynced, renamed onto ``path``).

    Raises:
        OSError: the checkpoint folder or file cannot be written.
    """
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def finite_lrs(optimizer: torch.optim.Optimizer) -> bool:
    """Whether every parameter group's learning rate (as logged,
    :func:`uncertainty_lr.schedulers.effective_lrs`) is a finite number."""
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
) -> dict[str, Any]:
    """The ``metrics.json`` record of a run, shared by both training backends.

    Args:
        s: the run's settings.
        history: the run's history rows (``kind`` ``"eval"`` rows carry ``step``,
            ``epoch``, ``seconds``, ``val_loss`` and the data set's validation metrics,
            :data:`uncertainty_lr.tasks.VAL_METRICS`: ``val_accuracy``, or
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

    Returns:
        The record, with every non-finite number (a diverged run's last
        validation loss, a non-finite learning rate or setting) as None, as
        :func:`uncertainty_lr.io.atomic_write_json` writes it.
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
    decoupled weight decay groups (:func:`uncertainty_lr.schedulers.build_peer_optimizer`).

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
        return torch.optim.Adam(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(decay_groups(model, s.weight_decay), lr=s.lr)
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
    Evaluation on the validation split at step 0, then every ``eval_every_steps``
    optimizer steps (0: at the end of each epoch) and at the end of training; the
    test split is evaluated once, after the last epoch, with the final weights.

    Divergence: a non-finite training loss, gradient norm or learning rate (before
    an optimizer step or after the schedule's epoch step), or a non-finite
    validation loss or metric at any evaluation, stops the run with ``status:
    diverged`` and ``diverged_at_epoch``; the test split is not evaluated
    (``test: null``) and the outputs are written as for a completed run, every
    non-finite number in ``metrics.json`` as ``null``.

    Args:
        settings: the run's :class:`~uncertainty_lr.config.RunSettings` (or a dict
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

    def diverge(epoch_float: float, what: str) -> None:
        nonlocal status, diverged_epoch
        status, diverged_epoch = "diverged", epoch_float
        log.warning("non-finite %s at step %d: run stopped as diverged", what, step)

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
            x, y = x_train[idx], y_train[idx]  # (B, 1, 28, 28) images or (B, T) ids; (B,)
            logits = model(x)  # (B, C)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if s.max_grad_norm > 0:  # returns the norm before clipping
                g = torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            else:
                g = gradient_norm(model.parameters())
            v = predictive_variance(logits.detach())
            loss_f, g_f, v_f = loss.item(), g.item(), v.item()
            if not (math.isfinite(loss_f) and math.isfinite(g_f) and finite_lrs(optimizer)):
                diverge(epoch + i / steps_per_epoch, "loss, gradient or learning rate")
                break
            if isinstance(scheduler, UncertaintyLR):
                scheduler.observe(g_f if spec.signal == "grad_norm" else v_f)
            optimizer.step()
            step += 1
            if per_step and spec.metric == "train_loss":
                scheduler.step(loss_f)  # GreedyLR
            elif per_step:
                scheduler.step()  # per-step schedules; a plateau's warmup tick
            if per_step:
                trace.record(optimizer, scheduler)
            window.add(loss_f, g_f, v_f)
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
