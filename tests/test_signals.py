import math

import pytest
import torch

from uncertainty_lr.signals import gradient_norm, predictive_variance


def test_gradient_norm_is_global_l2_norm_and_matches_clip_grad_norm():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    model(torch.randn(8, 5)).pow(2).sum().backward()
    grads = [p.grad for p in model.parameters()]
    by_hand = math.sqrt(sum(float((g**2).sum()) for g in grads))
    g = gradient_norm(model.parameters())
    assert g.dim() == 0
    assert float(g) == pytest.approx(by_hand, rel=1e-6)
    clipped = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))
    assert float(g) == pytest.approx(float(clipped), rel=1e-6)


def test_gradient_norm_skips_parameters_without_gradient():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(2))
    a.grad = torch.tensor([3.0, 0.0, 4.0])
    assert float(gradient_norm([a, b])) == pytest.approx(5.0)
    assert float(gradient_norm([b])) == 0.0


def test_predictive_variance_is_zero_for_one_hot_and_maximal_for_uniform():
    one_hot = torch.full((4, 10), -1e4)
    one_hot[torch.arange(4), torch.tensor([0, 3, 9, 5])] = 1e4
    assert float(predictive_variance(one_hot)) == pytest.approx(0.0, abs=1e-6)
    for c in (2, 3, 10):
        uniform = torch.zeros(6, c)
        assert float(predictive_variance(uniform)) == pytest.approx((c - 1) / c)


def test_predictive_variance_known_value_and_bounds():
    # p = (0.5, 0.25, 0.25): sum p(1-p) = 0.25 + 0.1875 + 0.1875 = 0.625
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    assert float(predictive_variance(logits)) == pytest.approx(0.625)
    torch.manual_seed(1)
    v = predictive_variance(torch.randn(100, 7) * 3)
    assert 0.0 <= float(v) <= 6 / 7


def test_predictive_variance_is_invariant_to_logit_shift_and_class_order():
    torch.manual_seed(2)
    logits = torch.randn(16, 5)
    v = predictive_variance(logits)
    assert float(predictive_variance(logits + 7.0)) == pytest.approx(float(v), rel=1e-5)
    assert float(predictive_variance(logits[:, torch.randperm(5)])) == pytest.approx(float(v), rel=1e-6)


def test_predictive_variance_mask_excludes_positions():
    logits = torch.zeros(2, 3, 4)  # uniform everywhere: 0.75
    logits[0, 0] = torch.tensor([1e4, 0, 0, 0])  # confident: 0
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[0, 0] = False
    assert float(predictive_variance(logits, mask)) == pytest.approx(0.75)
    assert float(predictive_variance(logits)) == pytest.approx(0.75 * 5 / 6)


@pytest.mark.parametrize(
    "logits, mask, match",
    [
        (torch.zeros(4, 1), None, "C >= 2"),
        (torch.zeros(4, 3), torch.ones(3, dtype=torch.bool), "mask shape"),
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.bool), "selects no position"),
    ],
)
def test_predictive_variance_bad_input(logits, mask, match):
    with pytest.raises(ValueError, match=match):
        predictive_variance(logits, mask)
