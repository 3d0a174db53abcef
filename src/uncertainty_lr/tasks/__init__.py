"""Task definitions: which data a task reads, which models fit it, its target metric.

A task in the experiment config names a ``dataset`` (a key of :data:`DATASETS`)
and a ``model``: ``lenet5`` and ``lstm`` train in the plain-PyTorch backend
(:mod:`uncertainty_lr.training`), ``transformer`` (a pretrained Hugging Face
checkpoint) in the Trainer backend (:mod:`uncertainty_lr.hf_backend`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uncertainty_lr.data import imdb, mnist

if TYPE_CHECKING:
    from uncertainty_lr.config import RunSettings


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

DATA_CHECKS: dict[str, Callable[[], Any]] = {
    "mnist": mnist.verify_mnist_files,
    "imdb": imdb.verify_imdb_files,
}
"""Cheap checks of each data set's vendored files (checksums), run before any job."""

TRAIN_SIZES: dict[str, int] = {"mnist": mnist.TRAIN_SIZE, "imdb": imdb.TRAIN_SIZE}
"""Training examples of each data set's training split (the most ``train_subset``
may ask for)."""

VAL_SIZES: dict[str, int] = {"mnist": mnist.VALIDATION_SIZE, "imdb": imdb.VALIDATION_SIZE}
"""Validation examples of each data set (the most ``val_subset`` may ask for)."""

TEST_SIZES: dict[str, int] = {"mnist": 10_000, "imdb": imdb.TEST_SIZE}
"""Test examples of each data set (the most ``test_subset`` may ask for)."""

MODEL_DATASETS: dict[str, tuple[str, ...]] = {
    "lenet5": ("mnist",),
    "lstm": ("imdb",),
    "transformer": ("imdb",),
}
"""Which data sets each model can read."""

HF_MODELS = ("transformer",)
"""Models trained through Hugging Face ``Trainer`` (the other backend is plain PyTorch)."""

TARGET_METRICS = ("val_accuracy", "val_loss")
"""Validation metrics a time-to-target may use (``val_loss`` is reached from above)."""
