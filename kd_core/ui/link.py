"""Links that set the lesson: the page's query (`/?T=2.5&alpha=0.3&seeds=3&hide=data,students&lesson=2`), read when
the page loads, sets the Train tab's knobs, hides the controls it names and opens the Lesson tab at a step. The
reading and checking is kd_core.views.link's (no Gradio); here its result becomes the widgets' values, in one
update, so no preset's cascade of change events can overwrite an explicit value. Another query parameter gets a
load handler of its own beside `wire_link`.
"""

from __future__ import annotations

import gradio as gr

from kd_core.ui.lesson import LessonControls, step_widgets
from kd_core.ui.train import Knobs, dataset_widgets
from kd_core.views import link, panels
from kd_core.views.link import LINK_KNOBS

READ = ("preset", *LINK_KNOBS, "hide", "lesson")  # the query parameters this link reads


def link_notice() -> gr.Markdown:
    """The line (one per ignored parameter) that says what of a link was ignored and why; hidden when none was."""
    return gr.Markdown(visible=False, elem_classes="kd-banner", elem_id="kd-link-notice")


def open_link(request: gr.Request, widgets: int):
    """The load handler: the page's query as the notice, the Train tab's knobs and groups, and the Lesson tab's
    step; `widgets`: how many outputs there are (all skipped when the query names none of READ)."""
    query = dict(request.query_params) if request is not None else {}
    if not any(name in query for name in READ):
        return (gr.skip(),) * widgets
    opened = link.read_link(query)
    k, hidden = opened.knobs, set(opened.hide)
    notice = gr.Markdown("\n\n".join(opened.notes), visible=bool(opened.notes))
    values = (k["temperature"], k["alpha"], k["epochs"], k["lr"], k["seed"], k["repeats"], k["unlabeled"],
              k["methods"], k["dkd_beta"], k["feature_weight"], k["dataset"],
              *dataset_widgets(k["dataset"], k["student"], k["train_size"], k["hide_class"]))
    labels = (panels.data_label(k["dataset"], k["train_size"], k["hide_class"], k["unlabeled"]),
              panels.students_label(k["student"], k["lr"], k["epochs"], k["seed"], k["repeats"]),
              panels.methods_label(k["methods"], k["dkd_beta"], k["feature_weight"]))
    groups = [gr.Accordion(label=label, visible=name not in hidden)  # in TrainControls.groups' order
              for name, label in zip(("data", "students", "methods"), labels, strict=True)]
    preset = gr.Dropdown(value=opened.preset, visible="preset" not in hidden)
    if opened.lesson is None:
        return notice, gr.skip(), preset, *values, *groups, *(gr.skip(),) * 3
    return notice, gr.Tabs(selected="lesson"), preset, *values, *groups, *step_widgets(opened.lesson)


def wire_link(page: gr.Blocks, notice: gr.Markdown, tabs: gr.Tabs, knobs: Knobs, lesson: LessonControls):
    """Read the page's query when it loads (kd_core.views.link: the parameters, and the names `hide` takes); returns
    the load event, which the page's other link readers follow (`.then`)."""
    controls = knobs.train_controls()
    outputs = [notice, tabs, controls.preset, *controls.preset_outputs, *controls.groups, *lesson]

    def load(request: gr.Request):
        return open_link(request, len(outputs))

    return page.load(load, None, outputs, api_visibility="private", show_progress="hidden")
