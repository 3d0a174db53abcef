"""SQuAD v1.1 extractive question answering (Rajpurkar et al. 2016).

Splits (offline, the vendored files of ``data/raw/squad``): the official dev set
(10,570 questions) is the evaluation ("test") set, or the first ``test_subset``
questions of a fixed random order of it; the 11,877-question train subset is split
*by article* with a fixed seed (independent of the run's seed) into validation
(whole articles, at least :data:`VALIDATION_SIZE` questions) and training, so no
paragraph is shared. ``train_subset`` / ``val_subset`` take the first N questions
of a fixed random order. With ``source="hub"``, ``datasets.load_dataset("squad")``
gives the full train set (87,599 questions) and the same dev set.

Model inputs, post-processing and scores: :mod:`uncertainty_lr_study.data.squad_windows`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from uncertainty_lr_study.data.checksums import DataFileError, folder_problems, verify_folder
from uncertainty_lr_study.data.hf_datasets import cached_map, load_file
from uncertainty_lr_study.paths import raw_data_dir

FILES = {"train": "train-v1.1-subset.json.gz", "dev": "dev-v1.1.json.gz"}
DEV_SIZE = 10_570
"""Questions of the official dev set (the test set here)."""
TRAIN_FILE_SIZE = 11_877
"""Questions of the vendored train subset (before the validation articles are held out)."""
VALIDATION_SIZE = 1_000
"""Fewest questions of the held-out validation articles."""
VALIDATION_QUESTIONS = 1_116
"""Questions of the held-out validation articles of the vendored train subset (7
articles; a test pins it)."""
TRAIN_SIZE = TRAIN_FILE_SIZE - VALIDATION_QUESTIONS
"""Training questions offline (the most ``train_subset`` may ask for)."""
SPLIT_SEED = 20_160_605  # fixed: the same validation articles and subsets for every run
HOW_TO_GET = (
    "Restore the vendored copy with `git checkout data/raw/squad`, or download the "
    "official SQuAD v1.1 files (rajpurkar.github.io/SQuAD-explorer/) and check them "
    "against data/raw/squad/README.md."
)


@dataclass(frozen=True)
class QAExample:
    """One SQuAD question.

    Attributes:
        id: the official question id.
        title: the Wikipedia article's title.
        context: the paragraph.
        question: the question text.
        answers: the gold answer texts (1 in train, usually 3 in dev).
        answer_starts: character offset of each answer in ``context``.
    """

    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


@dataclass
class QASplits:
    """Training, validation and test questions.

    Attributes:
        train, val, test: lists of :class:`QAExample`.
        train_rows, val_rows, test_rows: the same questions in the same order as
            Arrow-backed ``datasets.Dataset`` rows (:data:`QUESTION_COLUMNS`), the
            input of the cached tokenisation
            (:func:`~uncertainty_lr_study.data.squad_windows.tokenize_windows`).
    """

    train: list[QAExample]
    val: list[QAExample]
    test: list[QAExample]
    train_rows: datasets.Dataset
    val_rows: datasets.Dataset
    test_rows: datasets.Dataset


QUESTION_COLUMNS = ("id", "title", "context", "question", "answers", "answer_starts")
"""One row per question: strings, and the answers' texts and character offsets (lists)."""


def verify_squad_files(root: str | Path | None = None) -> Path:
    """Check that both vendored files exist and match ``SHA256SUMS``.

    Returns:
        The folder checked.

    Raises:
        DataFileError: naming the missing or corrupt file and how to restore it.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "squad"
    return verify_folder(folder, tuple(FILES.values()), HOW_TO_GET)


def _malformed(name: str, where: str, problem: str) -> DataFileError:
    return DataFileError(f"{name} is not SQuAD v1.1 JSON: {where}: {problem}. {HOW_TO_GET}")


def parse_squad(data: Any, name: str = "SQuAD data") -> list[QAExample]:
    """Questions of a SQuAD v1.1 JSON document, checked.

    Args:
        data: the parsed JSON (``{"version", "data": [{"title", "paragraphs": [{"context",
            "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``).
        name: how to name the source in errors (e.g. the file path).

    Returns:
        One :class:`QAExample` per question, in file order.

    Raises:
        DataFileError: a missing field or a field of the wrong type (named with its
            place in the document), no questions at all, a duplicate question id, a
            question without answers, an empty answer, or an ``answer_start`` (an
            integer) at which the context does not contain the answer text (the error
            names the question id).
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise _malformed(name, "top level", 'expected an object with a "data" list')
    problems: list[str] = []
    out: list[QAExample] = []
    seen: set[str] = set()
    for a, article in enumerate(data["data"]):
        where = f"data[{a}]"
        if (
            not isinstance(article, dict)
            or not isinstance(article.get("title"), str)
            or not isinstance(article.get("paragraphs"), list)
        ):
            raise _malformed(
                name, where, 'expected an object with a "title" string and a "paragraphs" list'
            )
        for p, paragraph in enumerate(article["paragraphs"]):
            here = f"{where}.paragraphs[{p}]"
            if not isinstance(paragraph, dict):
                raise _malformed(name, here, "expected an object")
            context, qas = paragraph.get("context"), paragraph.get("qas")
            if not isinstance(context, str) or not isinstance(qas, list):
                raise _malformed(name, here, 'expected a "context" string and a "qas" list')
            for q, qa in enumerate(qas):
                at = f"{here}.qas[{q}]"
                if not isinstance(qa, dict):
                    raise _malformed(name, at, "expected an object")
                qid, question, answers = qa.get("id"), qa.get("question"), qa.get("answers")
                if not isinstance(qid, str) or not isinstance(question, str):
                    raise _malformed(name, at, 'expected an "id" and a "question" string')
                if not isinstance(answers, list):
                    raise _malformed(name, at, 'expected an "answers" list')
                if qid in seen:
                    problems.append(f"question id {qid} occurs twice")
                seen.add(qid)
                if not answers:
                    problems.append(f"question {qid} has no answer")
                    continue
                texts, starts = [], []
                for ans in answers:
                    text = ans.get("text") if isinstance(ans, dict) else None
                    start = ans.get("answer_start") if isinstance(ans, dict) else None
                    if not isinstance(text, str) or not text.strip():
                        problems.append(f"question {qid}: an answer without text")
                        continue
                    if isinstance(start, bool) or not isinstance(start, int):
                        problems.append(f"question {qid}: answer_start {start!r} is not an integer")
                        continue
                    if not 0 <= start <= len(context) - len(text) or (
                        context[start : start + len(text)] != text
                    ):
                        problems.append(
                            f"question {qid}: answer {text!r} is not at answer_start {start} "
                            "of its context"
                        )
                        continue
                    texts.append(text)
                    starts.append(start)
                if len(texts) == len(answers):
                    out.append(
                        QAExample(
                            id=qid,
                            title=article["title"],
                            context=context,
                            question=question,
                            answers=tuple(texts),
                            answer_starts=tuple(starts),
                        )
                    )
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataFileError(f"{name} is malformed: {shown}{more}. {HOW_TO_GET}")
    if not out:
        raise DataFileError(f"{name} holds no questions. {HOW_TO_GET}")
    return out


def read_squad_file(path: str | Path) -> list[QAExample]:
    """Read and check a SQuAD v1.1 JSON file (``.json`` or ``.json.gz``).

    Raises:
        DataFileError: missing; unreadable (a truncated or corrupt gzip stream); not
            UTF-8; not JSON (or nested too deeply to parse); or malformed
            (:func:`parse_squad`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"data file {path} is missing. {HOW_TO_GET}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError, RecursionError) as err:
        # ValueError covers json.JSONDecodeError; RecursionError a hostile nesting depth
        raise DataFileError(
            f"data file {path} cannot be read as JSON ({type(err).__name__}: {err}). {HOW_TO_GET}"
        ) from err
    return parse_squad(data, str(path))


def question_rows(path: str | Path) -> datasets.Dataset:
    """The questions of a SQuAD v1.1 file (checked by :func:`read_squad_file` first) as
    an Arrow-backed dataset, one row per question in file order
    (:data:`QUESTION_COLUMNS`), read with ``datasets``' ``json`` builder and flattened
    with a cached ``Dataset.map``.

    Raises:
        DataFileError: the builder cannot read the file.
    """
    articles = load_file("json", Path(path), HOW_TO_GET, field="data")
    return cached_map(articles, _flatten_articles, {}, remove_columns=articles.column_names)


def _flatten_articles(batch: dict[str, list]) -> dict[str, list]:
    """``Dataset.map`` function of :func:`question_rows`: articles -> questions."""
    out: dict[str, list] = {name: [] for name in QUESTION_COLUMNS}
    for title, paragraphs in zip(batch["title"], batch["paragraphs"]):
        for paragraph in paragraphs:
            for qa in paragraph["qas"]:
                out["id"].append(qa["id"])
                out["title"].append(title)
                out["context"].append(paragraph["context"])
                out["question"].append(qa["question"])
                out["answers"].append([a["text"] for a in qa["answers"]])
                out["answer_starts"].append([int(a["answer_start"]) for a in qa["answers"]])
    return out


def _rows_of(table: datasets.Dataset, every: list[QAExample], chosen: list[QAExample]) -> datasets.Dataset:
    """The rows of ``table`` (the questions ``every``, in order) of the questions ``chosen``."""
    position = {e.id: i for i, e in enumerate(every)}
    return table.select([position[e.id] for e in chosen])


def check_squad_files(root: str | Path | None = None) -> list[str]:
    """Every problem of the vendored files: checksums, then each file's full parse
    and structure checks (:func:`read_squad_file`; about 0.3 s for both).

    Args:
        root: the folder (default ``data/raw/squad``).

    Returns:
        One message per bad file, naming it and the fix; empty when both are good.
    """
    folder = Path(root) if root is not None else raw_data_dir() / "squad"
    return folder_problems(folder, tuple(FILES.values()), HOW_TO_GET, read_squad_file)


def split_by_article(
    examples: Sequence[QAExample], val_size: int, seed: int = SPLIT_SEED
) -> tuple[list[QAExample], list[QAExample]]:
    """Hold out whole articles until they hold at least ``val_size`` questions.

    Articles are taken in a ``numpy.random.default_rng(seed)`` permutation of their
    titles (sorted first, so the result does not depend on file order).

    Returns:
        ``(train, val)``, each in the input order.
    """
    titles = sorted({e.title for e in examples})
    counts = {t: 0 for t in titles}
    for e in examples:
        counts[e.title] += 1
    held: set[str] = set()
    total = 0
    for i in np.random.default_rng(seed).permutation(len(titles)):
        if total >= val_size:
            break
        held.add(titles[i])
        total += counts[titles[i]]
    train = [e for e in examples if e.title not in held]
    val = [e for e in examples if e.title in held]
    return train, val


def _first(examples: list[QAExample], n: int, seed: int) -> list[QAExample]:
    """The first ``n`` questions of a fixed random order (all, in that order, if n == 0)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    if n:
        order = order[:n]
    return [examples[i] for i in order]


def _from_hub() -> tuple[list[QAExample], list[QAExample], datasets.Dataset, datasets.Dataset]:
    """Train and dev questions of ``datasets.load_dataset("squad")`` (network), as
    examples and as question rows."""
    ds = datasets.load_dataset("squad")

    def rows(split: datasets.Dataset) -> datasets.Dataset:
        return cached_map(split, _hub_rows, {}, remove_columns=split.column_names)

    def convert(table: datasets.Dataset) -> list[QAExample]:
        return [
            QAExample(
                id=r["id"],
                title=r["title"],
                context=r["context"],
                question=r["question"],
                answers=tuple(r["answers"]),
                answer_starts=tuple(r["answer_starts"]),
            )
            for r in table
        ]

    train, dev = rows(ds["train"]), rows(ds["validation"])
    return convert(train), convert(dev), train, dev


def _hub_rows(batch: dict[str, list]) -> dict[str, list]:
    """``Dataset.map`` function: the hub's SQuAD columns -> :data:`QUESTION_COLUMNS`."""
    return {
        "id": batch["id"],
        "title": batch["title"],
        "context": batch["context"],
        "question": batch["question"],
        "answers": [a["text"] for a in batch["answers"]],
        "answer_starts": [[int(x) for x in a["answer_start"]] for a in batch["answers"]],
    }


def load_squad(
    source: str = "local",
    train_subset: int = 0,
    val_subset: int = 0,
    test_subset: int = 0,
    root: str | Path | None = None,
) -> QASplits:
    """The three splits of the study (see the module docs).

    Args:
        source: ``"local"`` (vendored files, checked against ``SHA256SUMS``) or
            ``"hub"`` (``datasets.load_dataset("squad")``).
        train_subset, val_subset, test_subset: keep the first N questions of each
            split's fixed random order (0: all, still in that order).
        root: folder of the vendored files (default ``data/raw/squad``).

    Raises:
        DataFileError: missing, corrupt or malformed files.
        ValueError: a subset larger than its split.
    """
    for label, n in (("train", train_subset), ("val", val_subset), ("test", test_subset)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{label}_subset must be an integer >= 0 (0: all), got {n!r}")
    if source == "local":
        folder = verify_squad_files(root)
        train_all = read_squad_file(folder / FILES["train"])
        dev = read_squad_file(folder / FILES["dev"])
        train_table = question_rows(folder / FILES["train"])
        dev_table = question_rows(folder / FILES["dev"])
    elif source == "hub":
        train_all, dev, train_table, dev_table = _from_hub()
    else:
        raise ValueError(f"source must be 'local' or 'hub', got {source!r}")
    train, val = split_by_article(train_all, VALIDATION_SIZE)
    for name, n, split in (("train", train_subset, train), ("val", val_subset, val), ("test", test_subset, dev)):
        if n > len(split):
            raise ValueError(
                f"{name}_subset {n} exceeds the {len(split):,} questions of the {name} split"
            )
    train = _first(train, train_subset, SPLIT_SEED)
    val = _first(val, val_subset, SPLIT_SEED + 1)
    test = _first(dev, test_subset, SPLIT_SEED + 2)
    return QASplits(
        train=train,
        val=val,
        test=test,
        train_rows=_rows_of(train_table, train_all, train),
        val_rows=_rows_of(train_table, train_all, val),
        test_rows=_rows_of(dev_table, dev, test),
    )
