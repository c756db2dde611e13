"""iBOT masked-patch loss: per-patch cross-entropy, averaged within each image, then over all images."""
from __future__ import annotations

import math

import pytest
import torch

from vtp.losses.ibot import IBOTLoss

LN3 = math.log(3.0)


def test_hand_computed():
    """K=2, student_temp 1. Image 0 has two masked patches, image 1 one, image 2 none (counts as zero)."""
    loss = IBOTLoss(prototypes=2, student_temp=1.0)
    student = torch.tensor([[0.0, LN3], [0.0, 0.0], [LN3, 0.0]])  # softmax rows: (1/4, 3/4), (1/2, 1/2), (3/4, 1/4)
    teacher = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    sample_index = torch.tensor([0, 0, 1])
    # patch CEs: ln(4/3), ln 2, ln(4/3); image means: (ln(4/3) + ln 2) / 2, ln(4/3), 0
    expected = ((math.log(4 / 3) + math.log(2)) / 2 + math.log(4 / 3)) / 3
    assert loss(student, teacher, sample_index, n_samples=3).item() == pytest.approx(expected, rel=1e-6)


def test_student_temperature_and_gradient():
    loss = IBOTLoss(prototypes=2, student_temp=0.1)
    student = (torch.tensor([[0.0, LN3]]) * 0.1).requires_grad_()
    value = loss(student, torch.tensor([[0.0, 1.0]]), torch.tensor([0]), n_samples=1)
    assert value.item() == pytest.approx(math.log(4 / 3), rel=1e-6)
    value.backward()
    assert student.grad[0, 1] < 0  # descent raises the logit of the teacher's prototype


def test_no_masked_patch_gives_zero():
    loss = IBOTLoss(prototypes=3)
    student = torch.zeros(0, 3, requires_grad=True)
    value = loss(student, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), n_samples=4)
    assert value.item() == 0.0
    value.backward()


def test_input_errors():
    loss = IBOTLoss(prototypes=3)
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="must lie in \\[0, 2\\)"):
        loss(z, z, torch.tensor([0, 2]), n_samples=2)
    with pytest.raises(ValueError, match="int64"):
        loss(z, z, torch.tensor([0.0, 1.0]), n_samples=2)
    with pytest.raises(ValueError, match="one row per entry"):
        loss(z, torch.zeros(2, 4), torch.tensor([0, 1]), n_samples=2)


def test_teacher_probs_use_the_configured_centering():
    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    softmax = IBOTLoss(prototypes=3, centering="softmax").teacher_probs(logits, 0.5)
    torch.testing.assert_close(softmax, torch.softmax(logits / 0.5, -1))
    sinkhorn = IBOTLoss(prototypes=3, centering="sinkhorn").teacher_probs(logits, 0.5)
    torch.testing.assert_close(sinkhorn.sum(1), torch.ones(6))
    assert not torch.allclose(sinkhorn, softmax)
