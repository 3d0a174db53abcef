import logging
import math
import random

import pytest
import torch

from uncertainty_lr_study.metrics import (
    classification_metrics,
    normalize_answer,
    squad_exact_match,
    squad_f1,
    squad_v1_scores,
    time_to_target,
)


def test_classification_metrics_on_a_hand_made_case():
    # classes 0,1,2; confusion: class 0: 2 right; class 1: 1 right, 1 -> 2; class 2: 1 right
    targets = torch.tensor([0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 2, 2])
    m = classification_metrics(preds, targets, num_classes=3)
    assert m["accuracy"] == pytest.approx(4 / 5)
    # precision per class: 1, 1, 1/2 ; recall: 1, 1/2, 1 ; F1: 1, 2/3, 2/3
    assert m["precision_macro"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["recall_macro"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    logits = torch.nn.functional.one_hot(preds, 3).float()
    assert classification_metrics(logits, targets, 3) == m


def test_time_to_target_first_hit_and_never():
    steps, epochs, secs = [0, 10, 20, 30], [0.0, 0.5, 1.0, 1.5], [0.0, 1.0, 2.0, 3.0]
    hit = time_to_target([0.1, 0.9, 0.99, 0.995], 0.99, steps, epochs, secs)
    assert hit == {"reached": True, "steps": 20, "epochs": 1.0, "seconds": 2.0}
    miss = time_to_target([0.1, 0.9, 0.98, float("nan")], 0.99, steps, epochs, secs)
    assert miss == {"reached": False, "steps": None, "epochs": None, "seconds": None}
    loss = time_to_target([2.0, 1.0, 0.5, 0.1], 0.5, steps, epochs, secs, mode="min")
    assert loss["steps"] == 20
    with pytest.raises(ValueError, match="same length"):
        time_to_target([1.0], 0.5, [], [], [])
    assert math.isfinite(hit["epochs"])


# ------------------------------------------------------------------- SQuAD v1.1


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Denver BRONCOS", "denver broncos"),  # lower case
        ("ÉCOLE Normale", "école normale"),  # str.lower, Unicode letters too
        ("Denver, Broncos!", "denver broncos"),  # punctuation removed ...
        ("U.S.A.", "usa"),  # ... not replaced by a space
        ("rock-n-roll", "rocknroll"),
        ("$1,000 (approx.)", "1000 approx"),
        ("Arab–Israeli", "arab–israeli"),  # only string.punctuation: the en dash stays
        ("“quoted” ‘words’ — ok…", "“quoted” ‘words’ — ok…"),  # curly quotes, em dash, ellipsis
        ("the theory of a cat", "theory of cat"),  # articles a / an / the ...
        ("The Beatles", "beatles"),  # ... after lower-casing
        ("an apple, another", "apple another"),
        ("theory anthem atheist", "theory anthem atheist"),  # ... only as whole words
        ("bread a butter", "bread butter"),  # an article leaves a space
        ("the-end", "theend"),  # punctuation goes before articles: no word 'the' left
        ("a.m.", "am"),
        ("  Denver \t\n Broncos  ", "denver broncos"),  # whitespace collapsed
        ("Denver\u00a0Broncos", "denver broncos"),  # str.split: Unicode spaces too
        ("The", ""),
        (" . , ", ""),
        ("", ""),
    ],
)
def test_squad_normalisation_follows_the_official_rules(text, normalised):
    assert normalize_answer(text) == normalised


@pytest.mark.parametrize(
    ("prediction", "gold", "em", "f1"),
    [
        ("Denver Broncos", "denver broncos.", 1.0, 1.0),
        ("", "", 1.0, 0.0),  # both empty: EM 1, F1 0 (no common token)
        (".", "the", 1.0, 0.0),  # both normalise to empty
        ("", "Denver", 0.0, 0.0),
        ("Denver", "", 0.0, 0.0),
        ("Denver", "Denver Broncos", 0.0, 2 / 3),  # P 1, R 1/2
        ("Broncos Denver", "Denver Broncos", 0.0, 1.0),  # order does not matter
        # multisets: 'to' and 'be' common once each; P 2/6, R 2/2
        ("to be or not to be", "to be", 0.0, 0.5),
        # new x2 + york x1 common; P 3/3, R 3/4
        ("new new york", "new york new york", 0.0, 6 / 7),
        # york common once (not three times); P 1/3, R 1/2
        ("york york york", "new york", 0.0, 0.4),
        ("theatre", "atre", 0.0, 0.0),
    ],
)
def test_squad_exact_match_and_f1_of_one_pair(prediction, gold, em, f1):
    assert squad_exact_match(prediction, gold) == em
    assert squad_f1(prediction, gold) == pytest.approx(f1, abs=1e-15)


def test_squad_scores_take_the_max_over_golds_and_average_over_the_dataset():
    golds = {
        "a": ["Broncos", "Denver Broncos", "Denver"],  # EM 1, F1 1 (third gold)
        "b": ["Denver", "Broncos team"],  # EM 0; F1 max(1/2, 4/5) = 4/5
        "c": ["The", "the cat"],  # EM 1 from 'The' (both empty), F1 0 from both
        "d": ["x"],  # no prediction: 0 and 0
    }
    predictions = {"a": "Denver", "b": "Denver Broncos team", "c": "the", "z": "ignored"}
    scores = squad_v1_scores(predictions, golds)
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 0.8 + 0 + 0) / 4)
    percent = squad_v1_scores(predictions, golds, percent=True)
    assert percent == pytest.approx({"exact_match": 50.0, "f1": 45.0})


def test_squad_unanswered_questions_score_0_or_are_refused_in_strict_mode(caplog):
    golds = {"a": ["x"], "b": ["y"], "c": ["z"]}
    with caplog.at_level(logging.WARNING, logger="uncertainty_lr_study.metrics"):
        scores = squad_v1_scores({"a": "x"}, golds)
    assert scores == pytest.approx({"exact_match": 1 / 3, "f1": 1 / 3})
    assert "2 unanswered question(s) score 0: b, c" in caplog.text
    with pytest.raises(ValueError, match="no prediction for 2 question.*b, c"):
        squad_v1_scores({"a": "x"}, golds, strict=True)
    assert squad_v1_scores({"a": "x", "b": "y", "c": "w"}, golds, strict=True)["exact_match"] == (
        pytest.approx(2 / 3)
    )


def test_squad_scores_refuse_bad_input():
    with pytest.raises(ValueError, match="at least one question"):
        squad_v1_scores({}, {})
    with pytest.raises(ValueError, match="'q' has no gold answer"):
        squad_v1_scores({"q": "x"}, {"q": []})
    with pytest.raises(TypeError, match="'q' is a NoneType"):
        squad_v1_scores({"q": None}, {"q": ["x"]})


def test_squad_scores_agree_with_torchmetrics_except_empty_against_empty():
    # torchmetrics follows the same rules but gives F1 1 when both answers normalise
    # to empty (SQuAD v2's rule); elsewhere the two agree (to its float32)
    from torchmetrics.functional.text import squad

    rng = random.Random(0)
    words = ["the", "a", "an", "Denver", "broncos", "Broncos.", "theory", "–", "x", "(1)", ","]
    predictions, golds = {}, {}
    for k in range(300):
        qid = str(k)
        predictions[qid] = " ".join(rng.choices(words, k=rng.randint(0, 5)))
        golds[qid] = [" ".join(rng.choices(words, k=rng.randint(1, 4))) for _ in range(3)]
        if not normalize_answer(predictions[qid]):
            golds[qid] = [g for g in golds[qid] if normalize_answer(g)] or ["x"]
    ours = squad_v1_scores(predictions, golds, percent=True)
    theirs = squad(
        [{"prediction_text": p, "id": q} for q, p in predictions.items()],
        [{"answers": {"answer_start": [0] * len(g), "text": g}, "id": q} for q, g in golds.items()],
    )
    assert ours["exact_match"] == pytest.approx(float(theirs["exact_match"]), rel=1e-6)
    assert ours["f1"] == pytest.approx(float(theirs["f1"]), rel=1e-6)
    # and the one place they differ
    both_empty = squad(
        [{"prediction_text": "the", "id": "q"}],
        [{"answers": {"answer_start": [0], "text": ["."]}, "id": "q"}],
    )
    assert float(both_empty["exact_match"]) == float(both_empty["f1"]) == 100.0
    assert squad_v1_scores({"q": "the"}, {"q": ["."]}, percent=True)["f1"] == 0.0
