"""The knowledge-distillation loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a
Neural Network", arXiv:1503.02531), with α on the teacher's soft targets:

    L = α · T² · KL( softmax(t/T) ‖ softmax(s/T) )  +  (1 − α) · CE(s, y)

The KL term is averaged over the batch ('batchmean'); T² keeps its gradient on the same scale as the
CE term's as T changes (the soft-target gradients shrink as 1/T²). α = 0 is exactly cross-entropy,
α = 1 is pure distillation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
