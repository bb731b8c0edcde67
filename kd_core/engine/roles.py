"""Roles: what each student of a stack learns from, and the losses of a whole stack in one call.

A run is CE plus one or more distilling roles, each trained for every seed. The methods:

    ce       CE(s, y)
    kd       α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α) · CE(s, y)             Hinton et al. 2015
    kd-std   the same on z-scored logits Z(s), Z(t) inside the KL (T: base temperature)  Sun et al. 2024
    dkd      CE(s, y) + T² · (TCKD + β · NCKD)                                          Zhao et al. 2022
    dkd-std  the same on z-scored logits                                                 Sun et al. 2024
    dist     CE(s, y) + T² · (β · (1 − ρ_inter) + γ · (1 − ρ_intra)), T = 1              Huang et al. 2022
    hint     (1 − w) · CE(s, y) + w · mean((r(f_s) − f_t)²)                              Romero et al. 2015
    cosine   (1 − w) · CE(s, y) + w · (1 − cos(f_s, pool(f_t)))                         PyTorch KD tutorial

(the formulas, references and defaults are in `kd_core.losses`). The feature methods read penultimate
features, the input of the final Linear (`models.classifier`), of both networks: f_s is 32 wide for
mlp-tiny and cnn-tiny, 128 for mlp-small and mlp-medium; f_t is 256 for the shipped cnn-teacher. For these
students that is their only (or last) hidden layer, so it is the one layer a hint can guide; FitNets guides
a middle layer of a deep student, which ours do not have. hint learns a regressor r, a Linear from f_s's
width to f_t's per seed (extra trained weights, discarded after training); cosine average-pools f_t down to
f_s's width (the tutorial's avg_pool1d; adaptive when the widths do not divide). Their weight w is the
tutorial's 0.25 by default; logits meet the teacher only through CE, so they learn no soft targets (FitNets'
second stage, KD, is the kd method).

CE and Hinton KD roles are computed together, vectorised over students (`role_losses`); each other role with
its loss function on its slice of the stack's logits. Transfer images (the engine's unlabelled ones, after
the L labelled images of a batch) carry no label: Hinton and standardised KD use their soft term alone, DIST
its relations (label-free), DKD the teacher's top-1 class as the target that splits TCKD from NCKD, hint and
cosine their feature term; CE never sees them. DKD runs without mdistiller's 20-epoch warm-up of the DKD term.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kd_core.config import FEATURE_METHODS, METHODS, NAMES, RunConfig
from kd_core.losses import (
    check_dist_params,
    check_dkd_params,
    check_kd_params,
    check_range,
    cosine_feature_loss,
    dist_loss,
    dkd_loss,
    hint_loss,
    kd_loss_stacked,
)

DIST_TEMPERATURE = 1.0  # DIST's default (Huang et al.): relations of the plain softmax
__all__ = ["FEATURE_METHODS", "METHODS", "NAMES"]  # the method names live in kd_core.config
FEATURE_WEIGHT = RunConfig.feature_weight  # hint, cosine: the PyTorch KD tutorial's weight on the feature loss


@dataclass(frozen=True)
class Role:
    """What one student of every seed learns from."""

    name: str  # shown in tables and legends: "CE student", "KD student", "T=4, α=0.9"
    method: str = "kd"  # "ce" or a key of METHODS
    temperature: float = 1.0
    alpha: float = 0.0  # kd, kd-std: weight on the teacher's soft targets (α = 0: plain cross-entropy)
    dkd_beta: float = 8.0  # dkd: weight β on NCKD (TCKD's weight is 1, mdistiller's CIFAR-100 default)
    inter: float = 1.0  # dist: weight β of the inter-class relation
    intra: float = 1.0  # dist: weight γ of the intra-class relation
    feature_weight: float = FEATURE_WEIGHT  # hint, cosine: weight w of the feature loss; (1 − w) weighs CE

    @property
    def hinton(self) -> bool:
        """CE or plain Hinton KD: computed together, vectorised (`role_losses`)."""
        return self.method in ("ce", "kd")

    @property
    def features(self) -> bool:
        """Learns from penultimate features (hint, cosine)."""
        return self.method in FEATURE_METHODS

    def check(self) -> Role:
        if self.method != "ce" and self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.features:
            check_range("feature_weight", self.feature_weight, low=0, high=1,
                        meaning=" (the weight on the feature loss; 1 − it weighs CE)")
        elif self.method.startswith("dkd"):
            check_dkd_params(1.0, self.dkd_beta, self.temperature)
        elif self.method == "dist":
            check_dist_params(self.inter, self.intra, self.temperature)
        else:
            check_kd_params(self.temperature, self.alpha)
        return self


CE_ROLE = Role(NAMES["ce"], "ce", 1.0, 0.0)


def method_role(method: str, temperature: float, alpha: float, dkd_beta: float,
                feature_weight: float = FEATURE_WEIGHT) -> Role:
    """The role of `method` with a run's hyperparameters (DIST keeps its own T = 1; the feature methods use
    no temperature and no α)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "dist":
        return Role(NAMES[method], method, DIST_TEMPERATURE)
    if method in FEATURE_METHODS:
        return Role(NAMES[method], method, feature_weight=feature_weight)
    return Role(NAMES[method], method, temperature, alpha, dkd_beta=dkd_beta)


def hinton_columns(roles: Sequence[Role], device) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The indices of the CE and Hinton-KD roles, and their T and α as tensors."""
    index = [i for i, role in enumerate(roles) if role.hinton]
    return (index, torch.tensor([roles[i].temperature for i in index], device=device),
            torch.tensor([roles[i].alpha for i in index], device=device))


def role_losses(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, T: torch.Tensor,
                alpha: torch.Tensor) -> torch.Tensor:
    """Per seed g and role m: α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y) on the labelled
    images, plus α·T²·KL on the transfer images (their labels are never read) -> [G, M].

    logits [G, M, K, B] (class-major); teacher [G, K, B]; labels [G, L] for the first L ≤ B images (the
    rest are transfer images); T, alpha [M]. KL and CE are means over their images ('batchmean'), so
    with no transfer images this is `losses.kd_loss` per student, and α = 0 is exactly cross-entropy.
    """
    G, M, _, B = logits.shape
    L = labels.shape[1]
    scale = T.view(1, M, 1, 1)
    log_student = F.log_softmax(logits / scale, dim=2)
    log_teacher = F.log_softmax(teacher.unsqueeze(1) / scale, dim=2)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(2)  # [G, M, B], per image
    soft = (alpha * T * T).view(1, M, 1) * kl
    target = labels.view(G, 1, 1, L).expand(G, M, 1, L)
    ce = -F.log_softmax(logits[..., :L], dim=2).gather(2, target).squeeze(2).mean(2)  # [G, M]
    loss = soft[..., :L].mean(2) + (1 - alpha).view(1, M) * ce
    return loss if B == L else loss + soft[..., L:].mean(2)

@dataclass(frozen=True, eq=False)
class FeatureBatch:
    """What the feature roles read at a step, for the G seeds being trained."""

    student: torch.Tensor  # [G, M, F_s, B] every student's penultimate features (feature-major, like logits)
    teacher: torch.Tensor  # [G, B, F_t] the teacher's, same images
    regressors: dict[int, tuple[torch.Tensor, torch.Tensor]]  # hint role -> (W [G, F_t, F_s], b [G, F_t])


def new_regressor(student_width: int, teacher_width: int, seeds: Sequence[int],
                  device) -> tuple[torch.Tensor, torch.Tensor]:
    """A hint role's regressor for each seed, (W [G, F_t, F_s], b [G, F_t]), initialised like nn.Linear
    (uniform in ±1/√F_s) from the seed, so a seed's hint student never depends on the other seeds."""
    bound = student_width ** -0.5
    weights, biases = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed + 3 * 2**32)
        weights.append(torch.rand(teacher_width, student_width, generator=generator) * 2 * bound - bound)
        biases.append(torch.rand(teacher_width, generator=generator) * 2 * bound - bound)
    return (torch.stack(weights).to(device).requires_grad_(), torch.stack(biases).to(device).requires_grad_())


def feature_loss(role: Role, student: torch.Tensor, teacher: torch.Tensor,
                 regressor: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """A feature role's feature term per seed -> [G], over every image of the batch (labels unused):
    student features [G, F_s, B], teacher features [G, B, F_t], the hint role's regressor."""
    if role.method == "hint":
        weight, bias = regressor
        return hint_loss(torch.baddbmm(bias.unsqueeze(-1), weight, student).mT, teacher)  # r(f_s): [G, B, F_t]
    return cosine_feature_loss(student.mT, F.adaptive_avg_pool1d(teacher, student.shape[1]))


def stack_losses(roles: Sequence[Role], hinton: tuple[list[int], torch.Tensor, torch.Tensor], logits: torch.Tensor,
                 teacher: torch.Tensor, labels: torch.Tensor, features: FeatureBatch | None = None) -> torch.Tensor:
    """Every student's loss -> [G, M]: logits [G, M, K, B] (class-major), teacher [G, K, B], labels [G, L]
    for the first L images of the batch (the rest are transfer images); `hinton` from `hinton_columns`;
    `features` when a role learns from features."""
    index, T, alpha = hinton
    columns: list[torch.Tensor | None] = [None] * len(roles)
    if index:
        together = role_losses(logits[:, index] if len(index) < len(roles) else logits, teacher, labels, T, alpha)
        for column, i in enumerate(index):
            columns[i] = together[:, column]
    for i, role in enumerate(roles):
        if role.features:
            ce = labelled_cross_entropy(logits[:, i], labels)
            term = feature_loss(role, features.student[:, i], features.teacher, features.regressors.get(i))
            columns[i] = (1 - role.feature_weight) * ce + role.feature_weight * term
        elif not role.hinton:
            columns[i] = method_loss(role, logits[:, i], teacher, labels)
    return torch.stack(columns, dim=1)


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE on the labelled images of a batch, per seed -> [G]: logits [G, K, B] (class-major), labels [G, L] for
    the first L images."""
    return F.cross_entropy(logits[..., :labels.shape[1]], labels, reduction="none").mean(1)


def method_loss(role: Role, logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One non-Hinton role's loss per seed -> [G]: logits and teacher [G, K, B], labels [G, L]."""
    L = labels.shape[1]
    student, target = logits.mT, teacher.mT  # [G, B, K] views of the class-major tensors
    if role.method == "kd-std":
        loss = kd_loss_stacked(student[:, :L], target[:, :L], labels, role.temperature, role.alpha,
                               standardize=True)
        if student.shape[1] > L:  # transfer images: the soft term alone (α=1 is pure KD; labels unused)
            unlabelled = teacher[..., L:].argmax(1)
            loss = loss + role.alpha * kd_loss_stacked(student[:, L:], target[:, L:], unlabelled,
                                                       role.temperature, 1.0, standardize=True)
        return loss
    ce = labelled_cross_entropy(logits, labels)
    if role.method == "dist":
        return ce + dist_loss(student, target, beta=role.inter, gamma=role.intra, T=role.temperature)
    # dkd, dkd-std: transfer images take the teacher's top-1 class as the target class
    targets = torch.cat([labels, teacher[..., L:].argmax(1)], dim=1)
    return ce + dkd_loss(student, target, targets, alpha=1.0, beta=role.dkd_beta, T=role.temperature,
                         standardize=role.method == "dkd-std")
