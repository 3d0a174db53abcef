"""IMDB: the real vendored data, the LSTM path (vocabulary, padding, empty reviews)
and the Trainer path (on a tiny BERT built from a config: no download)."""

from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from uncertainty_lr_study.data import DataFileError
from uncertainty_lr_study.data.checksums import sha256
from uncertainty_lr_study.data.imdb import (
    PAD_ID,
    UNK_ID,
    encode_reviews,
    load_imdb,
    load_imdb_reviews,
    stratified_order,
    train_word_tokenizer,
    truncate_ids,
)
from uncertainty_lr_study.models import LSTMClassifier
from uncertainty_lr_study.paths import raw_data_dir

from helpers import transformer_settings


@pytest.fixture(scope="module")
def reviews():
    return load_imdb_reviews()


def test_real_imdb_splits_are_balanced_and_fixed(reviews):
    assert len(reviews.train_text) == 22_500 and len(reviews.val_text) == 2_500
    assert len(reviews.test_text) == 25_000
    assert np.bincount(reviews.val_label).tolist() == [1_250, 1_250]
    assert np.bincount(reviews.test_label).tolist() == [12_500, 12_500]
    # the files are sorted by label: the stratified order makes every prefix balanced
    assert np.bincount(reviews.train_label[:1000]).tolist() == [500, 500]
    assert not any("<br />" in t for t in reviews.train_text[:2000])
    again = load_imdb_reviews(train_subset=100, test_subset=200)
    assert again.train_text == reviews.train_text[:100]
    assert again.val_text == reviews.val_text
    assert np.bincount(again.test_label).tolist() == [100, 100]
    assert set(again.test_text) <= set(reviews.test_text)


def test_stratified_order_is_a_balanced_permutation():
    labels = np.array([0] * 70 + [1] * 30)
    order = stratified_order(labels, seed=3)
    assert sorted(order.tolist()) == list(range(100))
    assert np.bincount(labels[order[:60]]).tolist() == [30, 30]
    assert np.array_equal(order, stratified_order(labels, seed=3))
    assert not np.array_equal(order, stratified_order(labels, seed=4))


def test_vocabulary_comes_from_training_text_and_round_trips():
    texts = ["A good movie, a GOOD cast!", "good plot; bad ending", "bad movie"] * 2
    tok = train_word_tokenizer(texts, vocab_size=100, min_frequency=2)
    vocab = tok.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert {"good", "movie", "bad", ",", "!"} <= set(vocab)
    ids = encode_reviews(tok, ["Good movie, bad ending!"], max_length=8)[0]
    words = [tok.id_to_token(i) for i in ids.tolist() if i != PAD_ID]
    assert words == ["good", "movie", ",", "bad", "ending", "!"]
    # a word never seen in training maps to [UNK]; the vocabulary size is capped
    assert encode_reviews(tok, ["superb movie"], max_length=4)[0].tolist() == [UNK_ID, vocab["movie"], 0, 0]
    assert train_word_tokenizer(texts, vocab_size=5).get_vocab_size() == 5


def test_truncation_head_and_head_tail():
    ids = list(range(20))
    assert truncate_ids(ids, 30) == ids
    assert truncate_ids(ids, 8) == list(range(8))
    assert truncate_ids(ids, 8, "head_tail") == [0, 1, 14, 15, 16, 17, 18, 19]
    with pytest.raises(ValueError, match="truncation"):
        truncate_ids(ids, 8, "tail")


def test_empty_review_gets_a_finite_prediction():
    tok = train_word_tokenizer(["fine film"] * 3, vocab_size=10)
    x = encode_reviews(tok, ["", "<br />".replace("<br />", " "), "fine"], max_length=6)
    assert x[0].tolist() == [PAD_ID] * 6 and x[1].tolist() == [PAD_ID] * 6
    for bidirectional in (False, True):
        model = LSTMClassifier(vocab_size=10, hidden_size=8, embedding_dim=8, bidirectional=bidirectional)
        logits = model.eval()(x)
        assert logits.shape == (3, 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padded_batch_gives_the_logits_of_the_unpadded_sequences(bidirectional):
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=50, embedding_dim=16, hidden_size=12, bidirectional=bidirectional).eval()
    seqs = [torch.randint(2, 50, (n,)) for n in (7, 15, 1, 4)]
    batch = torch.full((4, 20), PAD_ID)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    with torch.no_grad():
        padded = model(batch)
        alone = torch.cat([model(s[None]) for s in seqs])
    torch.testing.assert_close(padded, alone, atol=1e-6, rtol=1e-5)


def test_lstm_data_tensors_from_the_real_files():
    data = load_imdb(max_length=32, vocab_size=2_000, train_subset=500, test_subset=300)
    assert data.x_train.shape == (500, 32) and data.x_val.shape == (2_500, 32)
    assert data.x_test.shape == (300, 32) and data.x_train.dtype == torch.int64
    assert data.model_kwargs == {"vocab_size": 2_000, "pad_id": PAD_ID}
    assert int(data.x_train.max()) < 2_000
    # most positions of a 32-token window are real words, some unknown
    assert (data.x_val != PAD_ID).float().mean() > 0.95
    assert 0 < (data.x_val == UNK_ID).float().mean() < 0.2


@pytest.fixture
def imdb_copy(tmp_path):
    folder = tmp_path / "imdb"
    shutil.copytree(raw_data_dir() / "imdb", folder)
    return folder


def test_corrupt_and_missing_files_are_named(imdb_copy):
    path = imdb_copy / "test.parquet"
    blob = bytearray(path.read_bytes())
    blob[1000] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataFileError, match=r"test\.parquet is corrupt.*expected 14a30f52"):
        load_imdb_reviews(imdb_copy)
    path.unlink()
    with pytest.raises(DataFileError, match=r"test\.parquet is missing.*git checkout data/raw/imdb"):
        load_imdb_reviews(imdb_copy)


def test_malformed_file_with_a_matching_checksum_is_refused(imdb_copy):
    buf = io.BytesIO()
    pd.DataFrame({"text": ["a", "b"], "stars": [1, 2]}).to_parquet(buf)
    (imdb_copy / "train.parquet").write_bytes(buf.getvalue())
    sums = (imdb_copy / "SHA256SUMS").read_text().splitlines()
    sums = [f"{sha256(imdb_copy / 'train.parquet')}  train.parquet" if "train" in s else s for s in sums]
    (imdb_copy / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    with pytest.raises(DataFileError, match=r"lacks column\(s\) \['label'\]"):
        load_imdb_reviews(imdb_copy)


# --------------------------------------------------------------------- Trainer path

transformers = pytest.importorskip("transformers")


def as_reviews(texts, labels):
    """Reviews as the loaders give them (a dataset of text and label), in memory."""
    from datasets import Dataset

    return Dataset.from_dict({"text": texts, "label": labels})


def test_transformer_inputs_have_special_tokens_and_keep_head_and_tail(tiny_checkpoint):
    from transformers import AutoTokenizer

    from uncertainty_lr_study.engine.hf_tasks import classifier_inputs as encode_for_bert

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    words = " ".join(f"w{i}" for i in range(200))
    plain = tok(words, add_special_tokens=False)["input_ids"]
    (item,) = encode_for_bert(tok, as_reviews([words], [1]), max_length=42, truncation="head_tail")
    ids = item["input_ids"]
    assert len(ids) == 42 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1:11] == plain[:10] and ids[11:-1] == plain[-30:]
    assert item["labels"] == 1 and item["attention_mask"] == [1] * 42
    (short,) = encode_for_bert(tok, as_reviews(["a fine film"], [0]), max_length=42)
    assert tok.decode(short["input_ids"]) == "[CLS] a fine film [SEP]"


def test_trainer_run_writes_the_run_contract_with_our_schedule(tiny_checkpoint, tmp_path):
    from uncertainty_lr_study.engine.trainer import train_transformer

    metrics = train_transformer(transformer_settings(tiny_checkpoint), tmp_path)
    assert metrics["status"] == "completed" and metrics["steps"] == 6
    assert set(metrics["test"]) >= {"accuracy", "precision", "recall", "f1", "f1_macro", "loss"}
    assert json.loads((tmp_path / "metrics.json").read_text())["test"] == metrics["test"]
    assert not (tmp_path / "checkpoint").exists()
    history = pd.read_csv(tmp_path / "history.csv")
    evals = history[history["kind"] == "eval"]
    assert evals["step"].tolist() == [0, 2, 4, 6]
    steps = history[history["kind"] == "step"]
    assert steps["step"].tolist() == [1, 2, 3, 4, 5, 6]
    # the LR each step trained at is the registry's: linear warmup over 2 steps
    # (lr/2, lr), then cosine over the other 4 (the Trainer's own schedule never ran)
    cosine = [1e-3 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    np.testing.assert_allclose(steps["lr"].tolist(), [5e-4, 1e-3, *cosine], atol=1e-12)
    assert metrics["final_lr"][0] == pytest.approx(0.0, abs=1e-12)
    assert np.isfinite(steps["grad_norm"]).all() and np.isfinite(steps["predictive_variance"]).all()


def test_trainer_run_feeds_the_uncertainty_schedule_per_evaluation_interval(tiny_checkpoint, tmp_path):
    from uncertainty_lr_study.engine.trainer import train_transformer

    settings = transformer_settings(
        tiny_checkpoint,
        scheduler="uncertainty-gradnorm",
        warmup_steps=0,
        scheduler_params={"threshold": 1e-6},  # always above: lowers at every decision
    )
    metrics = train_transformer(settings, tmp_path)
    # 6 steps, a decision every 2 (the evaluation interval): 3 decreases of x0.5
    assert metrics["lr_decisions"]["decreases"] == 3
    assert metrics["final_lr"][0] == pytest.approx(1e-3 * 0.5**3)


def test_offline_run_without_a_local_checkpoint_says_how_to_get_one():
    from uncertainty_lr_study.pretrained import PretrainedError, resolve_pretrained

    with pytest.raises(PretrainedError, match="make prepare.*data/models/bert-base-uncased"):
        resolve_pretrained("bert-base-uncased", offline=True)
    assert resolve_pretrained("bert-base-uncased", offline=False) == "bert-base-uncased"


def test_interrupted_trainer_run_resumes_from_its_last_checkpoint(tiny_checkpoint, tmp_path, monkeypatch):
    """A crash after the step-4 checkpoint (fault injected into the training step);
    the same call again resumes there and ends as an uninterrupted run does."""
    from transformers import Trainer

    from uncertainty_lr_study.engine.trainer import train_transformer

    settings = transformer_settings(tiny_checkpoint, scheduler="uncertainty-variance", warmup_steps=0)
    whole = train_transformer(settings, tmp_path / "whole")

    original = Trainer.training_step

    def crash_at_step_5(self, *args, **kwargs):
        if self.state.global_step == 4:
            raise RuntimeError("injected fault")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_step_5)
    with pytest.raises(RuntimeError, match="injected fault"):
        train_transformer(settings, tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoint" / "checkpoint-4" / "run_history.json").is_file()
    assert not (tmp_path / "cut" / "metrics.json").exists()
    monkeypatch.setattr(Trainer, "training_step", original)
    resumed = train_transformer(settings, tmp_path / "cut")
    assert resumed["resumed_from_epoch"] == pytest.approx(4 / 6)
    assert resumed["steps"] == whole["steps"] == 6
    a = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    b = pd.read_csv(tmp_path / "cut" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5)
    assert resumed["test"] == pytest.approx(whole["test"], rel=1e-5)
    assert resumed["lr_decisions"] == whole["lr_decisions"]


def test_two_process_data_parallel_run_launched_from_the_library(tiny_checkpoint, tmp_path):
    """DDP on the CPU (2 gloo processes), launched the way the notebook does
    (:func:`uncertainty_lr_study.experiment.run`): one set of outputs, the global batch kept."""
    from uncertainty_lr_study.experiment import run

    settings = transformer_settings(
        tiny_checkpoint, scheduler="uncertainty-gradnorm", warmup_steps=0, num_processes=2,
        scheduler_params={"threshold": 1e-6},
    )
    metrics = run(settings, tmp_path)
    assert metrics["status"] == "completed" and metrics["num_processes"] == 2
    assert metrics["steps"] == 6  # 96 reviews, global batch 16 = 2 x 8
    assert metrics["lr_decisions"]["decreases"] == 3  # the ranks' averaged signal
    assert set(metrics["test"]) >= {"accuracy", "f1"}
    evals = pd.read_csv(tmp_path / "history.csv").query("kind == 'eval'")
    assert evals["step"].tolist() == [0, 2, 4, 6]
    assert not (tmp_path / "checkpoint").exists()
