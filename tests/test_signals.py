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
    assert float(predictive_variance(logits[:, torch.randperm(5)])) == pytest.approx(
        float(v), rel=1e-6
    )


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


# ------------------------------------------------------------- further signals
from uncertainty_lr.signals import (  # noqa: E402
    loss_variance,
    mc_dropout_variance,
    predictive_entropy,
    span_predictive_variance,
)


def test_predictive_entropy_bounds():
    one_hot = torch.full((3, 4), -1e4)
    one_hot[:, 1] = 1e4
    assert float(predictive_entropy(one_hot)) == pytest.approx(0.0, abs=1e-6)
    assert float(predictive_entropy(torch.zeros(5, 7))) == pytest.approx(math.log(7))
    logits = torch.log(torch.tensor([[0.5, 0.5, 1e-30]]))
    assert float(predictive_entropy(logits)) == pytest.approx(math.log(2), rel=1e-5)


def test_span_variance_ignores_masked_positions():
    start = torch.zeros(2, 6)
    end = torch.zeros(2, 6)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    start[:, 0] = 50.0  # a confident CLS / question position is masked out
    # uniform over 4 and over 2 context tokens: (3/4 + 1/2) / 2 for each of start and end
    assert float(span_predictive_variance(start, end, mask)) == pytest.approx((0.75 + 0.5) / 2)
    with pytest.raises(ValueError, match="at least two context tokens"):
        span_predictive_variance(start, end, torch.eye(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        span_predictive_variance(start, end[:, :5], mask)


def test_loss_variance():
    assert float(loss_variance(torch.tensor([1.0, 3.0]))) == pytest.approx(2.0)
    assert float(loss_variance(torch.full((8,), 0.7))) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        loss_variance(torch.tensor([1.0]))


class DropoutNet(torch.nn.Module):
    def __init__(self, p=0.5, functional=False):
        super().__init__()
        self.fc1 = torch.nn.Linear(6, 16)
        self.bn = torch.nn.BatchNorm1d(16)
        self.drop = torch.nn.Dropout(p) if not functional else torch.nn.Identity()
        self.functional, self.p = functional, p
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x):
        h = self.bn(torch.relu(self.fc1(x)))
        h = (
            torch.nn.functional.dropout(h, self.p, self.training)
            if self.functional
            else self.drop(h)
        )
        return self.fc2(h)


@pytest.mark.parametrize("functional", [False, True])
def test_mc_dropout_variance_restores_modes_rng_and_batchnorm(functional):
    torch.manual_seed(0)
    model = DropoutNet(functional=functional).eval()
    model.drop.train()  # a mixed state that must come back as it was
    probe = torch.randn(12, 6)
    bn_before = model.bn.running_mean.clone()
    rng_before = torch.get_rng_state()
    v = mc_dropout_variance(model, probe, passes=8)
    assert float(v) > 0.0
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(model.bn.running_mean, bn_before)
    assert not model.training and model.drop.training and not model.bn.training
    # deterministic given the global RNG state
    assert float(mc_dropout_variance(model, probe, passes=8)) == float(v)


def test_mc_dropout_variance_refuses_a_model_without_dropout():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="no active dropout"):
        mc_dropout_variance(model, torch.randn(5, 4))
    with pytest.raises(ValueError, match="passes"):
        mc_dropout_variance(DropoutNet(), torch.randn(5, 6), passes=1)
