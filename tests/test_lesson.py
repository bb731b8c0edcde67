"""The guided lesson's steps (kd_core.views.lesson), the Train tab's folded-group summaries (kd_core.views.panels),
and the
Lesson tab's wiring in kd_core/ui/lesson.py."""

import gradio as gr
import pytest

import app
from kd_core.serve import settings
from kd_core.ui import lesson as lesson_tab
from kd_core.ui import train
from kd_core.views import lesson, panels


def test_the_five_steps_in_the_issues_order():
    assert [step.title for step in lesson.STEPS] == [
        "Dark knowledge at T = 1 and T = 4", "CE vs KD with 1,000 labels", "The full-data null result",
        "The teacher labels unlabelled images", "The hidden class and its bias"]
    assert [(step.tab, step.preset, step.temperature) for step in lesson.STEPS] == [
        ("dark-knowledge", None, 4.0),
        ("train", "Defaults: 1,000 images, KD beats CE", None),
        ("train", "Full data: no gain here", None),
        ("train", "The teacher labels images for the student", None),
        ("train", "Hidden class: no dresses for the students", None)]


def test_each_step_has_one_look_sentence_one_question_and_a_button():
    for step in lesson.STEPS:
        assert step.look_at.endswith((".", ")")) and step.question.endswith("?") and step.question.count("?") == 1
        assert step.button


def test_the_presets_the_steps_run_set_what_the_steps_say():
    """Each Train step's preset is the regime its words describe."""
    train = {step.title: settings.preset(step.preset) for step in lesson.STEPS if step.preset}
    assert train["CE vs KD with 1,000 labels"].train_size == 1000
    assert train["The full-data null result"].train_size == 0
    assert train["The teacher labels unlabelled images"].unlabeled == 50_000
    assert train["The hidden class and its bias"].hide_class == 3  # Dress


@pytest.mark.parametrize("change, message", [
    ({"tab": "sweep"}, "a lesson step shows one of train, dark-knowledge; got 'sweep'"),
    ({"preset": "No such preset"}, "a Train step names one of the presets"),
    ({"preset": None}, "a Train step names one of the presets"),
    ({"temperature": 2.0}, "a Dark knowledge step, and only that, sets the temperature"),
])
def test_a_malformed_step_fails_on_construction(change, message):
    fields = {"title": "t", "look_at": "l.", "question": "q?", "tab": "train", "button": "b",
              "preset": "Full data: no gain here", **change}
    with pytest.raises(ValueError, match=message):
        lesson.Step(**fields)


def test_step_text_and_next_step_wraps_around():
    assert lesson.step_markdown(1).startswith("## Step 2 of 5: CE vs KD with 1,000 labels\n\n**Look at:** Watch")
    assert "**Ask the class:** Both students saw the same 1,000 labelled images" in lesson.step_markdown(1)
    assert [lesson.next_index(i) for i in range(5)] == [1, 2, 3, 4, 0]


def test_show_step_sets_the_dark_knowledge_temperature_or_the_train_preset():
    widgets = 15  # apply_preset's outputs
    tabs, banner, temperature, *rest = lesson_tab.show_step(0, widgets)
    assert tabs.selected == "dark-knowledge" and temperature == 4.0
    assert banner.value == lesson.step_banner(0) and banner.visible is True
    assert len(rest) == 1 + widgets and all(isinstance(value, type(gr.skip())) for value in rest)
    tabs, banner, temperature, preset, *values = lesson_tab.show_step(2, widgets)
    assert banner.value == ("**Lesson, step 3 of 5:** Why does the teacher stop helping once the labels are "
                            "plentiful?")
    assert (tabs.selected, preset) == ("train", "Full data: no gain here")
    assert isinstance(temperature, type(gr.skip())) and len(values) == widgets
    assert values[:11] == list(train.apply_preset("Full data: no gain here"))[:11]  # the preset's plain values
    assert values[:3] == [2.0, 0.5, 3]  # T, α, epochs of the full-data preset


def test_the_page_presses_start_only_on_train_steps():
    assert lesson_tab.PRESS_START.startswith("(index) => { if ([1, 2, 3, 4].includes(index)) document.getElementById(")
    assert "'kd-start'" in lesson_tab.PRESS_START


def test_group_labels_say_the_current_values():
    assert panels.data_label("fashion-mnist", 1000, "none", 0) == (
        "Data: Fashion-MNIST · 1,000 labelled images · no class hidden · no transfer set")
    assert panels.data_label("fashion-mnist", 0, "Dress", 50_000) == (
        "Data: Fashion-MNIST · all 60,000 labelled images · Dress hidden · + 50,000 unlabelled")
    assert panels.students_label("mlp-small", 3e-3, 20, 0, 5) == (
        "Students: mlp-small · lr 0.003 · 20 epochs · 5 seeds from 0")
    assert panels.students_label("cnn-tiny", 1e-3, 1.0, 7, 1.0) == "Students: cnn-tiny · lr 0.001 · 1 epoch · seed 7"
    assert panels.methods_label(["kd"], 8.0, 0.25) == "Methods: KD"
    assert panels.methods_label(["kd", "dkd", "hint"], 8.0, 0.25) == "Methods: KD, DKD, Hint · β 8 · w 0.25"
    assert panels.methods_label([], 8.0, 0.25) == "Methods: none chosen"


def test_the_folded_groups_start_with_the_defaults_summaries():
    labels = {block.label for block in app.demo.blocks.values() if isinstance(block, gr.Accordion)}
    assert labels == {"Data: Fashion-MNIST · 1,000 labelled images · no class hidden · no transfer set",
                      "Students: mlp-small · lr 0.003 · 20 epochs · 5 seeds from 0", "Methods: KD"}
