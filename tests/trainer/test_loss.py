"""The training loss with class weights and label smoothing (trainer/loss.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from trainer.loss import cross_entropy

# --class-weights balanced on 120 / 3 / 3 clips (trainer.learner.class_weights: inverse counts, mean 1)
WEIGHTS_40_TO_1 = torch.tensor([120.0, 3.0, 3.0]).reciprocal()
WEIGHTS_40_TO_1 = WEIGHTS_40_TO_1 / WEIGHTS_40_TO_1.mean()


def _batch(seed: int, n: int, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, classes, generator=g)
    target = torch.randint(classes, (n,), generator=g)
    weight = torch.rand(classes, generator=g) * 10 + 0.01
    return logits, target, weight


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), classes=st.integers(2, 12))
def test_without_smoothing_it_is_pytorchs_weighted_cross_entropy(seed, n, classes):
    logits, target, weight = _batch(seed, n, classes)
    torch.testing.assert_close(cross_entropy(logits, target, weight, 0.0),
                               F.cross_entropy(logits, target, weight=weight))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), classes=st.integers(2, 12),
       smoothing=st.floats(0.0, 0.5))
def test_it_is_the_weighted_mean_of_each_clips_smoothed_loss(seed, n, classes, smoothing):
    logits, target, weight = _batch(seed, n, classes)
    soft = torch.full((n, classes), smoothing / classes)
    soft[torch.arange(n), target] += 1.0 - smoothing
    per_clip = -(soft * logits.log_softmax(dim=1)).sum(dim=1)
    expected = (weight[target] * per_clip).sum() / weight[target].sum()
    torch.testing.assert_close(cross_entropy(logits, target, weight, smoothing), expected)
    # equal weights: the plain smoothed loss
    torch.testing.assert_close(cross_entropy(logits, target, torch.full((classes,), 2.5), smoothing),
                               F.cross_entropy(logits, target, label_smoothing=smoothing))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.2])
def test_a_majority_clip_is_pulled_toward_its_own_class(smoothing):
    """At 40:1 weights and the default smoothing (0.1), PyTorch's weighted smoothing pushes a
    majority clip's own logit down (the collapse of the majority class this loss avoids)."""
    logits = torch.zeros(1, 3, requires_grad=True)
    cross_entropy(logits, torch.tensor([0]), WEIGHTS_40_TO_1, smoothing).backward()
    assert logits.grad[0, 0] < 0 and (logits.grad[0, 1:] > 0).all()  # descent raises class 0
    if smoothing:
        reference = torch.zeros(1, 3, requires_grad=True)
        F.cross_entropy(reference, torch.tensor([0]), weight=WEIGHTS_40_TO_1, label_smoothing=smoothing).backward()
        assert reference.grad[0, 0] > 0  # what the weighted PyTorch loss does here
