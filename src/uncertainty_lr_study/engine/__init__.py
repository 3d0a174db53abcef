"""The training engine: what every run shares (:mod:`.run`), its checkpoint
(:mod:`.checkpoint`), and the plain-PyTorch backend (:mod:`.torch_loop`,
:func:`train_classifier`); the Hugging Face Trainer backend is
:mod:`uncertainty_lr_study.hf_backend`."""

from uncertainty_lr_study.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    KEEP_CHECKPOINTS_VARIABLE,
    CheckpointError,
    keep_checkpoints_requested,
    load_checkpoint,
    save_checkpoint,
)
from uncertainty_lr_study.engine.progress import (
    PROGRESS_SECONDS_VARIABLE,
    ProgressLog,
    progress_interval,
)
from uncertainty_lr_study.engine.run import (
    REUSE_TRIM_THRESHOLD,
    build_optimizer,
    decay_groups,
    finite_evaluation,
    finite_lrs,
    lr_columns,
    resolve_device,
    reuse_freed_memory,
    seed_everything,
    summarise_run,
    use_deterministic_kernels,
    write_outputs,
)
from uncertainty_lr_study.engine.torch_loop import (
    EVAL_BATCH_SIZE,
    SYNC_EVERY_STEPS,
    ClassifierRun,
    _PendingSteps,
    evaluate,
    train_classifier,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "EVAL_BATCH_SIZE",
    "KEEP_CHECKPOINTS_VARIABLE",
    "PROGRESS_SECONDS_VARIABLE",
    "REUSE_TRIM_THRESHOLD",
    "SYNC_EVERY_STEPS",
    "_PendingSteps",
    "CheckpointError",
    "ClassifierRun",
    "ProgressLog",
    "build_optimizer",
    "decay_groups",
    "evaluate",
    "finite_evaluation",
    "finite_lrs",
    "keep_checkpoints_requested",
    "load_checkpoint",
    "lr_columns",
    "progress_interval",
    "resolve_device",
    "reuse_freed_memory",
    "save_checkpoint",
    "seed_everything",
    "summarise_run",
    "train_classifier",
    "use_deterministic_kernels",
    "write_outputs",
]
