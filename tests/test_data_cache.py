"""The ``datasets`` cache of the loaders: a second tokenisation of the same data with
the same function and settings reads the first one's result from disk (no call of
the function); a change of a setting makes a new entry; the entries live in the
configured cache folder."""

from __future__ import annotations

from pathlib import Path

from uncertainty_lr_study.data.hf_datasets import cached_map
from uncertainty_lr_study.data.imdb import encode_reviews, load_imdb_reviews, train_word_tokenizer

CALLS: list[int] = []


def _lengths(batch: dict[str, list], offset: int) -> dict[str, list]:
    CALLS.append(len(batch["text"]))
    return {"n": [len(t) + offset for t in batch["text"]]}


def test_a_second_map_reads_the_first_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("UNCERTAINTY_LR_DATASETS_CACHE", str(tmp_path))
    reviews = load_imdb_reviews(train_subset=50, test_subset=10)
    assert all(Path(f["filename"]).is_relative_to(tmp_path) for f in reviews.train.cache_files)
    CALLS.clear()
    first = cached_map(reviews.train, _lengths, {"offset": 0})
    assert sum(CALLS) == 50
    again = cached_map(reviews.train, _lengths, {"offset": 0})
    assert sum(CALLS) == 50, "the second map ran the function again"
    assert again.cache_files == first.cache_files and list(again["n"]) == list(first["n"])
    other = cached_map(reviews.train, _lengths, {"offset": 1})
    assert sum(CALLS) == 100 and list(other["n"]) == [n + 1 for n in first["n"]]
    # a run's token ids: cached on disk, and the same ids from the cache
    tokenizer = train_word_tokenizer(reviews.train_text, vocab_size=500)
    x = encode_reviews(tokenizer, reviews.train, max_length=32)
    entries = set(tmp_path.rglob("cache-*.arrow"))
    y = encode_reviews(tokenizer, reviews.train, max_length=32)
    assert set(tmp_path.rglob("cache-*.arrow")) == entries and x.equal(y)
    assert encode_reviews(tokenizer, reviews.train_text, max_length=32).equal(x)  # in memory
