"""The vendored files as Hugging Face ``datasets``, and tokenisation cached across runs.

:func:`load_file` reads one vendored file with ``datasets.load_dataset`` (the
``parquet`` or ``json`` builder) into an Arrow dataset kept in
:func:`~uncertainty_lr_study.paths.datasets_cache_dir`; :func:`cached_map` runs a
batched ``Dataset.map`` whose result is written beside it under a fingerprint of
the input, the function's source and a key the caller gives (the tokenizer and its
settings), so a second run of a task with the same data and tokenizer reads the
tokenised data from disk instead of tokenising again. Datasets built in memory
(``Dataset.from_dict``) are mapped in memory, uncached.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets
from datasets.fingerprint import Hasher

from uncertainty_lr_study.data.checksums import DataFileError
from uncertainty_lr_study.paths import datasets_cache_dir

datasets.disable_progress_bars()  # a job log gets the study's own progress lines only

MAP_BATCH_SIZE = 1_000
"""Examples per call of a mapped function (``datasets``' default)."""


def load_file(builder: str, path: Path, how_to_get: str, **builder_kwargs: Any) -> datasets.Dataset:
    """One vendored file as an Arrow-backed ``datasets.Dataset`` (no network).

    Args:
        builder: ``"parquet"`` or ``"json"`` (``datasets``' packaged builders).
        path: the file (checked against its checksum by the caller first).
        how_to_get: the sentence of the data set that says how to restore the file.
        builder_kwargs: passed to ``load_dataset`` (e.g. ``field="data"`` for JSON).

    Returns:
        Its one split, memory-mapped from the cache.

    Raises:
        DataFileError: naming the file, when the builder cannot read it.
    """
    try:
        loaded = datasets.load_dataset(
            builder,
            data_files={"train": str(path)},
            split="train",
            cache_dir=str(datasets_cache_dir()),
            **builder_kwargs,
        )
    except Exception as err:  # the builders wrap the reader's own error types
        cause = err.__cause__ or err
        raise DataFileError(
            f"data file {path} is not readable {builder} ({type(cause).__name__}: {cause}). "
            f"{how_to_get}"
        ) from err
    return loaded


def tokenizer_key(tokenizer: Any) -> str:
    """A digest of a tokenizer's full definition (vocabulary, normaliser, special
    tokens): the part of a cache key that says which tokenizer made the ids.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` or a fast ``transformers`` tokenizer.
    """
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    extra = {}
    if backend is not tokenizer:  # transformers: its special tokens and class as well
        extra = {"class": type(tokenizer).__name__, "special": tokenizer.special_tokens_map}
    blob = backend.to_str() + json.dumps(extra, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def cached_map(
    dataset: datasets.Dataset,
    function: Callable[..., dict[str, list]],
    key: Mapping[str, Any],
    remove_columns: list[str] | None = None,
    with_indices: bool = False,
) -> datasets.Dataset:
    """``dataset.map(function, batched=True)``, its result cached under a fingerprint.

    The fingerprint hashes the input's own fingerprint, the source of ``function``
    (a change to the code makes a new entry) and ``key``; a repeated call finds the
    file ``datasets`` wrote the first time and reads it instead of running
    ``function``.

    Args:
        dataset: the input (Arrow-backed for the result to be cached on disk).
        function: called with a batch (dict of column -> list of up to
            :data:`MAP_BATCH_SIZE` values) and ``**key``; returns the new columns
            (a batch may grow or shrink, as a window split does).
        key: the keyword arguments of ``function`` (a tokenizer is hashed by
            :func:`tokenizer_key`); every value that changes the output belongs here.
        remove_columns: input columns left out of the result (all of them when the
            number of rows changes).
        with_indices: pass the batch's row indices to ``function`` (its second
            argument).

    Returns:
        The mapped dataset.
    """
    described = {
        name: tokenizer_key(value) if hasattr(value, "to_str") or hasattr(value, "backend_tokenizer")
        else value
        for name, value in key.items()
    }
    fingerprint = Hasher.hash(
        [dataset._fingerprint, inspect.getsource(function), json.dumps(described, sort_keys=True, default=str)]
    )
    return dataset.map(
        function,
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        fn_kwargs=dict(key),
        remove_columns=remove_columns,
        with_indices=with_indices,
        new_fingerprint=fingerprint,
        load_from_cache_file=True,
    )
