"""SQuAD v1.1: the real vendored data, windows and offsets, post-processing, the
official EM/F1 rules, and the Trainer path (on a tiny BERT: no download)."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from uncertainty_lr_study.data import DataFileError
from uncertainty_lr_study.data.checksums import sha256
from uncertainty_lr_study.data.squad import (
    DEV_SIZE,
    TRAIN_SIZE,
    VALIDATION_QUESTIONS,
    QAExample,
    load_squad,
    parse_squad,
    read_squad_file,
)
from uncertainty_lr_study.data.squad_windows import (
    Windows,
    postprocess_predictions,
    squad_scores,
    tokenize_windows,
)
from uncertainty_lr_study.paths import raw_data_dir

from helpers import transformer_settings

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def splits():
    return load_squad()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from uncertainty_lr_study.pretrained import resolve_pretrained

    return AutoTokenizer.from_pretrained(
        resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    )


def example(context: str, answer: str, start: int | None = None, question: str = "What?"):
    start = context.index(answer) if start is None else start
    return QAExample("q", "t", context, question, (answer,), (start,))


def labelled_text(w: Windows, k: int, context: str) -> str:
    f, offsets = w.features[k], w.offsets[k]
    return context[offsets[f["start_positions"]][0] : offsets[f["end_positions"]][1]]


def test_real_splits_are_article_disjoint_and_fixed(splits):
    assert len(splits.test) == DEV_SIZE == 10_570
    assert len(splits.val) == VALIDATION_QUESTIONS and len(splits.train) == TRAIN_SIZE
    assert len(splits.train) + len(splits.val) == 11_877
    assert not {e.title for e in splits.train} & {e.title for e in splits.val}
    assert sum(len(e.answers) for e in splits.test) == 34_726
    again = load_squad(train_subset=500, val_subset=100, test_subset=1000)
    assert [e.id for e in again.train] == [e.id for e in splits.train[:500]]
    assert [e.id for e in again.val] == [e.id for e in splits.val[:100]]
    assert [e.id for e in again.test] == [e.id for e in splits.test[:1000]]
    # the dev subset is a random sample, not the first articles of the file
    assert len({e.title for e in again.test}) > 40


def test_offsets_round_trip_on_the_real_training_windows(splits, tokenizer):
    """Every training window that contains the answer labels a span whose text
    contains the gold answer, and equals it after the official normalisation for at
    least 99% of windows (the rest: answers that are parts of words)."""
    w = tokenize_windows(tokenizer, splits.train, max_length=256, doc_stride=64)
    assert len(w) > len(splits.train)  # long contexts give several windows
    labelled = [k for k in range(len(w)) if w.has_answer[k]]
    assert len(labelled) >= len(splits.train)  # each answer lies in at least one window
    predictions, golds = {}, []
    for k in labelled:
        e = splits.train[w.example_index[k]]
        text = labelled_text(w, k, e.context)
        assert e.answers[0] in text
        predictions[str(k)] = text
        golds.append(QAExample(str(k), "", e.context, "", e.answers[:1], e.answer_starts[:1]))
    assert squad_scores(predictions, golds)["exact_match"] >= 0.99
    for k in range(len(w)):
        if not w.has_answer[k]:  # windows without the answer point at [CLS]
            assert w.features[k]["start_positions"] == w.features[k]["end_positions"] == 0
            assert w.features[k]["input_ids"][0] == tokenizer.cls_token_id


def test_answer_ending_at_the_last_context_character(tokenizer):
    context = "The treaty was signed in the city of Westphalia"
    e = example(context, "Westphalia")
    w = tokenize_windows(tokenizer, [e], max_length=64, doc_stride=16)
    assert len(w) == 1 and w.has_answer == [True]
    assert labelled_text(w, 0, context) == "Westphalia"
    # the last window of a long context ends at the last character too
    long_context = " ".join(f"word{i}" for i in range(120)) + " Westphalia"
    e = example(long_context, "Westphalia")
    w = tokenize_windows(tokenizer, [e], max_length=64, doc_stride=16)
    assert len(w) > 2 and w.has_answer[-1]
    assert labelled_text(w, len(w) - 1, long_context) == "Westphalia"


def test_answer_straddling_a_window_boundary(tokenizer):
    words = [f"w{i}" for i in range(200)]
    context = " ".join(words)
    e0 = example(context, "w1")
    first = tokenize_windows(tokenizer, [e0], max_length=64, doc_stride=24)
    last_token = max(i for i, o in enumerate(first.offsets[0]) if o is not None)
    boundary = first.offsets[0][last_token][1]  # the first window's context ends here
    # an answer of several words that starts inside the first window and ends after it
    start = context.rfind(" ", 0, boundary - 6) + 1
    end = context.find(" ", boundary + 4)
    answer = context[start:end]
    e = example(context, answer, start)
    w = tokenize_windows(tokenizer, [e], max_length=64, doc_stride=24)
    assert w.has_answer[0] is False
    assert w.features[0]["start_positions"] == w.features[0]["end_positions"] == 0
    holders = [k for k in range(len(w)) if w.has_answer[k]]
    assert holders and all(labelled_text(w, k, context) == answer for k in holders)


def test_doubled_spaces_in_the_context(tokenizer):
    context = "Paris  is the   capital  of France ."
    e = example(context, "the   capital")
    w = tokenize_windows(tokenizer, [e], max_length=64, doc_stride=16)
    assert labelled_text(w, 0, context) == "the   capital"


@pytest.mark.parametrize(
    ("prediction", "golds", "em", "f1"),
    [
        ("Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
        ("denver BRONCOS", ["Denver Broncos"], 1.0, 1.0),  # lower case
        ("Denver Broncos!", ["Denver Broncos"], 1.0, 1.0),  # punctuation
        ("the Denver Broncos", ["Denver Broncos"], 1.0, 1.0),  # articles a / an / the
        ("a Broncos", ["an Broncos"], 1.0, 1.0),
        ("Denver   Broncos", ["Denver Broncos"], 1.0, 1.0),  # whitespace
        ("theatre", ["atre"], 0.0, 0.0),  # articles only as whole words
        ("Denver", ["Denver Broncos"], 0.0, 2 / 3),  # P 1, R 1/2
        # 'the' dropped: P 2/4, R 2/2 -> F1 2/3 (with 'the' kept it would be 4/7)
        ("the big Denver Broncos team", ["Denver Broncos"], 0.0, 2 / 3),
        ("Broncos Denver", ["Denver Broncos"], 0.0, 1.0),  # F1 is a bag of tokens
        ("Broncos", ["Denver Broncos", "Broncos"], 1.0, 1.0),  # max over gold answers
        ("", ["Denver Broncos"], 0.0, 0.0),
        ("the", ["."], 1.0, 0.0),  # both normalise to empty: EM 1, F1 0 (official)
        ("Arab–Israeli", ["Arab Israeli"], 0.0, 0.0),  # the en dash is not punctuation
    ],
)
def test_exact_match_and_f1_follow_the_official_rules(prediction, golds, em, f1):
    e = QAExample("q", "t", "", "", tuple(golds), tuple(0 for _ in golds))
    scores = squad_scores({"q": prediction}, [e])
    assert scores["exact_match"] == pytest.approx(em)
    assert scores["f1"] == pytest.approx(f1)


def test_scores_average_over_questions_and_unanswered_ones_score_0():
    a = QAExample("a", "", "", "", ("x",), (0,))
    b = QAExample("b", "", "", "", ("y",), (0,))
    assert squad_scores({"a": "x", "b": "z"}, [a, b]) == {"exact_match": 0.5, "f1": 0.5}
    # the official script: an unanswered question counts, with score 0
    assert squad_scores({"a": "x"}, [a, b]) == {"exact_match": 0.5, "f1": 0.5}
    with pytest.raises(ValueError, match="no prediction for 1 question.*: b"):
        squad_scores({"a": "x"}, [a, b], strict=True)


def test_the_dev_questions_where_empty_against_empty_can_occur(splits):
    # the only gold answers of the vendored data that normalise to empty: '.' in
    # three dev questions; an empty prediction there scores EM 1 and F1 0
    from uncertainty_lr_study.metrics import normalize_answer

    questions = splits.test + splits.val + splits.train
    empty = {e.id for e in questions if any(not normalize_answer(a) for a in e.answers)}
    assert empty == {
        "5725bad5271a42140099d0c1", "5730b7ce069b5314008322c4", "57340d124776f419006617bf"
    }
    e = next(e for e in splits.test if e.id == "5730b7ce069b5314008322c4")
    assert squad_scores({e.id: ""}, [e]) == {"exact_match": 1.0, "f1": 0.0}
    assert squad_scores({e.id: "interventionism"}, [e]) == {"exact_match": 1.0, "f1": 1.0}


def test_postprocessing_picks_the_best_valid_span_across_two_windows():
    context = "alpha beta gamma delta epsilon zeta"
    spans = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 30), (31, 35)]
    e = QAExample("q", "", context, "?", ("gamma",), (11,))
    # token 0: [CLS], 1: question, then context tokens; window 0 holds words 0-3,
    # window 1 words 2-5
    offsets0 = [None, None, *spans[0:4], None]
    offsets1 = [None, None, *spans[2:6], None]
    windows = Windows(features=[{}, {}], example_index=[0, 0], offsets=[offsets0, offsets1])
    start = np.full((2, 8), -100.0)
    end = np.full((2, 8), -100.0)
    # window 0: the best scores sit on invalid places (the question token; end before
    # start), its best valid span is "beta" (score 3 + 3)
    start[0, 1], end[0, 1] = 50.0, 50.0
    start[0, 5], end[0, 2] = 20.0, 20.0
    start[0, 3], end[0, 3] = 3.0, 3.0
    # window 1: "gamma delta" scores 4 + 4 = 8 > 6
    start[1, 2], end[1, 3] = 4.0, 4.0
    answers = postprocess_predictions([e], windows, start, end)
    assert answers == {"q": "gamma delta"}
    # a span longer than max_answer_length is never chosen
    start[1, 2], end[1, 5] = 40.0, 40.0
    assert postprocess_predictions([e], windows, start, end, max_answer_length=3) == {
        "q": "gamma delta"
    }
    assert postprocess_predictions([e], windows, start, end, max_answer_length=4) == {
        "q": "gamma delta epsilon zeta"
    }
    # scores of a diverged model, or of the wrong shape, are refused
    start[0, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite start or end scores in window 0"):
        postprocess_predictions([e], windows, start, end)
    with pytest.raises(ValueError, match=r"shape \(windows, tokens\) = \(2, >= 7\)"):
        postprocess_predictions([e], windows, end[:, :5], end[:, :5])


def test_bad_subsets_and_settings_are_refused_before_any_work():
    from uncertainty_lr_study.config import ConfigError, RunSettings

    settings = qa_settings("checkpoint").to_dict()
    with pytest.raises(ValueError, match="train_subset must be an integer >= 0"):
        load_squad(train_subset=-1)
    with pytest.raises(ValueError, match="test_subset 20000 exceeds the 10,570 questions"):
        load_squad(test_subset=20_000)
    # the notebook's settings get the config's cross-field checks too
    with pytest.raises(ConfigError, match="'val_accuracy' is not measured on 'squad'"):
        RunSettings.from_dict({**settings, "target_metric": "val_accuracy"})
    with pytest.raises(ConfigError, match="a val_f1 target is a fraction in"):
        RunSettings.from_dict({**settings, "target_value": 40})


def test_malformed_files_are_refused_with_the_question_named(tmp_path):
    good = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{
        "context": "The cat sat.", "qas": [
            {"id": "q1", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]}
        ]}]}]}
    assert parse_squad(good)[0].answers == ("cat",)
    bad = json.loads(json.dumps(good))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 2
    with pytest.raises(DataFileError, match="question q1: answer 'cat' is not at answer_start 2"):
        parse_squad(bad, "x.json")
    for start, why in [(-9, "is not at answer_start -9"), ("4", "answer_start '4' is not an integer"),
                       (True, "answer_start True is not an integer")]:
        bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = start
        with pytest.raises(DataFileError, match=f"question q1: .*{why}"):
            parse_squad(bad)
    twice = json.loads(json.dumps(good))
    qas = twice["data"][0]["paragraphs"][0]["qas"]
    qas.append(dict(qas[0]))
    with pytest.raises(DataFileError, match="question id q1 occurs twice"):
        parse_squad(twice)
    missing = json.loads(json.dumps(good))
    del missing["data"][0]["paragraphs"][0]["context"]
    with pytest.raises(DataFileError, match=r"data\[0\]\.paragraphs\[0\]: expected a .context. string"):
        parse_squad(missing)
    with pytest.raises(DataFileError, match="top level"):
        parse_squad([good])
    with pytest.raises(DataFileError, match="holds no questions"):
        parse_squad({"data": []})
    path = tmp_path / "broken.json.gz"
    path.write_bytes(gzip.compress(b'{"data": [')[:-8])
    with pytest.raises(DataFileError, match="cannot be read as JSON"):
        read_squad_file(path)


def test_corrupt_vendored_file_is_named(tmp_path):
    folder = tmp_path / "squad"
    shutil.copytree(raw_data_dir() / "squad", folder)
    target = folder / "dev-v1.1.json.gz"
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataFileError, match="dev-v1.1.json.gz is corrupt.*git checkout data/raw/squad"):
        load_squad(root=folder)
    assert sha256(folder / "train-v1.1-subset.json.gz") == sha256(
        raw_data_dir() / "squad" / "train-v1.1-subset.json.gz"
    )


def test_span_variance_ignores_question_and_padding(tokenizer):
    import torch

    from uncertainty_lr.integrations.hf import span_variance_fn

    enc = tokenizer(["Who sat?"], ["The cat sat on the mat."], padding="max_length", max_length=24, return_tensors="pt")
    fn = span_variance_fn(tokenizer.sep_token_id)
    torch.manual_seed(0)
    start, end = torch.randn(1, 24), torch.randn(1, 24)
    out = type("Out", (), {"start_logits": start, "end_logits": end})
    value = fn(out, dict(enc))
    context = (enc["token_type_ids"] == 1) & (enc["input_ids"] != tokenizer.sep_token_id)
    changed_start, changed_end = start.clone(), end.clone()
    changed_start[~context], changed_end[~context] = 30.0, -30.0  # question, [SEP], padding
    out2 = type("Out", (), {"start_logits": changed_start, "end_logits": changed_end})
    assert float(fn(out2, dict(enc))) == pytest.approx(float(value))
    changed_start[context] += torch.linspace(0, 5, int(context.sum()))
    out3 = type("Out", (), {"start_logits": changed_start, "end_logits": end})
    assert float(fn(out3, dict(enc))) != pytest.approx(float(value))


def qa_settings(checkpoint, **overrides):
    return transformer_settings(
        checkpoint,
        **{
            "task": "squad-bert",
            "dataset": "squad",
            "target_metric": "val_f1",
            "target_value": 0.01,
            "train_subset": 40,
            "val_subset": 16,
            "test_subset": 24,
            "max_length": 96,
            "doc_stride": 24,
            "truncation": "head",
            "warmup_steps": 1,
            **overrides,
        },
    )


def test_trainer_question_answering_run_writes_exact_match_and_f1(tiny_checkpoint, tmp_path):
    from uncertainty_lr_study.engine.trainer import train_transformer

    metrics = train_transformer(
        qa_settings(
            tiny_checkpoint,
            scheduler="uncertainty-variance",
            warmup_steps=0,
            scheduler_params={"threshold": 1e-9},
            group_by_length=True,  # Hugging Face's length-grouped sampler
        ),
        tmp_path,
    )
    assert metrics["status"] == "completed"
    assert metrics["train_questions"] == 40 and metrics["test_questions"] == 24
    # windows, not questions, are the training examples (96 tokens: some contexts split)
    assert metrics["train_examples"] > 40
    assert metrics["steps"] == -(-metrics["train_examples"] // 16)
    test = metrics["test"]
    assert set(test) == {"loss", "exact_match", "f1"}
    assert 0 <= test["exact_match"] <= test["f1"] <= 1 and np.isfinite(test["loss"])
    history = pd.read_csv(tmp_path / "history.csv")
    evals = history[history["kind"] == "eval"]
    assert {"val_exact_match", "val_f1", "val_loss"} <= set(evals.columns)
    assert evals["val_f1"].between(0, 1).all() and "val_accuracy" not in evals
    assert set(metrics["final_val"]) == {"loss", "exact_match", "f1"}
    steps = history[history["kind"] == "step"]
    assert steps["predictive_variance"].between(0, 1).all()
    # the span variance fed the schedule: a decision per evaluation interval, each a
    # decrease (threshold below any variance)
    assert metrics["lr_decisions"]["decreases"] == metrics["steps"] // 2


def test_predictions_out_of_window_order_are_refused():
    from uncertainty_lr_study.engine.hf_tasks import _check_window_order

    features = [{"start_positions": s, "end_positions": e} for s, e in [(0, 0), (5, 7), (9, 9)]]
    windows = Windows(features=features, example_index=[0, 0, 1], offsets=[[], [], []])
    _check_window_order(windows, (np.array([0, 5, 9]), np.array([0, 7, 9])))
    with pytest.raises(RuntimeError, match="not in the order of the 3 windows"):
        _check_window_order(windows, (np.array([5, 0, 9]), np.array([7, 0, 9])))
