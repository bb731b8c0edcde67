"""The omitted class's bias (Hinton, Vinyals & Dean 2015, §3): raising one logit reveals what was learnt.

A student trained without a single image of class k (the hidden class) rarely predicts k, even when the
teacher's soft targets taught it what a k looks like: its bias for k was never pushed up by a labelled k.
Hinton et al. raised the bias of the omitted "3" by 3.5 and their student recognised 98.6 % of test 3s.
Adding b to logit k changes no weight, so a curve over b is a re-evaluation of stored logits: instant.

`bias_curve(logits, labels, k, biases)` gives, per bias, the accuracy on class k and overall.
`auto_bias(student, teacher, k)` chooses b without any label: the smallest b at which the student predicts k
for as many images as the teacher does (on images whose labels are not read; the engine uses the
validation split's images, so neither test labels nor labelled images of k are looked at). `bias_view` is the
Train tab's bias panel after a run with a hidden class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from kd_core.views.session import SessionStudents

BIASES = tuple(b / 4 for b in range(0, 33))  # 0, 0.25, … 8: the slider's range and the curve's points
AUTO_STEP = 0.05  # resolution of auto_bias


def shifted(logits: torch.Tensor, hidden: int, bias: float) -> torch.Tensor:
    """logits [..., N, K] with `bias` added to class `hidden`'s logit."""
    out = logits.clone()
    out[..., hidden] += bias
    return out


def bias_curve(logits: torch.Tensor, labels: torch.Tensor, hidden: int,
               biases: Sequence[float] = BIASES) -> list[dict]:
    """[{"bias", "hidden_acc", "acc"}] per bias; logits [..., N, K] (leading dims: students, averaged)."""
    mask = labels == hidden
    rows = []
    for bias in biases:
        predicted = shifted(logits, hidden, bias).argmax(-1)
        correct = (predicted == labels).float()
        rows.append({"bias": float(bias), "hidden_acc": correct[..., mask].mean().item(),
                     "acc": correct.mean().item()})
    return rows


def auto_bias(student: torch.Tensor, teacher: torch.Tensor, hidden: int, high: float = BIASES[-1]) -> float:
    """The smallest bias (AUTO_STEP grid, at most `high`) at which the student's share of class `hidden`
    among these images reaches the teacher's share; student and teacher logits [N, K], no labels."""
    target = (teacher.argmax(-1) == hidden).float().mean().item()
    steps = round(high / AUTO_STEP)
    for i in range(steps + 1):
        bias = i * AUTO_STEP
        if (shifted(student, hidden, bias).argmax(-1) == hidden).float().mean().item() >= target:
            return round(bias, 4)
    return high


# ------------------------------------------------------------------------------------ the app's bias panel

def bias_view(students: SessionStudents) -> tuple[str, str]:
    """(Vega-Lite spec as JSON, caption) of the hidden-class bias curve of this session's run, its value marked."""
    from kd_core.data.datasets import load_dataset
    from kd_core.views import plots

    report, value = students.bias_report, students.hidden_bias
    name = load_dataset(students.kd.meta["dataset"]).classes[students.hidden]
    figure = plots.spec_json(plots.bias_spec(report["bias_curve"], value, report["auto_bias"], name))
    at = min(report["bias_curve"], key=lambda row: abs(row["bias"] - value))
    caption = (f"With **+{value:g}** on the {name} logit: the KD student recognises "
               f"**{100 * at['kd_hidden_acc']:.1f}%** of the test {name.lower()} images ({100 * at['kd_acc']:.1f}% "
               f"of all), the CE student {100 * at['ce_hidden_acc']:.1f}% (means over the seeds). The automatic "
               f"bias, +{report['auto_bias']:.2f} "
               f"(where the KD student predicts {name} as often as the teacher does on the validation images, "
               f"no label read), gets {100 * report['kd_hidden_acc_at_auto_bias']:.1f}%. Hinton et al. (2015, §3) "
               f"raised the bias of an omitted digit the same way: the student had learnt the class from the "
               f"teacher's opinion of other images, and only its bias was too low. The Predict tab uses this bias.")
    return figure, caption

