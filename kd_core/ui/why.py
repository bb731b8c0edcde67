"""The "why" panel beside a run's verdict, in the Train and Your data tabs: agreement with the teacher, calibration
(ECE and the reliability diagram, drawn by the browser) and the classes KD gained or lost most on (kd_core.views.why).
Its own components, filled after a run from the session's students (their `summary`), like the headline."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
from gradio.components.plot import PlotData

from kd_core.views import headline, plots, why
from kd_core.views.session import SessionStudents


class WhyPanel(NamedTuple):
    box: gr.Column
    text: gr.HTML  # elem_id "<prefix>why"
    reliability: gr.Plot  # elem_id "<prefix>reliability"


def why_panel(prefix: str = "") -> WhyPanel:
    """The panel, hidden until a run has finished; `prefix` keeps its elem_ids apart per tab ("own-")."""
    with gr.Column(visible=False) as box:
        gr.Markdown("### Why: what KD changed besides top-1 (test set, means over the seeds)")
        with gr.Row():
            text = gr.HTML(elem_id=f"{prefix}why")
            reliability = gr.Plot(show_label=False, elem_id=f"{prefix}reliability")
    return WhyPanel(box, text, reliability)


def show_why(students: SessionStudents | None):
    """After a run: the panel with its figures; hidden when the run has none."""
    summary = None if students is None else students.summary
    text = why.why_html(summary)
    if not text:
        return gr.Column(visible=False), "", None
    return gr.Column(visible=True), text, PlotData(type="altair", plot=plots.spec_json(why.reliability_spec(summary)))


def wire_why(run: gr.events.Dependency, students: gr.State, panel: WhyPanel) -> None:
    run.success(show_why, students, [panel.box, panel.text, panel.reliability], api_visibility="private")


def show_diagnosis(students: SessionStudents | None) -> str:
    """After a run: why it came out as it did, and the fix (kd_core.engine.diagnosis), under the headline of the
    Train and the Your data tabs."""
    return headline.diagnosis_html(None if students is None else students.summary)
