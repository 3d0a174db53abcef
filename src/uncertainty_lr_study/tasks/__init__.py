"""Task definitions: one record per data set and per model.

A task in the experiment config names a ``dataset`` (a key of :data:`DATA_SETS`)
and a ``model`` (a key of :data:`MODEL_KINDS`): ``lenet5`` and ``lstm`` train in the
plain-PyTorch backend (:mod:`uncertainty_lr_study.engine.torch_loop`),
``transformer`` (a pretrained Hugging Face checkpoint) in the Trainer backend
(:mod:`uncertainty_lr_study.engine.trainer`). Everything the rest of the study
needs to know about a data set (its loader, checksum check, split sizes, metrics)
is a field of its :class:`DataSet`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DataSet:
    """What the study knows about one data set.

    Attributes:
        name: its config name (a task's ``dataset``).
        verify: the cheap check of its vendored files (checksums), run before any job;
            raises ``DataFileError``.
        train_size, val_size, test_size: examples of its training, validation and
            test splits (the most ``train_subset`` / ``val_subset`` / ``test_subset``
            may ask for; SQuAD: questions of the offline train subset).
        val_metrics: its validation metrics (history columns ``val_<name>``,
            fractions, higher is better), besides ``val_loss``.
        primary_metric: the test metric that ranks schedules on it (the best baseline
            is the fixed schedule with the highest mean of it).
        load: the plain-PyTorch backend's loader, a function of the run's settings
            returning ``x_train, y_train, x_val, y_val, x_test, y_test`` tensors,
            ``num_classes`` and ``model_kwargs``; None where only the Trainer backend
            reads the data set (its tasks: ``engine.hf_tasks.TASK_BUILDERS``).
    """

    name: str
    verify: Callable[[], Any]
    train_size: int
    val_size: int
    test_size: int
    val_metrics: tuple[str, ...]
    primary_metric: str
    load: Callable[[RunSettings], Any] | None = None

    @property
    def target_metrics(self) -> tuple[str, ...]:
        """The validation metrics a time-to-target on this data set may use."""
        return (*(f"val_{m}" for m in self.val_metrics), "val_loss")


DATA_SETS: dict[str, DataSet] = {
    d.name: d
    for d in (
        DataSet("mnist", mnist.verify_mnist_files, mnist.TRAIN_SIZE, mnist.VALIDATION_SIZE,
                10_000, ("accuracy",), "accuracy", _mnist),
        DataSet("imdb", imdb.verify_imdb_files, imdb.TRAIN_SIZE, imdb.VALIDATION_SIZE,
                imdb.TEST_SIZE, ("accuracy",), "accuracy", _imdb),
        DataSet("squad", squad.verify_squad_files, squad.TRAIN_SIZE, squad.VALIDATION_QUESTIONS,
                squad.DEV_SIZE, ("exact_match", "f1"), "f1"),
    )
}
"""Every data set a task may name."""


@dataclass(frozen=True)
class ModelKind:
    """A model a task may name.

    Attributes:
        name: its config name (a task's ``model``).
        data_sets: the data sets it can read.
        trainer: trained through Hugging Face ``Trainer`` (else the plain-PyTorch
            backend).
    """

    name: str
    data_sets: tuple[str, ...]
    trainer: bool = False


MODEL_KINDS: dict[str, ModelKind] = {
    m.name: m
    for m in (
        ModelKind("lenet5", ("mnist",)),
        ModelKind("lstm", ("imdb",)),
        ModelKind("transformer", ("imdb", "squad"), trainer=True),
    )
}
"""Every model a task may name."""

HF_MODELS = tuple(m.name for m in MODEL_KINDS.values() if m.trainer)
"""Models trained through Hugging Face ``Trainer`` (derived from :data:`MODEL_KINDS`)."""

TARGET_METRICS = ("val_accuracy", "val_exact_match", "val_f1", "val_loss")
"""Validation metrics a time-to-target may use (``val_loss`` is reached from above)."""


def target_metrics(dataset: str) -> tuple[str, ...]:
    """The validation metrics a target on ``dataset`` may use."""
    return DATA_SETS[dataset].target_metrics
