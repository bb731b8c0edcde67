"""The Train tab's hidden-class bias panel: the bias curve of a session's run (`kd_core.engine.bias`), its value
marked, and a caption that says what the value does."""

from __future__ import annotations

from kd_core.data.datasets import load_dataset
from kd_core.views import plots
from kd_core.views.session import SessionStudents


def bias_view(students: SessionStudents) -> tuple[str, str]:
    """(Vega-Lite spec as JSON, caption) of the hidden-class bias curve of this session's run, its value marked."""
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

