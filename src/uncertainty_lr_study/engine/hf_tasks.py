"""The Trainer backend's tasks: the data and model of each data set it reads, built
with the checkpoint's own tokenizer (IMDB: reviews -> classifier inputs, scored by
accuracy, precision, recall and F1; SQuAD v1.1: question + context windows, scored
by exact match and F1 after post-processing). Needs the ``hf`` extra."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from uncertainty_lr.integrations.hf import classification_variance, span_variance_fn
from uncertainty_lr_study.config import RunSettings
from uncertainty_lr_study.data import squad, squad_windows
from uncertainty_lr_study.data.hf_datasets import cached_map
from uncertainty_lr_study.data.imdb import NUM_CLASSES, load_imdb_reviews, truncate_ids
from uncertainty_lr_study.metrics import classification_metrics


def classifier_inputs(
    tokenizer: Any,
    reviews: datasets.Dataset,
    max_length: int,
    truncation: str = "head",
) -> datasets.Dataset:
    """Model inputs of a sequence classifier: ``[CLS] review [SEP]``, at most
    ``max_length`` tokens, unpadded (the collator pads each batch), made by a cached
    ``Dataset.map`` (:func:`~uncertainty_lr_study.data.hf_datasets.cached_map`: a
    later run with the same reviews, tokenizer and settings reads them from disk).

    The review's tokens are cut with :func:`uncertainty_lr_study.data.imdb.truncate_ids`
    (``"head"``: the first tokens; ``"head_tail"``: the first quarter and the last
    three quarters, Sun et al. 2019) before the special tokens are added.

    Args:
        tokenizer: a fast ``transformers`` tokenizer.
        reviews: ``N`` reviews with a ``text`` (str) and a ``label`` (int) column.
        max_length: tokens per input, special tokens included.
        truncation: ``"head"`` or ``"head_tail"``.

    Returns:
        ``N`` rows with ``input_ids``, ``attention_mask`` (lists of ints) and
        ``labels`` (int), in the reviews' order.

    Raises:
        ValueError: ``max_length`` leaves no room for the review's tokens.
    """
    prefix, suffix = special_tokens_around(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room besides the special tokens")
    key = {
        "tokenizer": tokenizer, "prefix": prefix, "suffix": suffix, "room": room,
        "truncation": truncation,
    }
    return cached_map(reviews, _classifier_batch, key, remove_columns=reviews.column_names)


def _classifier_batch(
    batch: dict[str, list], tokenizer: Any, prefix: list[int], suffix: list[int], room: int,
    truncation: str,
) -> dict[str, list]:
    """``Dataset.map`` function of :func:`classifier_inputs`."""
    ids = tokenizer(batch["text"], add_special_tokens=False, truncation=False, verbose=False)
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for seq, label in zip(ids["input_ids"], batch["label"]):
        full = prefix + truncate_ids(seq, room, truncation) + suffix
        out["input_ids"].append(full)
        out["attention_mask"].append([1] * len(full))
        out["labels"].append(int(label))
    return out


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer puts before and after one sequence (BERT:
    ``[CLS]`` and ``[SEP]``), read off its own encoding of a one-word text.

    Raises:
        ValueError: the tokenizer does not keep the word's ids in one piece.
    """
    plain = tokenizer("movie", add_special_tokens=False)["input_ids"]
    full = tokenizer("movie")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError("cannot locate the text between the tokenizer's special tokens")

@dataclass
class TransformerTask:
    """What :func:`train_transformer` needs to know about a task's data and model.

    Attributes:
        model_class: the ``transformers`` auto class of the model (its
            ``from_pretrained`` builds the task head).
        model_kwargs: extra ``from_pretrained`` arguments (e.g. ``num_labels``).
        train_set, val_set, test_set: model inputs, one row per example (IMDB: per
            review; SQuAD: per window), unpadded, with labels (``datasets.Dataset``
            from the cached tokenisation, or a list of dicts).
        compute_metrics: ``Trainer``'s ``compute_metrics`` for the validation set.
        test_metrics: ``PredictionOutput`` of the test set -> the ``test`` dict of
            ``metrics.json``.
        variance_fn: the predictive-variance signal of a training batch (see
            :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback`).
        info: facts for ``metrics.json`` (e.g. windows and questions counted).
    """

    model_class: Any
    model_kwargs: dict[str, Any]
    train_set: datasets.Dataset | list[dict[str, Any]]
    val_set: datasets.Dataset | list[dict[str, Any]]
    test_set: datasets.Dataset | list[dict[str, Any]]
    compute_metrics: Callable[[Any], dict[str, float]]
    test_metrics: Callable[[Any], dict[str, Any]]
    variance_fn: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)

def classification_task(s: RunSettings, tokenizer: Any, max_length: int) -> TransformerTask:
    """IMDB sentiment classification: reviews -> ``[CLS] review [SEP]`` inputs
    (:func:`classifier_inputs`), scored by accuracy, precision, recall and F1.

    Raises:
        DataFileError: missing or corrupt data files.
    """
    reviews = load_imdb_reviews(
        source=s.data_source, train_subset=s.train_subset, test_subset=s.test_subset
    )
    n_val = s.val_subset or len(reviews.val)

    def encode(split: datasets.Dataset) -> datasets.Dataset:
        return classifier_inputs(tokenizer, split, max_length, s.truncation)

    def test_metrics(prediction: Any) -> dict[str, Any]:
        logits = torch.from_numpy(np.asarray(prediction.predictions, dtype=np.float32))
        labels = torch.from_numpy(np.asarray(prediction.label_ids, dtype=np.int64))
        return {
            "loss": float(F.cross_entropy(logits, labels)),
            **classification_metrics(logits, labels, NUM_CLASSES),
        }

    return TransformerTask(
        model_class=AutoModelForSequenceClassification,
        model_kwargs={"num_labels": NUM_CLASSES},
        train_set=encode(reviews.train),
        val_set=encode(reviews.val.select(range(n_val))),
        test_set=encode(reviews.test),
        compute_metrics=lambda p: {
            "accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())
        },
        test_metrics=test_metrics,
        variance_fn=classification_variance,
    )

def question_answering_task(s: RunSettings, tokenizer: Any, max_length: int) -> TransformerTask:
    """SQuAD v1.1: question + context windows (:func:`~uncertainty_lr_study.data.squad_windows.tokenize_windows`,
    ``max_length`` tokens, ``doc_stride`` overlap), scored by exact match and F1 after
    post-processing (n-best 20, answers of at most 30 tokens; official v1.1 rules).

    The training set is every window of the training questions (windows without the
    answer labelled with ``[CLS]``); validation and test windows are labelled the
    same way, so that the Trainer also reports a loss on them.

    Raises:
        DataFileError: missing, corrupt or malformed data files.
    """
    splits = squad.load_squad(
        source=s.data_source,
        train_subset=s.train_subset,
        val_subset=s.val_subset,
        test_subset=s.test_subset,
    )

    def windows(rows: datasets.Dataset) -> squad_windows.Windows:
        return squad_windows.tokenize_windows(tokenizer, rows, max_length, s.doc_stride)

    train, val = windows(splits.train_rows), windows(splits.val_rows)
    test = windows(splits.test_rows)

    def scores(examples: list[squad.QAExample], w: squad_windows.Windows, p: Any) -> dict:
        _check_window_order(w, p.label_ids)
        start_logits, end_logits = p.predictions[:2]
        answers = squad_windows.postprocess_predictions(examples, w, start_logits, end_logits)
        return squad_windows.squad_scores(answers, examples, strict=True)  # every question answered

    def test_metrics(prediction: Any) -> dict[str, Any]:
        loss = prediction.metrics.get("test_loss", math.nan)
        return {"loss": float(loss), **scores(splits.test, test, prediction)}

    return TransformerTask(
        model_class=AutoModelForQuestionAnswering,
        model_kwargs={},
        train_set=train.features,
        val_set=val.features,
        test_set=test.features,
        compute_metrics=lambda p: scores(splits.val, val, p),
        test_metrics=test_metrics,
        variance_fn=span_variance_fn(tokenizer.sep_token_id),
        info={
            "train_questions": len(splits.train),
            "val_questions": len(splits.val),
            "test_questions": len(splits.test),
            "train_windows_with_answer": int(sum(train.has_answer)),
            "doc_stride": s.doc_stride,
            "n_best": squad_windows.N_BEST,
            "max_answer_length": squad_windows.MAX_ANSWER_LENGTH,
        },
    )

def _check_window_order(windows: squad_windows.Windows, label_ids: Any) -> None:
    """Refuse predictions that are not in window order (their labels must be the
    windows' own, in order): post-processing maps row ``i`` to window ``i``.

    Raises:
        RuntimeError: the evaluation loop reordered or dropped windows.
    """
    features = windows.features
    if isinstance(features, datasets.Dataset):
        expected = np.stack([features["start_positions"], features["end_positions"]], axis=1)
    else:
        expected = np.array([[f["start_positions"], f["end_positions"]] for f in features])
    got = np.stack([np.asarray(label_ids[0]), np.asarray(label_ids[1])], axis=1)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        raise RuntimeError(
            f"the evaluation returned {len(got)} predictions not in the order of the "
            f"{len(expected)} windows; evaluation must use a sequential sampler"
        )

TASK_BUILDERS: dict[str, Callable[[RunSettings, Any, int], TransformerTask]] = {
    "imdb": classification_task,
    "squad": question_answering_task,
}
"""The Trainer backend's data sets and how to build each task."""
