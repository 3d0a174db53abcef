"""Task definitions: which data a task reads, which models fit it, its target metric.

A task in the experiment config names a ``dataset`` (a key of :data:`DATASETS`)
and a ``model``: ``lenet5`` and ``lstm`` train in the plain-PyTorch backend
(:mod:`uncertainty_lr_study.engine`), ``transformer`` (a pretrained Hugging Face
checkpoint) in the Trainer backend (:mod:`uncertainty_lr_study.engine.trainer`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uncertainty_lr_study.data import imdb, mnist, squad

if TYPE_CHECKING:
    from uncertainty_lr_study.config import RunSettings


def _mnist(s: RunSettings) -> mnist.MnistSplits:
    return mnist.load_mnist(source=s.data_source)


def _imdb(s: RunSettings) -> imdb.TextClassificationData:
    return imdb.load_imdb(
        source=s.data_source,
        max_length=s.max_length or 256,
        vocab_size=s.vocab_size,
        min_frequency=s.min_frequency,
        truncation=s.truncation,
        train_subset=s.train_subset,
        test_subset=s.test_subset,
    )


DATASETS: dict[str, Callable[[RunSettings], Any]] = {"mnist": _mnist, "imdb": _imdb}
"""Loaders of the plain-PyTorch backend's data by config name: a function of the
run's settings returning ``x_train, y_train, x_val, y_val, x_test, y_test`` tensors,
``num_classes`` and ``model_kwargs`` (what the model needs to know about the inputs)."""

DATASET_NAMES = ("mnist", "imdb", "squad")
"""Every data set a task may name (``squad`` is read by the Trainer backend only)."""

DATA_CHECKS: dict[str, Callable[[], Any]] = {
    "mnist": mnist.verify_mnist_files,
    "imdb": imdb.verify_imdb_files,
    "squad": squad.verify_squad_files,
}
"""Cheap checks of each data set's vendored files (checksums), run before any job."""

TRAIN_SIZES: dict[str, int] = {
    "mnist": mnist.TRAIN_SIZE,
    "imdb": imdb.TRAIN_SIZE,
    "squad": squad.TRAIN_SIZE,
}
"""Training examples of each data set's training split (the most ``train_subset``
may ask for; SQuAD: questions of the offline train subset)."""

VAL_SIZES: dict[str, int] = {
    "mnist": mnist.VALIDATION_SIZE,
    "imdb": imdb.VALIDATION_SIZE,
    "squad": squad.VALIDATION_QUESTIONS,
}
"""Validation examples of each data set (the most ``val_subset`` may ask for)."""

TEST_SIZES: dict[str, int] = {"mnist": 10_000, "imdb": imdb.TEST_SIZE, "squad": squad.DEV_SIZE}
"""Test examples of each data set (the most ``test_subset`` may ask for)."""

MODEL_DATASETS: dict[str, tuple[str, ...]] = {
    "lenet5": ("mnist",),
    "lstm": ("imdb",),
    "transformer": ("imdb", "squad"),
}
"""Which data sets each model can read."""

HF_MODELS = ("transformer",)
"""Models trained through Hugging Face ``Trainer`` (the other backend is plain PyTorch)."""

VAL_METRICS: dict[str, tuple[str, ...]] = {
    "mnist": ("accuracy",),
    "imdb": ("accuracy",),
    "squad": ("exact_match", "f1"),
}
"""Validation metrics of each data set (history columns ``val_<name>``, fractions,
higher is better), besides ``val_loss``."""

PRIMARY_METRIC: dict[str, str] = {"mnist": "accuracy", "imdb": "accuracy", "squad": "f1"}
"""The test metric that ranks schedules on each data set (the best baseline is the
fixed schedule with the highest mean of it)."""

TARGET_METRICS = ("val_accuracy", "val_exact_match", "val_f1", "val_loss")
"""Validation metrics a time-to-target may use (``val_loss`` is reached from above)."""


def target_metrics(dataset: str) -> tuple[str, ...]:
    """The validation metrics a target on ``dataset`` may use."""
    return (*(f"val_{m}" for m in VAL_METRICS[dataset]), "val_loss")
