import math

import pytest
import torch
import torch.nn.functional as F

from kd_core.losses import kd_loss, soft_kl


def logits_pair(seed: int = 0, batch: int = 8, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, classes, generator=generator) * 3
    teacher = torch.randn(batch, classes, generator=generator) * 3
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return student, teacher, labels


@pytest.mark.parametrize("T", [1.0, 3.5, 10.0])
def test_alpha_zero_is_exactly_cross_entropy(T):
    student, teacher, labels = logits_pair()
    assert torch.equal(kd_loss(student, teacher, labels, T=T, alpha=0.0), F.cross_entropy(student, labels))


def test_identical_logits_give_zero_soft_term():
    student, _, labels = logits_pair()
    assert soft_kl(student, student.clone(), T=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(student, student.clone(), labels, T=4.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_matches_the_formula_written_out_by_hand():
    student, teacher, labels = logits_pair(seed=3, batch=5, classes=4)
    T, alpha = 2.5, 0.6
    p_teacher = torch.softmax(teacher.double() / T, dim=1)
    log_p_student = torch.log_softmax(student.double() / T, dim=1)
    kl_per_sample = (p_teacher * (p_teacher.log() - log_p_student)).sum(1)
    ce_per_sample = -torch.log_softmax(student.double(), dim=1)[torch.arange(5), labels]
    expected = alpha * T * T * kl_per_sample.mean() + (1 - alpha) * ce_per_sample.mean()
    loss = kd_loss(student, teacher, labels, T=T, alpha=alpha)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("T, alpha, expected", [
    (2.0, 0.5, 0.677824),
    # α ≠ 0.5 tells the soft side from the CE side: with α on CE these would be 0.874 and 0.364
    (2.0, 0.25, 0.481464),
    (4.0, 0.9, 0.990932),
])
def test_golden_value(T, alpha, expected):
    student = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    teacher = torch.tensor([[3.0, 0.5, 0.2], [0.0, 1.0, 2.0]])
    labels = torch.tensor([0, 1])
    # from the formula in plain Python floats (math.exp / math.log, no torch): KL per sample at T=2
    # 0.049943, 0.485329; at T=4 0.013031, 0.120639; CE per sample 0.417030, 0.153178;
    # L = α·T²·mean(KL) + (1 − α)·mean(CE)
    loss = kd_loss(student, teacher, labels, T=T, alpha=alpha)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_scale_is_roughly_independent_of_temperature():
    """T² compensates the 1/T² shrinkage of soft-target gradients (Hinton 2015 §2)."""
    student, teacher, labels = logits_pair(seed=1, batch=64)
    norms = []
    for T in (4.0, 8.0, 16.0):
        s = student.clone().requires_grad_()
        kd_loss(s, teacher, labels, T=T, alpha=1.0).backward()
        norms.append(s.grad.norm().item())
        # without T², the gradient would shrink by 4x per doubling of T; with it, it shrinks ~2x at most
    assert max(norms) / min(norms) < 2.5
    without_scale = []
    for T in (4.0, 16.0):
        s = student.clone().requires_grad_()
        (soft_kl(s, teacher, T) / (T * T)).backward()
        without_scale.append(s.grad.norm().item())
    assert without_scale[0] / without_scale[1] > 10


@pytest.mark.parametrize("T, alpha", [(0.0, 0.5), (-1.0, 0.5), (math.nan, 0.5), (math.inf, 0.5),
                                      (2.0, -0.1), (2.0, 1.5), (2.0, math.nan)])
def test_bad_temperature_or_alpha_raise_with_the_range(T, alpha):
    student, teacher, labels = logits_pair()
    with pytest.raises(ValueError, match=r"> 0|\[0, 1\]"):
        kd_loss(student, teacher, labels, T=T, alpha=alpha)


def test_alpha_one_ignores_labels():
    student, teacher, labels = logits_pair()
    other_labels = (labels + 1) % 10
    assert torch.equal(kd_loss(student, teacher, labels, T=3.0, alpha=1.0),
                       kd_loss(student, teacher, other_labels, T=3.0, alpha=1.0))
