import math

import pytest
import torch

from uncertainty_lr.metrics import classification_metrics, time_to_target


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
