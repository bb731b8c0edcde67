"""The Lesson tab: five steps for a projector (kd_core.views.lesson.STEPS). Each sets and shows another tab's own
widgets (the Train tab's preset, the Dark knowledge tab's T), puts its question in a banner above the tabs, and,
for a Train step, presses the Train tab's own Start.
"""

from __future__ import annotations

import functools
import json
from typing import NamedTuple

import gradio as gr

from kd_core.ui.train import START_ID, TrainControls, apply_preset, group_labels
from kd_core.views import lesson

# after a Train step is shown, the page presses the Train tab's own Start: the same /distill event, so Stop, the
# queue, the headline and the bias panel work as for any run (a chained copy of the event would have none of them)
PRESS_START = (f"(index) => {{ if ({json.dumps([i for i, step in enumerate(lesson.STEPS) if step.preset])}"
               f".includes(index)) document.getElementById('{START_ID}').click(); }}")


def show_step(index: int, preset_widgets: int):
    """Show step `index`: its tab and its question above the tabs, with the Dark knowledge tab's T set, or the Train
    tab's preset picker and the `preset_widgets` widgets apply_preset fills."""
    step = lesson.STEPS[int(index)]
    shown = gr.Tabs(selected=step.tab), gr.Markdown(lesson.step_banner(int(index)), visible=True)
    if step.preset is None:
        return *shown, step.temperature, *[gr.skip()] * (1 + preset_widgets)
    return *shown, gr.skip(), step.preset, *apply_preset(step.preset)


def next_step(index: int):
    return step_widgets(lesson.next_index(int(index)))


class LessonControls(NamedTuple):
    """What a link's `lesson=N` sets (kd_core.ui.link): the step shown, its card and its button."""

    index: gr.Number
    card: gr.Markdown
    go: gr.Button


def step_widgets(index: int):
    """The Lesson tab at step `index` (0-based): LessonControls' values."""
    return index, lesson.step_markdown(index), gr.Button(lesson.STEPS[index].button)


def lesson_tab(tabs: gr.Tabs, banner: gr.Markdown, train: TrainControls,
               dark_temperature: gr.Slider) -> LessonControls:
    """Five steps for a projector (kd_core.views.lesson.STEPS): each sets and shows another tab's own widgets, and puts
    its question in `banner`, above the tabs, while the class watches."""
    index = gr.Number(0, visible=False)  # the step shown; a Number, not a State, so PRESS_START can read it
    card = gr.Markdown(lesson.step_markdown(0), elem_classes="kd-lesson")
    with gr.Row():
        go = gr.Button(lesson.STEPS[0].button, variant="primary", size="lg")
        following = gr.Button("Next step", size="lg")
    gr.Markdown("The steps: " + " · ".join(f"{i}. {step.title}" for i, step in enumerate(lesson.STEPS, 1)))
    go.click(functools.partial(show_step, preset_widgets=len(train.preset_outputs)), index,
             [tabs, banner, dark_temperature, train.preset, *train.preset_outputs],
             api_visibility="private").then(
        group_labels, train.group_inputs, train.groups, api_visibility="private", show_progress="hidden").then(
        None, index, None, js=PRESS_START)
    following.click(next_step, index, [index, card, go], api_visibility="private")
    return LessonControls(index, card, go)
