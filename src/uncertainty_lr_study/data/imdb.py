"""IMDB Large Movie Review Dataset (Maas et al. 2011): vendored Parquet files or the hub.

Splits: the official 25,000 training reviews are split, with a fixed seed that does
not depend on the run's seed, into 22,500 for training and 2,500 (1,250 per class)
for validation; the official 25,000 test reviews are the test set, or a stratified
subsample of it (``test_subset``). Both vendored files are sorted by label, so every
subset is taken from a *stratified order*: within each class a fixed random
permutation, the two classes interleaved, so that every prefix is balanced.

Two ways to turn reviews into model inputs:

- the LSTM path (:func:`train_word_tokenizer`, :func:`encode_reviews`): a word-level
  vocabulary learnt from the training split only with the Hugging Face ``tokenizers``
  library (NFKC, lower case, BERT's whitespace-and-punctuation pre-tokenizer), ids
  padded on the right with ``PAD_ID = 0``;
- the transformer path (``uncertainty_lr_study.engine.trainer``): the pretrained model's own
  tokenizer, with the same :func:`truncate_ids` rule.

The files are read through Hugging Face ``datasets`` (the ``parquet`` builder) and
every tokenisation runs as a cached ``Dataset.map``
(:mod:`uncertainty_lr_study.data.hf_datasets`): a second run of a task reads its
token ids from ``data/cache/datasets``. ``<br />`` line breaks of the raw reviews are
replaced by spaces when loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch

from uncertainty_lr_study.data.checksums import DataFileError, folder_problems, verify_folder
from uncertainty_lr_study.data.hf_datasets import cached_map, load_file
from uncertainty_lr_study.paths import raw_data_dir

FILES = {"train": "train.parquet", "test": "test.parquet"}
NUM_CLASSES = 2
VALIDATION_SIZE = 2_500
TRAIN_SIZE = 25_000 - VALIDATION_SIZE
"""Training reviews after the validation split (the most ``train_subset`` may ask for)."""
TEST_SIZE = 25_000
SPLIT_SEED = 20_240_602  # fixed: the same validation split and subsets for every run
PAD_ID, UNK_ID = 0, 1
SPECIAL_TOKENS = ["[PAD]", "[UNK]"]
TRUNCATIONS = ("head", "head_tail")
HEAD_FRACTION = 0.25
"""Share of ``max_length`` kept from the start of a long review under ``head_tail``
truncation; the rest comes from its end (Sun et al. 2019, "How to Fine-Tune BERT for
Text Classification?": head 128 + tail 382 of 512 tokens was their best)."""
HOW_TO_GET = (
    "Restore the vendored copy with `git checkout data/raw/imdb`, or rebuild it from the "
    "official archive (ai.stanford.edu/~amaas/data/sentiment/) and check it against "
    "data/raw/imdb/SHA256SUMS."
)


@dataclass
class ReviewSplits:
    """The reviews of the three splits, as Arrow-backed ``datasets.Dataset`` objects
    with a ``text`` (str, ``<br />`` replaced) and a ``label`` column (int64, 0
    negative, 1 positive); the ``*_text`` / ``*_label`` properties give them as a list
    of str and an int64 array ``(N,)``.

    Attributes:
        train, val, test: the splits (selections of the cached files, in the order
            :func:`load_imdb_reviews` documents).
    """

    train: datasets.Dataset
    val: datasets.Dataset
    test: datasets.Dataset

    train_text = property(lambda self: list(self.train["text"]), doc="Training reviews.")
    train_label = property(lambda self: _labels(self.train), doc="Training labels, int64 (N,).")
    val_text = property(lambda self: list(self.val["text"]), doc="Validation reviews.")
    val_label = property(lambda self: _labels(self.val), doc="Validation labels, int64 (N,).")
    test_text = property(lambda self: list(self.test["text"]), doc="Test reviews.")
    test_label = property(lambda self: _labels(self.test), doc="Test labels, int64 (N,).")


def _labels(split: datasets.Dataset) -> np.ndarray:
    return np.asarray(split["label"], dtype=np.int64)


@dataclass
class TextClassificationData:
    """Token-id tensors for the plain-PyTorch backend (same fields as MNIST's splits).

    Attributes:
        x_train, x_val, x_test: int64 ``(N, max_length)`` token ids, right-padded
            with :data:`PAD_ID`.
        y_train, y_val, y_test: int64 ``(N,)``.
        num_classes: 2.
        model_kwargs: what the model needs to know about the inputs
            (``vocab_size``, ``pad_id``).
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int = NUM_CLASSES
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def verify_imdb_files(root: str | Path | None = None) -> Path:
    """Check that both vendored Parquet files exist and match ``SHA256SUMS``.

    Returns:
        The folder checked.

    Raises:
        DataFileError: naming the missing or corrupt file, its expected checksum and
            how to restore it.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "imdb"
    return verify_folder(folder, tuple(FILES.values()), HOW_TO_GET)


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A permutation of ``range(len(labels))`` whose every prefix is class-balanced.

    Each class is permuted with ``numpy.random.default_rng(seed)``, then the classes
    are interleaved (class 0, class 1, class 0, ...) until the smaller one runs out;
    the rest of the larger one follows.

    Args:
        labels: int array ``(N,)``.
        seed: fixed seed of the permutation.

    Returns:
        int64 array ``(N,)``.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    shortest = min(len(p) for p in per_class)
    head = np.stack([p[:shortest] for p in per_class], axis=1).reshape(-1)
    tail = [p[shortest:] for p in per_class]
    return np.concatenate([head, *tail]).astype(np.int64)


def read_split_file(path: Path) -> datasets.Dataset:
    """Read and check one vendored Parquet file (through ``datasets``' parquet builder).

    Checks: readable Parquet; a ``text`` column of (valid UTF-8) strings; a ``label``
    column of integers, or of floats that are all exactly integral (a 0.9 is
    refused, never cast); no missing label; every label 0 or 1; at least one review.

    Returns:
        The reviews: ``text`` (``<br />`` replaced by spaces, a missing text as ``""``)
        and ``label`` (int64), in file order.

    Raises:
        DataFileError: naming the file, what is wrong and how to restore it.
    """
    split = load_file("parquet", path, HOW_TO_GET)
    _check_reviews(split.data.table, path)
    return cached_map(split, _clean_reviews, {})


def _check_reviews(table: pa.Table, path: Path) -> None:
    """The content checks of :func:`read_split_file` on the file's Arrow table."""

    def bad(problem: str) -> DataFileError:
        return DataFileError(f"data file {path} {problem}. {HOW_TO_GET}")

    missing = {"text", "label"} - set(table.column_names)
    if missing:
        raise bad(f"lacks column(s) {sorted(missing)}")
    text, label = table["text"], table["label"]
    if table.num_rows == 0:
        raise bad("holds no reviews")
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        raise bad(f"has a text column of type {text.type}, expected strings")
    try:
        text.validate(full=True)
    except pa.ArrowInvalid as err:
        raise bad(f"has text that is not valid UTF-8 ({err})") from err
    if not (pa.types.is_integer(label.type) or pa.types.is_floating(label.type)):
        raise bad(f"has a label column of type {label.type}, expected integers 0 and 1")
    if label.null_count:
        raise bad(f"has {label.null_count} review(s) without a label")
    values = label.to_numpy()
    wrong = ~np.isin(values, (0, 1))  # a float 0.9 is wrong, a float 1.0 is not
    if wrong.any():
        row = int(np.argmax(wrong))
        raise bad(
            f"has label {values[row].item()!r} at row {row} ({int(wrong.sum())} such in all); "
            "expected 0 or 1"
        )


def _clean_reviews(batch: dict[str, list]) -> dict[str, list]:
    """``Dataset.map`` function: ``<br />`` -> space, a missing text -> ``""``, labels
    as integers (checked integral before)."""
    return {
        "text": [t.replace("<br />", " ") if t is not None else "" for t in batch["text"]],
        "label": [int(v) for v in batch["label"]],
    }


def check_imdb_files(root: str | Path | None = None) -> list[str]:
    """Every problem of the vendored files: checksums, then each file's content
    (:func:`read_split_file`).

    Args:
        root: the folder (default ``data/raw/imdb``).

    Returns:
        One message per bad file, naming it and the fix; empty when both are good.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "imdb"
    return folder_problems(folder, tuple(FILES.values()), HOW_TO_GET, read_split_file)


def load_imdb_reviews(
    root: str | Path | None = None,
    source: str = "local",
    validation_size: int = VALIDATION_SIZE,
    train_subset: int = 0,
    test_subset: int = 0,
) -> ReviewSplits:
    """Load the IMDB reviews with the fixed, stratified validation split.

    Args:
        root: folder with ``train.parquet``, ``test.parquet`` and ``SHA256SUMS``.
            Default: ``data/raw/imdb`` of the repository.
        source: ``"local"`` (vendored files, checksums verified) or ``"hub"`` (Hugging
            Face ``datasets.load_dataset("imdb")``; needs ``datasets`` and network).
        validation_size: reviews held out of the training split (balanced).
        train_subset: keep the first N reviews of the training split's stratified
            order (balanced); 0 = all.
        test_subset: evaluate on a stratified subsample of N test reviews; 0 = all
            25,000.

    Returns:
        :class:`ReviewSplits`; the training reviews are in stratified order.

    Raises:
        DataFileError: a file is missing, corrupt or malformed (:func:`read_split_file`).
        ValueError: unknown ``source`` or a size out of range.
    """
    if source == "local":
        folder = verify_imdb_files(root)
        train_all = read_split_file(folder / FILES["train"])
        test_all = read_split_file(folder / FILES["test"])
    elif source == "hub":
        train_all, test_all = _load_from_hub()
    else:
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    train_label = np.asarray(train_all["label"], dtype=np.int64)
    test_label = np.asarray(test_all["label"], dtype=np.int64)
    n_train = len(train_label)
    if not 0 < validation_size < n_train:
        raise ValueError(f"validation_size must lie in (0, {n_train}), got {validation_size}")
    if not 0 <= train_subset <= n_train - validation_size:
        raise ValueError(
            f"train_subset must lie in [0, {n_train - validation_size}], got {train_subset}"
        )
    if not 0 <= test_subset <= len(test_label):
        raise ValueError(f"test_subset must lie in [0, {len(test_label)}], got {test_subset}")
    order = stratified_order(train_label, SPLIT_SEED)
    val_idx, train_idx = order[:validation_size], order[validation_size:]
    if train_subset:
        train_idx = train_idx[:train_subset]
    if test_subset:
        test_idx = np.sort(stratified_order(test_label, SPLIT_SEED + 1)[:test_subset])
    else:
        test_idx = np.arange(len(test_label))
    return ReviewSplits(
        train=train_all.select(train_idx), val=train_all.select(val_idx), test=test_all.select(test_idx)
    )


def _load_from_hub() -> tuple[datasets.Dataset, datasets.Dataset]:
    """Train and test reviews of ``datasets.load_dataset("imdb")`` (network), cleaned
    as the vendored files are."""
    ds = datasets.load_dataset("imdb")
    return cached_map(ds["train"], _clean_reviews, {}), cached_map(ds["test"], _clean_reviews, {})


def train_word_tokenizer(
    texts: Sequence[str], vocab_size: int, min_frequency: int = 2
) -> Any:
    """Learn a word-level vocabulary from ``texts`` (the training split only).

    Normalisation NFKC + lower case; pre-tokenisation on whitespace and punctuation
    (``tokenizers.pre_tokenizers.BertPreTokenizer``); the ``vocab_size - 2`` most
    frequent words seen at least ``min_frequency`` times, plus ``[PAD]`` (id 0) and
    ``[UNK]`` (id 1).

    Args:
        texts: training reviews.
        vocab_size: size of the vocabulary, special tokens included (>= 3).
        min_frequency: fewest occurrences of a kept word (>= 1).

    Returns:
        A ``tokenizers.Tokenizer``; ``encode`` maps unknown words to ``[UNK]``.

    Raises:
        ValueError: ``vocab_size < 3`` or ``min_frequency < 1``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: PLC0415

    if vocab_size < 3 or min_frequency < 1:
        raise ValueError(
            f"vocab_size must be >= 3 and min_frequency >= 1, got {vocab_size} and "
            f"{min_frequency}"
        )
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def truncate_ids(
    ids: Sequence[int], max_length: int, truncation: str = "head", head_fraction: float = HEAD_FRACTION
) -> list[int]:
    """Cut a token-id sequence to at most ``max_length`` ids.

    ``"head"`` keeps the first ``max_length``; ``"head_tail"`` keeps the first
    ``round(head_fraction * max_length)`` and the last ``max_length`` minus those
    (Sun et al. 2019). Sequences that fit are returned unchanged.

    Raises:
        ValueError: ``max_length < 1`` or an unknown ``truncation``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    ids = list(ids)
    if len(ids) <= max_length:
        return ids
    if truncation == "head":
        return ids[:max_length]
    head = round(head_fraction * max_length)
    return ids[:head] + ids[len(ids) - (max_length - head) :]


def encode_reviews(
    tokenizer: Any,
    reviews: datasets.Dataset | Sequence[str],
    max_length: int,
    truncation: str = "head",
) -> torch.Tensor:
    """Token ids of the reviews, truncated (:func:`truncate_ids`) and right-padded,
    by a cached ``Dataset.map`` (:func:`~uncertainty_lr_study.data.hf_datasets.cached_map`:
    a later call with the same reviews, tokenizer and settings reads them from disk).

    Args:
        tokenizer: from :func:`train_word_tokenizer`.
        reviews: ``N`` reviews: a dataset with a ``text`` column (cached when it is
            Arrow-backed, as the splits of :func:`load_imdb_reviews` are), or texts.
        max_length: tokens per review after truncation.
        truncation: ``"head"`` or ``"head_tail"``.

    Returns:
        int64 ``(N, max_length)``; a review with no tokens is all :data:`PAD_ID`.
    """
    if not isinstance(reviews, datasets.Dataset):
        reviews = datasets.Dataset.from_dict({"text": list(reviews)})
    key = {"tokenizer": tokenizer, "max_length": max_length, "truncation": truncation}
    mapped = cached_map(reviews, _padded_word_ids, key, remove_columns=reviews.column_names)
    if len(mapped) == 0:
        return torch.empty((0, max_length), dtype=torch.int64)
    ids = np.asarray(mapped.with_format("numpy")["input_ids"], dtype=np.int64)  # rows padded
    return torch.from_numpy(ids.reshape(len(mapped), max_length))


def _padded_word_ids(
    batch: dict[str, list], tokenizer: Any, max_length: int, truncation: str
) -> dict[str, list]:
    """``Dataset.map`` function of :func:`encode_reviews`."""
    rows = []
    for enc in tokenizer.encode_batch(batch["text"]):
        ids = truncate_ids(enc.ids, max_length, truncation)
        rows.append(ids + [PAD_ID] * (max_length - len(ids)))
    return {"input_ids": rows}


def load_imdb(
    root: str | Path | None = None,
    source: str = "local",
    max_length: int = 256,
    vocab_size: int = 20_000,
    min_frequency: int = 2,
    truncation: str = "head",
    train_subset: int = 0,
    test_subset: int = 0,
) -> TextClassificationData:
    """IMDB as padded token-id tensors for the LSTM classifier.

    The vocabulary is learnt from the (possibly subsampled) training split only;
    validation and test reviews are encoded with it (unknown words -> ``[UNK]``).

    Args:
        root, source, train_subset, test_subset: see :func:`load_imdb_reviews`.
        max_length: tokens per review (truncated, right-padded).
        vocab_size, min_frequency: see :func:`train_word_tokenizer`.
        truncation: ``"head"`` or ``"head_tail"`` (:func:`truncate_ids`).

    Returns:
        :class:`TextClassificationData` with ``model_kwargs`` ``{"vocab_size": ...,
        "pad_id": 0}`` (the learnt vocabulary's actual size).

    Raises:
        DataFileError: a file is missing, corrupt or malformed.
        ValueError: sizes out of range or an unknown truncation.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
    reviews = load_imdb_reviews(
        root, source=source, train_subset=train_subset, test_subset=test_subset
    )
    tokenizer = train_word_tokenizer(reviews.train_text, vocab_size, min_frequency)

    def encode(split: datasets.Dataset) -> torch.Tensor:
        return encode_reviews(tokenizer, split, max_length, truncation)

    return TextClassificationData(
        x_train=encode(reviews.train),
        y_train=torch.from_numpy(reviews.train_label),
        x_val=encode(reviews.val),
        y_val=torch.from_numpy(reviews.val_label),
        x_test=encode(reviews.test),
        y_test=torch.from_numpy(reviews.test_label),
        model_kwargs={"vocab_size": tokenizer.get_vocab_size(), "pad_id": PAD_ID},
    )
