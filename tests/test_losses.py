import math

import pytest
import torch
import torch.nn.functional as F

from kd_core.losses import (
    check_dist_params,
    check_dkd_params,
    check_kd_stack,
    cosine_feature_loss,
    dist_loss,
    dkd_loss,
    hint_loss,
    kd_loss,
    kd_loss_stacked,
    soft_kl,
    standardize_logits,
)


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


# ------------------------------------------------------------------------ methods after Hinton (issue 14)
# Each reference below is the paper's equation written out with Python loops over samples and classes, in
# Python floats (double precision), independently of kd_core.losses.


def softmax_row(z: list[float], T: float = 1.0) -> list[float]:
    top = max(v / T for v in z)
    e = [math.exp(v / T - top) for v in z]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def reference_dkd_parts(student, teacher, labels, T):
    """Per sample (TCKD, NCKD) of Zhao et al. 2022, Eq. 2-4, before T² and the batch mean."""
    parts = []
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        p_s, p_t = softmax_row(s_row, T), softmax_row(t_row, T)
        tckd = kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        hat_s = [p_s[j] / (1 - p_s[y]) for j in range(len(p_s)) if j != y]
        hat_t = [p_t[j] / (1 - p_t[y]) for j in range(len(p_t)) if j != y]
        parts.append((tckd, kl(hat_t, hat_s)))
    return parts


def reference_dkd(student, teacher, labels, alpha, beta, T):
    parts = reference_dkd_parts(student, teacher, labels, T)
    return T * T * sum(alpha * tckd + beta * nckd for tckd, nckd in parts) / len(parts)


def pearson(a: list[float], b: list[float]) -> float:
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b, strict=True))
    return cov / math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))


def reference_dist(student, teacher, beta, gamma, T):
    """Huang et al. 2022, Eq. 6-8 (× T² as their code): rows are samples, columns are classes."""
    y_s = [softmax_row(row, T) for row in student.tolist()]
    y_t = [softmax_row(row, T) for row in teacher.tolist()]
    B, K = len(y_s), len(y_s[0])
    inter = 1 - sum(pearson(y_s[i], y_t[i]) for i in range(B)) / B
    intra = 1 - sum(pearson([y_s[i][j] for i in range(B)], [y_t[i][j] for i in range(B)])
                    for j in range(K)) / K
    return T * T * (beta * inter + gamma * intra)


def reference_standardize(logits, eps):
    rows = []
    for z in logits.tolist():
        mean = sum(z) / len(z)
        std = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1))
        rows.append([(v - mean) / (std + eps) for v in z])
    return torch.tensor(rows, dtype=torch.float64)


def reference_hint(student, teacher):
    s, t = student.tolist(), teacher.tolist()
    return sum((a - b) ** 2 for rs, rt in zip(s, t, strict=True) for a, b in zip(rs, rt, strict=True)) / (
        len(s) * len(s[0]))


def reference_cosine(student, teacher):
    total = 0.0
    for rs, rt in zip(student.tolist(), teacher.tolist(), strict=True):
        dot = sum(a * b for a, b in zip(rs, rt, strict=True))
        total += 1 - dot / math.sqrt(sum(a * a for a in rs) * sum(b * b for b in rt))
    return total / len(student)


def features_pair(seed: int = 0, batch: int = 8, width: int = 16):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, width, generator=generator), torch.randn(batch, width, generator=generator)


DTYPE_TOLERANCE = [(torch.float32, 1e-5), (torch.float64, 1e-10)]


@pytest.mark.parametrize("dtype, rel", DTYPE_TOLERANCE)
@pytest.mark.parametrize("alpha, beta, T", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.3, 7.5)])
def test_dkd_matches_the_loop_reference(dtype, rel, alpha, beta, T):
    student, teacher, labels = logits_pair(seed=4, batch=12, classes=7)
    loss = dkd_loss(student.to(dtype), teacher.to(dtype), labels, alpha=alpha, beta=beta, T=T)
    assert loss.dtype == dtype and loss.shape == ()
    assert loss.item() == pytest.approx(reference_dkd(student.double(), teacher.double(), labels,
                                                      alpha, beta, T), rel=rel)


def test_dkd_with_beta_zero_and_alpha_one_is_its_tckd_part():
    student, teacher, labels = logits_pair(seed=5, batch=10)
    parts = reference_dkd_parts(student.double(), teacher.double(), labels, 4.0)
    tckd = 4.0 ** 2 * sum(t for t, _ in parts) / len(parts)
    loss = dkd_loss(student.double(), teacher.double(), labels, alpha=1.0, beta=0.0, T=4.0)
    assert loss.item() == pytest.approx(tckd, rel=1e-10)
    nckd_only = dkd_loss(student.double(), teacher.double(), labels, alpha=0.0, beta=1.0, T=4.0)
    assert loss.item() != pytest.approx(nckd_only.item(), rel=1e-3)  # the two parts are not the same number


def test_kd_is_tckd_plus_teacher_weighted_nckd_per_sample():
    """Zhao et al. Eq. 7: KL(p^T ‖ p^S) = TCKD + (1 − p_t^T) · NCKD for every sample; one sample per
    leading index gives per-sample values."""
    student, teacher, labels = logits_pair(seed=6, batch=9)
    s, t, T = student.double().unsqueeze(1), teacher.double().unsqueeze(1), 3.0  # [9, 1, 10]
    tckd = dkd_loss(s, t, labels.unsqueeze(1), alpha=1.0, beta=0.0, T=T)
    nckd = dkd_loss(s, t, labels.unsqueeze(1), alpha=0.0, beta=1.0, T=T)
    p_target = torch.softmax(teacher.double() / T, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)
    kd_per_sample = torch.stack([soft_kl(s[i], t[i], T) for i in range(9)])
    assert torch.allclose(kd_per_sample, tckd + (1 - p_target) * nckd, rtol=1e-10)


def test_dkd_of_identical_logits_is_zero_and_stays_finite_for_a_confident_teacher():
    student, _, labels = logits_pair(seed=7)
    assert dkd_loss(student, student.clone(), labels).item() == pytest.approx(0.0, abs=1e-5)
    confident = F.one_hot(labels, 10).float() * 300.0  # softmax(t/T) target probability is 1.0 in fp32
    s = student.clone().requires_grad_()
    loss = dkd_loss(s, confident, labels, T=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("dtype, rel", DTYPE_TOLERANCE)
@pytest.mark.parametrize("beta, gamma, T", [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (0.0, 1.0, 2.0)])
def test_dist_matches_the_loop_reference(dtype, rel, beta, gamma, T):
    student, teacher, _ = logits_pair(seed=8, batch=16, classes=6)
    loss = dist_loss(student.to(dtype), teacher.to(dtype), beta=beta, gamma=gamma, T=T)
    assert loss.dtype == dtype and loss.shape == ()
    # rel 1e-5 in float64 too: the official code's eps = 1e-8 beside the norms is not in the equation
    expected = reference_dist(student.double(), teacher.double(), beta, gamma, T)
    assert loss.item() == pytest.approx(expected, rel=max(rel, 1e-6))


def test_dist_is_zero_for_identical_logits_and_not_for_unrelated_ones():
    student, teacher, _ = logits_pair(seed=9, batch=16)
    assert dist_loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-5)
    assert dist_loss(student, teacher).item() > 0.5


def test_standardize_matches_the_loop_reference_and_is_idempotent():
    student, _, _ = logits_pair(seed=10, batch=6)
    z = standardize_logits(student.double())
    assert torch.allclose(z, reference_standardize(student.double(), 1e-7), rtol=1e-12, atol=1e-12)
    assert torch.allclose(z.mean(1), torch.zeros(6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(1), torch.ones(6, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(standardize_logits(z), z, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(standardize_logits(student), student, atol=0.5)  # raw logits do change


def test_standardized_kd_ignores_the_students_logit_scale_and_shift():
    student, teacher, labels = logits_pair(seed=11)
    plain = kd_loss_stacked(student, teacher, labels, 2.0, 1.0, standardize=True)
    rescaled = kd_loss_stacked(5.0 * student + 3.0, teacher, labels, 2.0, 1.0, standardize=True)
    assert rescaled.item() == pytest.approx(plain.item(), rel=1e-5)
    assert kd_loss_stacked(5.0 * student, teacher, labels, 2.0, 1.0).item() != pytest.approx(
        kd_loss_stacked(student, teacher, labels, 2.0, 1.0).item(), rel=1e-2)


def test_standardize_applies_to_the_distillation_term_only():
    """Sun et al.'s code z-scores inside the KD/DKD term; CE keeps the raw logits."""
    student, teacher, labels = logits_pair(seed=12)
    assert kd_loss_stacked(student, teacher, labels, 2.0, 0.0, standardize=True).item() == pytest.approx(
        F.cross_entropy(student, labels).item(), rel=1e-6)
    z_s, z_t = standardize_logits(student), standardize_logits(teacher)
    assert kd_loss_stacked(student, teacher, labels, 2.0, 1.0, standardize=True).item() == pytest.approx(
        kd_loss(z_s, z_t, labels, T=2.0, alpha=1.0).item(), rel=1e-6)
    assert dkd_loss(student, teacher, labels, T=2.0, standardize=True).item() == pytest.approx(
        dkd_loss(z_s, z_t, labels, T=2.0).item(), rel=1e-6)


def test_hint_and_cosine_match_their_loop_references():
    student, teacher = features_pair(seed=13)
    assert hint_loss(student, teacher).item() == pytest.approx(reference_hint(student, teacher), rel=1e-5)
    assert cosine_feature_loss(student, teacher).item() == pytest.approx(
        reference_cosine(student, teacher), rel=1e-5)
    # the tutorial's own module, as a second opinion on the same numbers
    tutorial = torch.nn.CosineEmbeddingLoss()(student, teacher, torch.ones(len(student)))
    assert cosine_feature_loss(student, teacher).item() == pytest.approx(tutorial.item(), rel=1e-6)


def test_hint_and_cosine_are_zero_for_identical_features():
    student, _ = features_pair(seed=14)
    assert hint_loss(student, student.clone()).item() == 0.0
    assert cosine_feature_loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # cosine matches directions only; the hint (MSE) sees the length too
    assert cosine_feature_loss(3.0 * student, student).item() == pytest.approx(0.0, abs=1e-6)
    assert hint_loss(3.0 * student, student).item() > 1.0


# ------------------------------------------------------------------------- vectorisation over students

G = 4


def stacked_inputs(seed: int = 15, batch: int = 8, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(G, batch, classes, generator=generator) * 3
    teacher = torch.randn(G, batch, classes, generator=generator) * 3
    labels = torch.randint(0, classes, (G, batch), generator=generator)
    return student, teacher, labels


LOGIT_LOSSES = {
    "dkd": lambda s, t, y: dkd_loss(s, t, y, alpha=0.7, beta=3.0, T=2.5),
    "dkd-standardized": lambda s, t, y: dkd_loss(s, t, y, T=2.0, standardize=True),
    "dist": lambda s, t, y: dist_loss(s, t, beta=1.5, gamma=0.5, T=3.0),
    "kd-stacked": lambda s, t, y: kd_loss_stacked(s, t, y, 3.0, 0.6),
    "kd-stacked-standardized": lambda s, t, y: kd_loss_stacked(s, t, y, 2.0, 0.9, standardize=True),
    "hint": lambda s, t, y: hint_loss(s, t),
    "cosine": lambda s, t, y: cosine_feature_loss(s, t),
}


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_a_stack_equals_its_slices_called_one_by_one(name):
    loss = LOGIT_LOSSES[name]
    student, teacher, labels = stacked_inputs()
    stacked = loss(student, teacher, labels)
    assert stacked.shape == (G,)
    one_by_one = torch.stack([loss(student[g], teacher[g], labels[g]) for g in range(G)])
    assert torch.allclose(stacked, one_by_one, rtol=1e-5, atol=1e-7)
    # a shared teacher and shared labels broadcast against the stack of students
    shared = loss(student, teacher[0], labels[0])
    assert torch.allclose(shared, torch.stack([loss(student[g], teacher[0], labels[0]) for g in range(G)]),
                          rtol=1e-5, atol=1e-7)
    # class-major storage seen as [..., B, K] (StudentStack's [S, K, B] output, `.mT`)
    class_major = student.mT.contiguous().mT
    assert torch.allclose(loss(class_major, teacher, labels), one_by_one, rtol=1e-5, atol=1e-7)
    # two leading dimensions: [2, 2, B, K] -> [2, 2]
    assert torch.allclose(loss(student.view(2, 2, 8, 10), teacher.view(2, 2, 8, 10), labels.view(2, 2, 8)),
                          one_by_one.view(2, 2), rtol=1e-5, atol=1e-7)


def test_kd_loss_stacked_equals_kd_loss_per_student_with_per_student_T_and_alpha():
    student, teacher, labels = stacked_inputs(seed=16)
    T = torch.tensor([1.0, 2.0, 4.0, 8.0])
    alpha = torch.tensor([0.0, 0.3, 0.9, 1.0])
    stacked = kd_loss_stacked(student, teacher[0], labels[0], T, alpha)
    expected = [kd_loss(student[g], teacher[0], labels[0], T=T[g].item(), alpha=alpha[g].item())
                for g in range(G)]
    assert stacked.tolist() == pytest.approx([e.item() for e in expected], rel=1e-5)
    # a [2] tensor broadcasts over the last leading dimension of [2, 2, B, K]
    grid = kd_loss_stacked(student.view(2, 2, 8, 10), teacher[0], labels[0], T[:2], alpha[1:3])
    assert grid.flatten().tolist() == pytest.approx(
        [kd_loss(student[g], teacher[0], labels[0], T=T[g % 2].item(), alpha=alpha[1 + g % 2].item()).item()
         for g in range(G)], rel=1e-5)


@pytest.mark.parametrize("name", ["dkd", "dist"])
def test_per_student_hyperparameter_tensors_equal_the_scalar_calls(name):
    student, teacher, labels = stacked_inputs(seed=17)
    first, second, T = torch.tensor([0.0, 1.0, 2.0, 8.0]), torch.tensor([1.0, 0.0, 0.5, 3.0]), torch.tensor(
        [1.0, 2.0, 4.0, 6.0])
    if name == "dkd":
        stacked = dkd_loss(student, teacher, labels, alpha=first, beta=second, T=T)
        singles = [dkd_loss(student[g], teacher[g], labels[g], alpha=first[g].item(), beta=second[g].item(),
                            T=T[g].item()) for g in range(G)]
    else:
        stacked = dist_loss(student, teacher, beta=first, gamma=second, T=T)
        singles = [dist_loss(student[g], teacher[g], beta=first[g].item(), gamma=second[g].item(),
                             T=T[g].item()) for g in range(G)]
    assert stacked.tolist() == pytest.approx([s.item() for s in singles], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_each_student_gets_only_its_own_gradient(name):
    loss = LOGIT_LOSSES[name]
    student, teacher, labels = stacked_inputs(seed=18)
    s = student.clone().requires_grad_()
    loss(s, teacher, labels).sum().backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    alone = student[1].clone().requires_grad_()
    loss(alone, teacher[1], labels[1]).backward()
    assert torch.allclose(s.grad[1], alone.grad, rtol=1e-4, atol=1e-7)


# -------------------------------------------------------------------------------- bad hyperparameters

@pytest.mark.parametrize("call, name", [
    (lambda s, t, y: dkd_loss(s, t, y, alpha=-1.0), "alpha"),
    (lambda s, t, y: dkd_loss(s, t, y, beta=math.nan), "beta"),
    (lambda s, t, y: dkd_loss(s, t, y, beta=-8.0), r"beta must be .*>= 0"),
    (lambda s, t, y: dkd_loss(s, t, y, T=0.0), "temperature T"),
    (lambda s, t, y: dkd_loss(s, t, y, T=True), "temperature T"),
    (lambda s, t, y: dist_loss(s, t, beta=-0.5), "beta"),
    (lambda s, t, y: dist_loss(s, t, gamma=math.inf), "gamma"),
    (lambda s, t, y: dist_loss(s, t, gamma=-1.0), r"gamma must be .*>= 0"),
    (lambda s, t, y: dist_loss(s, t, T=-2.0), "temperature T"),
    (lambda s, t, y: kd_loss_stacked(s, t, y, 2.0, 1.5), "alpha"),
    (lambda s, t, y: kd_loss_stacked(s, t, y, -1.0, 0.5), "temperature T"),
    (lambda s, t, y: standardize_logits(s, eps=-1e-7), "eps"),
    (lambda s, t, y: hint_loss(s, t[:, :5]), "student_features"),
    (lambda s, t, y: cosine_feature_loss(s[:, :3], t), "teacher_features"),
])
def test_bad_hyperparameters_raise_a_value_error_naming_the_parameter(call, name):
    student, teacher, labels = logits_pair()
    with pytest.raises(ValueError, match=name):
        call(student, teacher, labels)


@pytest.mark.parametrize("check, args, name", [
    (check_kd_stack, (torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])), r"temperature T must be .*> 0"),
    (check_kd_stack, (torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.01])), r"alpha must be .*\[0, 1\]"),
    (check_dkd_params, (torch.tensor([1.0, -0.1]), 8.0, 4.0), r"alpha must be .*>= 0"),
    (check_dkd_params, (1.0, torch.tensor([8.0, math.nan]), 4.0), "beta"),
    (check_dist_params, (1.0, 1.0, torch.tensor([1.0, -1.0])), "temperature T"),
    (check_dist_params, (1.0, "1", 1.0), "gamma"),
])
def test_per_student_hyperparameter_tensors_are_checked_by_the_check_functions(check, args, name):
    with pytest.raises(ValueError, match=name):
        check(*args)


def test_good_per_student_hyperparameters_pass_the_checks():
    check_kd_stack(torch.tensor([0.5, 4.0]), torch.tensor([0.0, 1.0]))
    check_dkd_params(torch.tensor([0.0, 1.0]), torch.tensor([8.0, 0.0]), torch.tensor([1.0, 4.0]))
    check_dist_params(1.0, torch.tensor([0.0, 2.0]), 1.0)
