"""SQuAD v1.1 model inputs and answers: windows of question and context, and
post-processing of a model's start/end logits into scored answers.

Model inputs follow the standard recipe for extractive QA with a fast tokenizer
(:func:`tokenize_windows`): ``[CLS] question [SEP] context [SEP]``, truncating the
context only, long contexts split into overlapping windows (``doc_stride`` tokens
shared by consecutive windows), the answer's character span mapped to token
positions through the offset mapping; a window that does not contain the whole
answer is labelled with the ``[CLS]`` position (the usual "no answer here" label).
:func:`postprocess_predictions` maps start/end logits back to text (n-best spans
per window, best valid span over all windows of a question) and
:func:`squad_scores` computes exact match and F1 with the official v1.1 rules
(:func:`uncertainty_lr_study.metrics.squad_v1_scores`). The questions themselves:
:mod:`uncertainty_lr_study.data.squad`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np

from uncertainty_lr_study.data.hf_datasets import cached_map
from uncertainty_lr_study.data.squad import QAExample
from uncertainty_lr_study.metrics import squad_v1_scores

N_BEST = 20
"""Start and end candidates kept per window in post-processing (the usual value)."""
MAX_ANSWER_LENGTH = 30
"""Longest answer span in tokens considered in post-processing (the usual value)."""


@dataclass
class Windows:
    """Tokenized windows of a list of questions (output of :func:`tokenize_windows`).

    Attributes:
        features: one row per window (a ``datasets.Dataset``, or a list of dicts):
            ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if the tokenizer
            makes them), lists of ints, unpadded; with ``start_positions`` and
            ``end_positions`` (token indices; the ``[CLS]`` index when the window
            lacks the whole first answer) when labelled.
        example_index: per window, the index of its question in the input list.
        offsets: per window and token, the ``(start, end)`` character span in the
            context, or None for question, special and padding tokens.
        has_answer: per window, whether it contains the whole first answer.
    """

    features: datasets.Dataset | list[dict[str, Any]]
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]
    has_answer: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features)


def _question_limit(tokenizer: Any, questions: list[str], limit: int) -> list[str]:
    """Questions cut to at most ``limit`` tokens (at a token boundary), so the context
    keeps room in every window."""
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        out.append(q[: offsets[limit - 1][1]] if len(offsets) > limit else q)
    return out


DEFAULT_MAX_LENGTH = 384
"""Window length when the config sets none (the usual value for BERT-family models)."""
MIN_MAX_LENGTH = 32
"""Shortest window that :func:`tokenize_windows` accepts."""


def context_room(max_length: int) -> int:
    """Context tokens in a window of ``max_length`` tokens when the question takes its
    most (a quarter of the window), with 3 special tokens and a margin of 8; a
    ``doc_stride`` must stay below it (so each window adds new context), and a
    ``max_length`` below :data:`MIN_MAX_LENGTH` is refused."""
    return max_length - max_length // 4 - 3 - 8 if max_length >= MIN_MAX_LENGTH else 0


def tokenize_windows(
    tokenizer: Any,
    examples: Sequence[QAExample] | datasets.Dataset,
    max_length: int,
    doc_stride: int,
    labelled: bool = True,
) -> Windows:
    """Windows of ``question + context`` for an extractive QA model (module docs), made
    by a cached ``Dataset.map`` (:func:`~uncertainty_lr_study.data.hf_datasets.cached_map`:
    a later call with the same questions, tokenizer and settings reads them from disk).

    Args:
        tokenizer: a fast ``transformers`` tokenizer (offset mapping needed).
        examples: the questions: rows of :data:`~uncertainty_lr_study.data.squad.QUESTION_COLUMNS`
            (cached when Arrow-backed, as the splits' ``*_rows`` of
            :func:`~uncertainty_lr_study.data.squad.load_squad` are), or examples.
        max_length: tokens per window, special tokens included.
        doc_stride: tokens shared by consecutive windows of one context (the
            overlap, as in Hugging Face's ``stride``).
        labelled: add ``start_positions`` / ``end_positions`` (of each question's
            first answer).

    Returns:
        :class:`Windows`, in question order.

    Raises:
        ValueError: a slow tokenizer, or ``max_length`` / ``doc_stride`` that leave
            no room for the context.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("tokenize_windows needs a fast tokenizer (offset mapping)")
    room = context_room(max_length)
    if room < 1:
        raise ValueError(
            f"max_length {max_length} leaves no room for context; use at least {MIN_MAX_LENGTH}"
        )
    if not 0 <= doc_stride < room:
        raise ValueError(
            f"doc_stride {doc_stride} must be >= 0 and below {room}, the context tokens of a "
            f"{max_length}-token window (questions use up to {max_length // 4} tokens)"
        )
    if not isinstance(examples, datasets.Dataset):
        examples = datasets.Dataset.from_dict(
            {
                "question": [e.question for e in examples],
                "context": [e.context for e in examples],
                "answers": [list(e.answers) for e in examples],
                "answer_starts": [list(e.answer_starts) for e in examples],
            }
        )
    if len(examples) == 0:
        return Windows(features=[], example_index=[], offsets=[], has_answer=[])
    key = {
        "tokenizer": tokenizer, "max_length": max_length, "doc_stride": doc_stride,
        "labelled": labelled,
    }
    mapped = cached_map(
        examples, _window_batch, key, remove_columns=examples.column_names, with_indices=True
    )
    model_columns = [c for c in mapped.column_names if c not in WINDOW_FACTS]
    return Windows(
        features=mapped.select_columns(model_columns),
        example_index=list(mapped["example_index"]),
        offsets=[[tuple(o) if o is not None else None for o in row] for row in mapped["offsets"]],
        has_answer=list(mapped["has_answer"]),
    )


WINDOW_FACTS = ("example_index", "offsets", "has_answer")
"""Columns of the mapped windows that are not model inputs."""


def _window_batch(
    batch: dict[str, list],
    indices: list[int],
    tokenizer: Any,
    max_length: int,
    doc_stride: int,
    labelled: bool,
) -> dict[str, list]:
    """``Dataset.map`` function of :func:`tokenize_windows`: a batch of questions ->
    their windows (``indices``: the questions' rows, for ``example_index``)."""
    questions = _question_limit(tokenizer, [q.lstrip() for q in batch["question"]], max_length // 4)
    enc = tokenizer(
        questions,
        batch["context"],
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
        verbose=False,
    )
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    out: dict[str, list] = {k: [] for k in (*keys, *WINDOW_FACTS)}
    if labelled:
        out["start_positions"], out["end_positions"] = [], []
    for w, local in enumerate(enc["overflow_to_sample_mapping"]):
        sequence_ids = enc.sequence_ids(w)
        offsets = [
            tuple(o) if sid == 1 else None for o, sid in zip(enc["offset_mapping"][w], sequence_ids)
        ]
        for k in keys:
            out[k].append(list(enc[k][w]))
        contains = False
        if labelled:
            start_char = batch["answer_starts"][local][0]
            end_char = start_char + len(batch["answers"][local][0])
            start, end, contains = answer_token_span(offsets, start_char, end_char)
            if not contains:
                ids = out["input_ids"][-1]
                cls = tokenizer.cls_token_id
                start = end = ids.index(cls) if cls in ids else 0
            out["start_positions"].append(start)
            out["end_positions"].append(end)
        out["example_index"].append(int(indices[local]))
        out["offsets"].append([list(o) if o is not None else None for o in offsets])
        out["has_answer"].append(contains)
    return out


def answer_token_span(
    offsets: Sequence[tuple[int, int] | None], start_char: int, end_char: int
) -> tuple[int, int, bool]:
    """Token span of a character span ``[start_char, end_char)`` of the context.

    Args:
        offsets: per token, its character span in the context or None (not context).
        start_char, end_char: the answer's span (end exclusive).

    Returns:
        ``(start_token, end_token, contained)``: the first token whose span ends
        after ``start_char`` and the last whose span starts before ``end_char``
        (inclusive indices); ``contained`` is False (and the indices -1) when the
        window's context does not cover the whole answer.
    """
    context = [i for i, o in enumerate(offsets) if o is not None]
    if not context:
        return -1, -1, False
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return -1, -1, False
    start = next(i for i in context if offsets[i][1] > start_char)
    end = next(i for i in reversed(context) if offsets[i][0] < end_char)
    return start, end, True


def postprocess_predictions(
    examples: Sequence[QAExample],
    windows: Windows,
    start_logits: np.ndarray | Sequence[Sequence[float]],
    end_logits: np.ndarray | Sequence[Sequence[float]],
    n_best: int = N_BEST,
    max_answer_length: int = MAX_ANSWER_LENGTH,
) -> dict[str, str]:
    """Answer text of each question from its windows' start/end scores.

    In each window the ``n_best`` highest start and end positions are paired; a pair
    is valid when both tokens lie in the context, the end is not before the start,
    and the span has at most ``max_answer_length`` tokens. The valid pair with the
    highest ``start_logit + end_logit`` over all windows of the question wins; its
    text is the context between the start token's first and the end token's last
    character. A question without any valid pair gets the empty answer.

    Args:
        examples: the questions, as given to :func:`tokenize_windows`.
        windows: their windows.
        start_logits, end_logits: ``(W, L)`` scores per window and token (``L`` at
            least each window's length; positions beyond it are ignored, e.g. the
            ``-100`` padding of ``Trainer.predict``).
        n_best: candidates per window for the start and for the end.
        max_answer_length: longest span in tokens.

    Returns:
        ``{question id: answer text}`` for every question.

    Raises:
        ValueError: scores not of shape ``(windows, >= longest window)``, windows that
            refer to questions not given, non-finite scores on context tokens, or
            ``n_best`` / ``max_answer_length`` below 1.
    """
    start_logits = np.asarray(start_logits, dtype=np.float64)
    end_logits = np.asarray(end_logits, dtype=np.float64)
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best and max_answer_length must be >= 1, got {n_best}, {max_answer_length}")
    longest = max((len(o) for o in windows.offsets), default=0)
    for label, scores in (("start_logits", start_logits), ("end_logits", end_logits)):
        if scores.ndim != 2 or scores.shape[0] != len(windows) or scores.shape[1] < longest:
            raise ValueError(
                f"{label} must have shape (windows, tokens) = ({len(windows)}, >= {longest}), "
                f"got {scores.shape}"
            )
    if windows.example_index and not 0 <= max(windows.example_index) < len(examples):
        raise ValueError(
            f"the windows refer to {max(windows.example_index) + 1} questions, "
            f"{len(examples)} given"
        )
    best: dict[int, tuple[float, str]] = {}
    for w, (i, offsets) in enumerate(zip(windows.example_index, windows.offsets)):
        n = len(offsets)
        valid = np.array([o is not None for o in offsets], dtype=bool)
        if not (np.isfinite(start_logits[w, :n][valid]).all() and np.isfinite(end_logits[w, :n][valid]).all()):
            raise ValueError(f"non-finite start or end scores in window {w} (a diverged model?)")
        sl = np.where(valid, start_logits[w, :n], -np.inf)
        el = np.where(valid, end_logits[w, :n], -np.inf)
        starts = np.argsort(-sl, kind="stable")[:n_best]
        ends = np.argsort(-el, kind="stable")[:n_best]
        context = examples[i].context
        for s in starts:
            if not valid[s]:
                continue
            for e in ends:
                if not valid[e] or e < s or e - s + 1 > max_answer_length:
                    continue
                score = sl[s] + el[e]
                if i not in best or score > best[i][0]:
                    best[i] = (float(score), context[offsets[s][0] : offsets[e][1]])
    return {ex.id: best[i][1] if i in best else "" for i, ex in enumerate(examples)}


def squad_scores(
    predictions: dict[str, str], examples: Sequence[QAExample], *, strict: bool = False
) -> dict[str, float]:
    """Exact match and F1 of predicted answers, SQuAD v1.1 rules.

    The official evaluation script's rules (Rajpurkar et al. 2016), implemented in
    :func:`uncertainty_lr_study.metrics.squad_v1_scores`: answers are normalised (lower
    case, ASCII punctuation removed, the articles a/an/the removed, whitespace
    collapsed); EM is 1 if the normalised prediction equals a normalised gold answer;
    F1 is the token-overlap F1 of the bags of normalised tokens (0 when they share
    none, so also when both are empty); both take the maximum over the question's
    gold answers and are averaged over all questions, a question without a
    prediction scoring 0.

    Args:
        predictions: ``{question id: answer text}``.
        examples: the questions with their gold answers.
        strict: refuse questions without a prediction instead of scoring them 0.

    Returns:
        ``{"exact_match": float, "f1": float}`` as fractions in ``[0, 1]`` (the
        official script reports percentages: 100 x these).

    Raises:
        ValueError: no questions, or (``strict``) a question without a prediction.
        TypeError: a prediction that is not a string.
    """
    golds = {e.id: e.answers for e in examples}
    return squad_v1_scores(predictions, golds, strict=strict)
