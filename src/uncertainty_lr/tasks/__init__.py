"""Task definitions: which data a task reads and what its target metric is.

A task in the experiment config names a ``dataset`` (a key of :data:`DATASETS`)
and a ``model`` (a key of :data:`uncertainty_lr.models.MODELS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uncertainty_lr.data import mnist

DATASETS: dict[str, Callable[..., Any]] = {"mnist": mnist.load_mnist}
"""Loaders of classification data by config name; each returns an object with
``x_train, y_train, x_val, y_val, x_test, y_test`` tensors and ``num_classes``."""

DATA_CHECKS: dict[str, Callable[[], Any]] = {"mnist": mnist.verify_mnist_files}
"""Cheap checks of each data set's vendored files (checksums), run before any job."""

TRAIN_SIZES: dict[str, int] = {"mnist": mnist.TRAIN_SIZE}
"""Training examples of each data set's training split (the most ``train_subset``
may ask for)."""

TARGET_METRICS = ("val_accuracy", "val_loss")
"""Validation metrics a time-to-target may use (``val_loss`` is reached from above)."""
