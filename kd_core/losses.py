"""Distillation losses, one plain function per method, each with its paper's formula in its docstring.

Hinton KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
arXiv:1503.02531), with α on the teacher's soft targets:

    L = α · T² · KL( softmax(t/T) ‖ softmax(s/T) )  +  (1 − α) · CE(s, y)

The KL term is averaged over the batch ('batchmean'); T² keeps its gradient on the same scale as the
CE term's as T changes (the soft-target gradients shrink as 1/T²). α = 0 is exactly cross-entropy,
α = 1 is pure distillation. `kd_loss` is that loss for one student ([B, K] logits, float T and α).

The methods that came after it: `dkd_loss` (decoupled KD), `dist_loss` (DIST's Pearson relations),
`standardize_logits` (logit standardisation, a switch on KD and DKD), `hint_loss` (FitNets) and
`cosine_feature_loss` (the PyTorch tutorial's cosine embedding). They, and `kd_loss_stacked`, take
any leading dimensions — student logits [..., B, K] (or features [..., B, F]), a teacher that
broadcasts against them, labels [..., B] — and return one loss per leading index, [...] (a scalar for
[B, K] inputs), each leading slice reduced exactly as its own 2-D call would be. That is how the
engine trains a stack of students: their losses in one call, summed before one backward (the
students' graphs are disjoint, so each gets only its own gradient). A hyperparameter is a number or
a tensor that broadcasts against the leading shape (one value per student). Numbers are checked on
every call; tensors are not, so a training step never waits on the device: check them once with
the method's `check_*` function.

Inside, the logit losses work class-major, on `logits.mT` ([..., K, B], the layout StudentStack
produces, so its `[S, K, B]` output passed as `.mT` costs no copy): classes along dim -2, the batch
along -1. On CPU a softmax over a last dimension of 10 classes is slow; here (1 thread, S = 4
students, B = 256, K = 10, forward + backward) log_softmax took 581 µs over the last dim of
[S, B, K] and 100 µs over dim -2 of [S, K, B] (209 µs from a contiguous [S, B, K] input's `.mT`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Hyper = float | torch.Tensor  # a number, or one value per leading index (per stacked student)


def check_kd_params(T: float, alpha: float) -> None:
    """Raise ValueError unless T > 0 and 0 <= α <= 1 (both finite numbers)."""
    if isinstance(T, bool) or not isinstance(T, (int, float)) or not math.isfinite(T) or T <= 0:
        raise ValueError(f"temperature T must be a finite number > 0; got {T!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] (the weight on the teacher's soft "
                         f"targets); got {alpha!r}")


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), batchmean: the soft-target term before α."""
    log_student = F.log_softmax(student_logits / T, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / T, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * (T * T)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            *, T: float, alpha: float) -> torch.Tensor:
    """α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y); logits [B, K], labels [B]."""
    check_kd_params(T, alpha)
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    soft = soft_kl(student_logits, teacher_logits.to(student_logits.dtype), T)
    if alpha == 1:
        return soft
    return alpha * soft + (1.0 - alpha) * hard


# ------------------------------------------------------------------------------ hyperparameter checks

def check_range(name: str, value: Hyper, *, low: float, high: float = math.inf, low_open: bool = False,
                meaning: str = "") -> None:
    """ValueError naming `name` unless `value` (a number, or every element of a tensor) is finite and
    in the range: > low (`low_open`) or >= low, and <= high."""
    if isinstance(value, torch.Tensor) and not value.dtype.is_complex and value.dtype != torch.bool:
        v = value.detach().double()
        ok = bool(torch.isfinite(v).all() & ((v > low) if low_open else (v >= low)).all() & (v <= high).all())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        ok = math.isfinite(value) and (value > low if low_open else value >= low) and value <= high
    else:
        ok = False
    if not ok:
        bound = f"in [{low:g}, {high:g}]" if math.isfinite(high) else f"{'>' if low_open else '>='} {low:g}"
        shown = value.tolist() if isinstance(value, torch.Tensor) and value.numel() <= 8 else value
        raise ValueError(f"{name} must be a finite number {bound}{meaning}; got {shown!r}")


def check_kd_stack(T: Hyper, alpha: Hyper) -> None:
    """`check_kd_params` for `kd_loss_stacked`, where T and α may be tensors (every element checked)."""
    check_range("temperature T", T, low=0, low_open=True)
    check_range("alpha", alpha, low=0, high=1, meaning=" (the weight on the teacher's soft targets)")


def check_dkd_params(alpha: Hyper, beta: Hyper, T: Hyper) -> None:
    """DKD: α >= 0 (weight on TCKD), β >= 0 (weight on NCKD), T > 0; all finite."""
    check_range("alpha", alpha, low=0, meaning=" (DKD's weight on the target-class term TCKD)")
    check_range("beta", beta, low=0, meaning=" (DKD's weight on the non-target-class term NCKD)")
    check_range("temperature T", T, low=0, low_open=True)


def check_dist_params(beta: Hyper, gamma: Hyper, T: Hyper) -> None:
    """DIST: β >= 0 (inter-class weight), γ >= 0 (intra-class weight), T > 0; all finite."""
    check_range("beta", beta, low=0, meaning=" (DIST's weight on the inter-class relation)")
    check_range("gamma", gamma, low=0, meaning=" (DIST's weight on the intra-class relation)")
    check_range("temperature T", T, low=0, low_open=True)


def check_feature_pair(student_features: torch.Tensor, teacher_features: torch.Tensor) -> None:
    """Feature losses: both [..., B, F] with the same width F (project or pool to one width first)."""
    s, t = student_features.shape, teacher_features.shape
    if len(s) < 2 or len(t) < 2 or s[-1] != t[-1]:
        raise ValueError(f"student_features {tuple(s)} and teacher_features {tuple(t)} must both be "
                         f"[..., B, F] with the same width F; map the student's features to the "
                         f"teacher's width first (a learned Linear, FitNets' regressor) or pool the "
                         f"teacher's down (the PyTorch tutorial's avg_pool1d)")


def _check_numbers(check, *values: Hyper) -> None:
    """Run `check` when every hyperparameter is a plain number (tensors are the caller's to check)."""
    if not any(isinstance(v, torch.Tensor) for v in values):
        check(*values)


def _per_slice(value: Hyper, trailing: int = 2) -> Hyper:
    """A per-leading-index hyperparameter shaped to broadcast against [..., B, K] or [..., K, B]."""
    return value.reshape(*value.shape, *[1] * trailing) if isinstance(value, torch.Tensor) else value


# ------------------------------------------------------------------------------------- logit losses

CLASSES, BATCH = -2, -1  # the dims of class-major logits [..., K, B] (`logits.mT`)
STANDARDIZE_EPS = 1e-7  # Sun et al.'s code: (z − mean) / (std + 1e-7)


def _zscore(z: torch.Tensor, dim: int = CLASSES, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """(z − mean) / (std + eps) along `dim`, std Bessel-corrected (see `standardize_logits`)."""
    return (z - z.mean(dim, keepdim=True)) / (z.std(dim, keepdim=True) + eps)


def _cross_entropy_class_major(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE averaged over the batch: z [..., K, B] (class-major), labels [..., B] -> [...]."""
    log_p = F.log_softmax(z, dim=CLASSES)
    shape = torch.broadcast_shapes(log_p.shape[:CLASSES] + log_p.shape[BATCH:], labels.shape)
    log_p = log_p.expand(*shape[:-1], log_p.shape[CLASSES], shape[-1])
    return -log_p.gather(CLASSES, labels.expand(shape).unsqueeze(CLASSES)).squeeze(CLASSES).mean(BATCH)


def kd_loss_stacked(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    T: Hyper, alpha: Hyper, *, standardize: bool = False) -> torch.Tensor:
    """`kd_loss` per leading index: α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y).

    student [..., B, K], teacher broadcastable to it, labels [..., B]; T and α numbers or tensors
    broadcastable to the leading shape -> [...]. `standardize` z-scores both logit vectors inside the
    KL term only (`standardize_logits`; CE keeps the raw logits, as in Sun et al.'s code), making T
    their "base temperature".
    """
    _check_numbers(check_kd_stack, T, alpha)
    student, teacher = student_logits.mT, teacher_logits.to(student_logits.dtype).mT  # [..., K, B]
    student_soft, teacher_soft = (_zscore(student), _zscore(teacher)) if standardize else (student, teacher)
    log_student = F.log_softmax(student_soft / _per_slice(T), dim=CLASSES)
    log_teacher = F.log_softmax(teacher_soft / _per_slice(T), dim=CLASSES)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(CLASSES).mean(BATCH)
    return alpha * T * T * kl + (1 - alpha) * _cross_entropy_class_major(student, labels)


def _target_mask(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor):
    """Class-major student, teacher [..., K, B] expanded to one shape, and the bool mask of each
    sample's label in that shape."""
    K = student.shape[CLASSES]
    target = F.one_hot(labels, K).bool().mT  # [..., K, B]
    shape = torch.broadcast_shapes(student.shape, teacher.shape, target.shape)
    return student.expand(shape), teacher.expand(shape), target.expand(shape)


def _decoupled_log_probs(z: torch.Tensor, target: torch.Tensor):
    """From class-major logits z [..., K, B]: log p_t and log(1 − p_t) per sample [..., B], and the
    non-target log p̂_j = log p_j − log(1 − p_t) [..., K, B] (0, a placeholder, at the target).
    1 − p_t is a log-sum-exp of the non-target log p_j, never a subtraction, so it stays finite and
    accurate when p_t rounds to 1."""
    log_p = F.log_softmax(z, dim=CLASSES)
    log_target = log_p.masked_fill(~target, 0.0).sum(CLASSES)
    log_rest = torch.logsumexp(log_p.masked_fill(target, -math.inf), dim=CLASSES)
    return log_target, log_rest, (log_p - log_rest.unsqueeze(CLASSES)).masked_fill(target, 0.0)


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, *,
             alpha: Hyper = 1.0, beta: Hyper = 8.0, T: Hyper = 4.0,
             standardize: bool = False) -> torch.Tensor:
    """Decoupled KD (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022):

        DKD = α · TCKD + β · NCKD,   each term × T² and averaged over the batch
        TCKD = KL(b^T ‖ b^S),   b = [p_t, 1 − p_t]          (target vs all other classes)
        NCKD = KL(p̂^T ‖ p̂^S),  p̂_i = p_i / (1 − p_t), i ≠ t  (among the non-target classes)

    with p = softmax(z/T) of teacher (T) and student (S) logits and t the label. The paper shows
    KD = TCKD + (1 − p_t^T) · NCKD: Hinton KD ties the NCKD weight to the teacher's confidence; DKD
    frees it. Defaults are mdistiller's CIFAR-100 ones: α = 1, β = 8, T = 4 (its per-pair configs
    change β, e.g. 2 for ResNet56 → ResNet20). This α weighs TCKD — it is NOT the app's α
    (the weight on Hinton KD's soft targets); α and β may exceed 1. The training loss is
    CE(s, y) + DKD (mdistiller: CE weight 1, DKD ramped in linearly over the first 20 epochs); the
    CE is the caller's. T² placement as mdistiller's `dkd_loss`; the binary and non-target
    probabilities come from one log-softmax and a log-sum-exp (no log of 1 − p_t, no −1000 mask), so
    a confident teacher gives finite values where the reference code's log(0) would not.

    Logits [..., B, K] (teacher broadcastable), labels [..., B] -> [...]; α, β, T numbers or tensors
    over the leading shape. `standardize`: z-score both logit vectors first (Sun et al. 2024).
    """
    _check_numbers(check_dkd_params, alpha, beta, T)
    student, teacher = student_logits.mT, teacher_logits.to(student_logits.dtype).mT  # [..., K, B]
    if standardize:
        student, teacher = _zscore(student), _zscore(teacher)
    student, teacher, target = _target_mask(student / _per_slice(T), teacher / _per_slice(T), labels)
    s_target, s_rest, s_hat = _decoupled_log_probs(student, target)
    t_target, t_rest, t_hat = _decoupled_log_probs(teacher, target)
    tckd = t_target.exp() * (t_target - s_target) + t_rest.exp() * (t_rest - s_rest)
    nckd = (t_hat.exp() * (t_hat - s_hat)).sum(CLASSES)  # at the target: 1 · (0 − 0)
    return T * T * (alpha * tckd.mean(BATCH) + beta * nckd.mean(BATCH))


def _pearson(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation along `dim`, as DIST's code: cosine of the centred vectors, eps beside
    the product of norms."""
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def dist_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
              beta: Hyper = 1.0, gamma: Hyper = 1.0, T: Hyper = 1.0) -> torch.Tensor:
    """DIST (Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher",
    NeurIPS 2022): match relations, not values, of the softened probabilities Y = softmax(Z/T):

        L_inter = 1 − (1/B) Σ_i ρ(Y^S_i,:, Y^T_i,:)     (each sample's row, over the K classes)
        L_intra = 1 − (1/K) Σ_j ρ(Y^S_:,j, Y^T_:,j)     (each class's column, over the B samples)
        DIST    = T² · (β · L_inter + γ · L_intra)

    ρ is the Pearson correlation (invariant to shift and scale: an exact match is not required, so a
    stronger teacher's sharper outputs do not hurt). The training loss is CE(s, y) + DIST (the paper's
    α · CE, α = 1); the CE is the caller's. Defaults β = γ = 1, T = 1 as in the official code, whose
    T² factor and ρ's eps = 1e-8 this follows. L_intra needs B >= 2: the batch is the sample.

    Logits [..., B, K] (teacher broadcastable) -> [...]; β, γ, T numbers or tensors over the leading shape.
    """
    _check_numbers(check_dist_params, beta, gamma, T)
    student = F.softmax(student_logits.mT / _per_slice(T), dim=CLASSES)  # class-major [..., K, B]
    teacher = F.softmax(teacher_logits.to(student_logits.dtype).mT / _per_slice(T), dim=CLASSES)
    inter = 1 - _pearson(student, teacher, dim=CLASSES).mean(-1)  # each sample over classes -> [..., B]
    intra = 1 - _pearson(student, teacher, dim=BATCH).mean(-1)  # each class over the batch -> [..., K]
    return T * T * (beta * inter + gamma * intra)


def standardize_logits(logits: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """Logit standardisation (Sun, Ren, Li, Wang & Cao, "Logit Standardization in Knowledge
    Distillation", CVPR 2024): z-score each logit vector over its K classes,

        Z(z) = (z − mean(z)) / (std(z) + eps),   then softmax(Z / τ) with τ the "base temperature"

    so the student matches the teacher's logit *relations*, not their range: KD on Z(s), Z(t) is
    invariant to shifting and scaling either logit vector. std is Bessel-corrected (1/(K − 1)),
    eps = 1e-7, as in the official code (a 1/K std would only rescale τ by √((K−1)/K)). A switch on
    KD and DKD (`kd_loss_stacked(..., standardize=True)`, `dkd_loss(..., standardize=True)`), applied
    to the distillation term only. Their CIFAR-100 runs use τ = 2 and weight the KD term 9 against
    CE 0.1 (README: `--logit-stand --base-temp 2 --kd-weight 9`).

    Any shape [..., K] -> same shape; K >= 2.
    """
    check_range("eps", eps, low=0)
    return _zscore(logits, -1, eps)


# ----------------------------------------------------------------------------------- feature losses

def hint_loss(student_features_projected: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNets hint (Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep
    Nets", ICLR 2015): regress a student ("guided") layer onto a teacher ("hint") layer through a
    learned regressor r,

        L_HT = ½ ‖ u_h(x) − r(v_g(x)) ‖²      here: mean over batch and features of (r(v) − u)²

    The mean (not ½ · sum) is the usual implementation's scale (nn.MSELoss, as in the PyTorch KD
    tutorial's regressor run and RepDistiller); it keeps the loss's size independent of B and F. The
    regressor (a Linear from the student's width to the teacher's) is the engine's: this takes its
    output. No hyperparameters (the weight against CE is the caller's).

    Features [..., B, F] (teacher broadcastable) -> [...].
    """
    check_feature_pair(student_features_projected, teacher_features)
    teacher = teacher_features.to(student_features_projected.dtype)
    return (student_features_projected - teacher).pow(2).mean(dim=(-2, -1))


COSINE_EPS = 1e-12  # nn.CosineEmbeddingLoss's: added to each squared norm


def cosine_feature_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """Cosine feature loss, the PyTorch knowledge-distillation tutorial's variant
    (https://pytorch.org/tutorials/beginner/knowledge_distillation_tutorial.html): nn.CosineEmbeddingLoss
    with target 1 between the flattened hidden representations fed to each classifier,

        L = (1/B) Σ_i [ 1 − cos(s_i, t_i) ],   cos = s·t / √((‖s‖² + ε)(‖t‖² + ε)),  ε = 1e-12

    Only directions are matched, not lengths. The widths must agree; the tutorial average-pools the
    teacher's vector down to the student's (avg_pool1d), which is the caller's. The tutorial weighs it
    0.25 against CE 0.75. No hyperparameters.

    Features [..., B, F] (teacher broadcastable) -> [...].
    """
    check_feature_pair(student_features, teacher_features)
    teacher = teacher_features.to(student_features.dtype)
    dot = (student_features * teacher).sum(-1)
    norms = ((student_features.pow(2).sum(-1) + COSINE_EPS) * (teacher.pow(2).sum(-1) + COSINE_EPS)).sqrt()
    return (1 - dot / norms).mean(-1)
