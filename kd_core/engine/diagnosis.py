"""Why a run came out as it did: findings, each a code and one line naming the cause and the fix.

A finished run is diagnosed from its own figures (`diagnose(result)`), on the validation split only (the test set
reports, it never explains). Findings so far:

- `teacher-not-better`: the teacher's validation accuracy is not clearly above the CE student's (by more than
  `teacher_margin`). A teacher cannot pass on knowledge it does not have, and a high α asks the student to copy its
  mistakes. The run is not stopped: the CE twin, trained beside KD on the same batches, shows what KD did.
- `kd-worse`: KD fell behind CE beyond seed noise and no other finding explains it. The teacher is ahead, so the
  likely cause is T and α, chosen on Fashion-MNIST's validation split and not on this data.

The CLI's JSON carries them as `"diagnosis": [{"code", "message"}]` (docs/contracts.md), the app shows them under
the verdict (elem_id `diagnosis` in the Train tab, `own-diagnosis` in the Your data tab).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from kd_core.config import RunConfig

TEACHER_NOT_BETTER = "teacher-not-better"
KD_WORSE = "kd-worse"
MIN_MARGIN = 0.01  # "clearly above": at least a point, and two standard errors of the validation accuracy


@dataclass(frozen=True)
class Finding:
    code: str  # stable, for scripts: TEACHER_NOT_BETTER, KD_WORSE
    message: str  # one line for people: the cause, then the fix

    def to_json(self) -> dict:
        return asdict(self)


def teacher_margin(teacher_val: float, n_val: int) -> float:
    """How far above the CE student the teacher's validation accuracy must be to count as clearly above it: two
    standard errors of an accuracy measured on `n_val` images, at least MIN_MARGIN."""
    p = min(max(teacher_val, 0.0), 1.0)
    return max(MIN_MARGIN, 2 * math.sqrt(p * (1 - p) / max(n_val, 1)))


def teacher_check(teacher: str, teacher_val: float, ce_val: float, n_val: int, alpha: float,
                  teacher_epochs: int | None = None) -> Finding | None:
    """A TEACHER_NOT_BETTER finding when `teacher_val` is not above `ce_val` by more than `teacher_margin`; None
    when the teacher is clearly ahead."""
    margin = teacher_margin(teacher_val, n_val)
    if teacher_val - ce_val > margin:
        return None
    made = f", trained {teacher_epochs} epochs on this data" if teacher_epochs else ""
    more = f" (more than {teacher_epochs})" if teacher_epochs else ""
    return Finding(TEACHER_NOT_BETTER, (
        f"The teacher ({teacher}{made}) is not clearly better than the CE student on the validation split "
        f"({teacher_val:.1%} against {ce_val:.1%}; it needs to be ahead by more than {100 * margin:.1f} points): it "
        f"has little to teach, and α = {alpha:g} asks the KD student to copy its mistakes. Fix: train the teacher "
        f"for more epochs{more}, use a bigger or a pretrained teacher, or distil into a smaller student. The run "
        f"went on: the CE student beside KD shows what KD did."))


def kd_worse_check(teacher_val: float, ce_val: float, kd_minus_ce: float, beyond_noise: bool, temperature: float,
                   alpha: float, kd_agreement: float, defaults_on_own_data: bool = True) -> Finding | None:
    """A KD_WORSE finding when KD fell behind CE beyond seed noise (call it when no other finding explains that).
    `defaults_on_own_data`: T and α are the Fashion-MNIST defaults on a user's data, so the fix is choosing them."""
    if not beyond_noise or kd_minus_ce >= 0:
        return None
    if defaults_on_own_data:
        cause = (f"T = {temperature:g} and α = {alpha:g} are the defaults chosen on Fashion-MNIST's validation "
                 f"split, not on this data. Fix: choose T and α on your validation split (--T auto --alpha auto, "
                 f"the default with --data; the Your data tab's checkbox); ")
    else:
        cause = (f"T = {temperature:g} and α = {alpha:g} did not pay off here. Fix: try T and α chosen on the "
                 f"validation split (--T auto --alpha auto, or a Sweep), more training images or epochs; ")
    return Finding(KD_WORSE, (
        f"KD fell behind CE ({100 * kd_minus_ce:+.1f} points on test) although the teacher is "
        f"{100 * (teacher_val - ce_val):.1f} points ahead of the CE student on validation ({teacher_val:.1%} "
        f"against {ce_val:.1%}); the KD student agrees with the teacher on {kd_agreement:.0%} of test images. "
        f"{cause}a lower α (such as 0.1 to 0.5) at T = 1 or 2 moves KD towards plain CE when the teacher has little "
        f"to add."))


def teacher_name(teacher) -> tuple[str, int | None]:
    """(what the user asked for, e.g. `zoo:cnn-teacher` or the checkpoint's file name; the epochs it was trained on
    the run's data, if it was) of a run's `kd_core.run.Teacher`."""
    if teacher is None:
        return "teacher", None
    source = teacher.source if teacher.source and teacher.source != str(teacher.path) else teacher.path.name
    if source == "default":
        source = Path(teacher.path).name
    return source, teacher.meta.get("teacher_epochs")


def ce_val_acc(stack) -> float:
    """The CE students' validation accuracy on a finished stack, mean over seeds (CE is every stack's role 0)."""
    return sum(seed[0] for seed in stack.val_acc) / len(stack.val_acc)


def stack_teacher_check(stack, alpha: float) -> Finding | None:
    """`teacher_check` on a finished stack (kd_core.engine.loop.StackResult): its teacher, its CE students and its
    validation split."""
    n_val = stack.val_logits.shape[1] if stack.val_logits is not None and stack.val_logits.dim() == 3 else 0
    name, epochs = teacher_name(stack.teacher)
    return teacher_check(name, stack.teacher_val_acc, ce_val_acc(stack), n_val, alpha, epochs)


def diagnose(result) -> list[Finding]:
    """The findings of a finished run (a `kd_core.engine.train.RunResult`), on validation figures only."""
    cfg, stack = result.config, result.stack
    teacher_val = stack.teacher_val_acc
    ce_val = ce_val_acc(stack)
    found = stack_teacher_check(stack, cfg.alpha)
    if found is not None:
        return [found]
    difference = result.difference
    defaults = RunConfig()
    own_defaults = bool(cfg.data) and (cfg.temperature, cfg.alpha) == (defaults.temperature, defaults.alpha)
    worse = kd_worse_check(teacher_val, ce_val, difference.mean, difference.beyond_noise, cfg.temperature,
                           cfg.alpha, result.kd_agreement, own_defaults)
    return [worse] if worse else []
