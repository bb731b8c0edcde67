"""The Your data tab: a visitor's zip of class folders (or a Hub dataset id) and a teacher (trained on it, or from
the Hub) -> the teacher prepared (a line per epoch), then the CE and KD students as in the Train tab, with seeds,
curves, table and verdict, and a picture predicted with the run's own class names (kd_core.serve.own_data).
"""

from __future__ import annotations

import html
import itertools

import gradio as gr
from PIL import Image

from kd_core.config import MAX_REPEATS
from kd_core.run import Run, TeacherEpoch
from kd_core.serve import own_data
from kd_core.ui.common import DEFAULTS, TOP_K, Services, ViewUpdates, live_run_here, stopped, user_errors, with_services
from kd_core.ui.why import show_diagnosis, why_panel, wire_why
from kd_core.views import joined, plots, why
from kd_core.views.teacher import status_line as teacher_status


@user_errors
def distill_own_data(services: Services, upload, kind: str, arch: str, hub_id: str, teacher_epochs: int,
                     image_size: int, teacher_image_size: int, student: str, epochs: int, repeats: int,
                     choose: bool = True, dataset_id: str = "", image_column: str = "", label_column: str = ""):
    """Your zip (or Hub dataset) and teacher: prepare the teacher (trained first when asked, a line per epoch),
    choose T and α on your validation split (when asked), then the usual CE and KD students with seeds, curves,
    table and verdict."""
    run = own_data.app_config(upload, kind, arch, hub_id, teacher_epochs, image_size, teacher_image_size, student,
                              epochs, repeats, dataset_id, image_column, label_column)  # resolved once, here
    prepared = run
    # the teacher's preparation takes a training slot like any stack: Stop or a closed tab ends it at the next batch
    preparation = services.pool.job(own_data.preparation(run)) if not run.prepared else iter(())
    last_epoch = None
    try:
        for event in itertools.chain([None], preparation):  # None: the first line, "preparing the teacher…"
            if isinstance(event, Run):
                prepared = event
                break
            last_epoch = event if isinstance(event, TeacherEpoch) else last_epoch
            yield (f'<div class="kd-status">{html.escape(teacher_status(event, run, last_epoch))}</div>',
                   gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "")
    finally:  # Stop or a closed tab: the job's slot is given back, its training stopped at the next batch
        getattr(preparation, "close", lambda: None)()
    if not prepared.prepared:  # the pool was shutting down: nothing was trained
        return
    chosen = None
    if choose:
        for item in own_data.choosing(prepared, services.pool.events):
            if isinstance(item, dict):
                chosen = item
                break
            yield (f'<div class="kd-status">{html.escape(item)}</div>', *(gr.skip(),) * 5, "")
        if chosen is None:  # the pool was shutting down
            return
        prepared = prepared.replace(temperature=chosen["T"], alpha=chosen["alpha"])
    updates = ViewUpdates()
    shown = why.chosen_html(chosen)
    for view in joined.join_run(services.runs, prepared, live_run_here(services.pool)):
        done = view.table is not None
        yield *updates(view), view.students if done else gr.skip(), prepared if done else gr.skip(), shown
        shown = gr.skip()


@user_errors
def predict_own_data(picture: Image.Image | None, prepared, students):
    """A picture -> the run's teacher's and students' top classes, with the run's class names."""
    if picture is None:
        return None, None, None
    found = own_data.predict_own(picture, prepared, students, TOP_K)
    return found["teacher"], found["ce"], found["kd"]


def own_data_tab(services: Services) -> None:
    gr.Markdown("Distil **your own** image classifier: upload a .zip with one folder per class (JPEG, PNG, "
                "WebP; optional `train/`, `val/`, `test/` folders, else 20 % of each class is the test split and "
                "a tenth of the rest the validation split), or name a Hub image dataset (its `ClassLabel` gives "
                "the classes; its train, validation and test splits are used alike), pick a teacher, and the CE "
                "and KD students train side by side as in the Train tab, with seeds and a verdict. "
                + own_data.LIMITS_TEXT)
    prepared, own_students = gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            upload = gr.File(label="Your images (.zip)", file_types=[".zip"], type="filepath")
            dataset_id = gr.Textbox("", label="…or a Hub dataset (ORG/NAME[:CONFIG]; needs the internet)",
                                    placeholder="uoft-cs/cifar10")
            with gr.Row():
                image_column = gr.Textbox("", label="Image column (blank: detect)", min_width=120)
                label_column = gr.Textbox("", label="Label column (blank: detect)", min_width=120)
            kind = gr.Radio(list(own_data.TEACHER_KINDS), value=own_data.TEACHER_KINDS[0], label="Teacher")
            arch = gr.Dropdown(list(own_data.TEACHER_ARCHS), value=own_data.TEACHER_ARCHS[0],
                               label="Architecture to train (Train one on my data)")
            teacher_epochs = gr.Slider(1, own_data.MAX_APP_TEACHER_EPOCHS, own_data.DEFAULT_TEACHER_EPOCHS, step=1,
                                       label="Teacher epochs")
            hub_id = gr.Textbox("", label="Hub id (ORG/NAME; needs the internet)", placeholder="timm/resnet18.a1_in1k")
            with gr.Row():
                image_size = gr.Number(0, precision=0, minimum=0, maximum=own_data.MAX_APP_IMAGE_SIZE,
                                       label="Student image size (0: as uploaded)")
                teacher_image_size = gr.Number(0, precision=0, minimum=0, maximum=own_data.MAX_APP_IMAGE_SIZE,
                                               label="Teacher image size (0: its own)")
            student = gr.Dropdown(list(own_data.STUDENTS), value=DEFAULTS.student, label="Student")
            with gr.Row():
                epochs = gr.Slider(1, own_data.MAX_APP_EPOCHS, own_data.DEFAULT_EPOCHS, step=1, label="Student epochs")
                repeats = gr.Slider(1, MAX_REPEATS, own_data.DEFAULT_REPEATS, step=1, label="Seeds")
            choose = gr.Checkbox(True, label="Choose T and α on my validation split", elem_id="own-choose",
                                 info="9 KD students (T 1, 2, 4 × α 0.1, 0.5, 0.9) beside CE, trained as one stack "
                                      "before the run; off: Hinton's T = 4, α = 0.9")
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button("Start", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.HTML('<div class="kd-status">Upload a zip or name a Hub dataset, then press Start.</div>')
            with gr.Row():
                losses = gr.LinePlot(x="step", y="loss", color="student", color_map=plots.LOSS_COLOURS, height=300,
                                     title="Training loss", x_title="step", y_title="loss")
                accuracies = gr.Plot(label="Validation accuracy", show_label=False)
            chosen = gr.HTML(elem_id="own-chosen")
            diagnosis = gr.HTML(elem_id="own-diagnosis")  # after a run: why, and the fix (engine.diagnosis)
            table = gr.Dataframe(label="Results on your test split (mean ± std over seeds)", visible=False,
                                 interactive=False)
            panel = why_panel("own-")
            gr.Markdown("### Predict with your run's classes")
            with gr.Row():
                picture = gr.Image(type="pil", label="A picture", height=220)
                teacher_label = gr.Label(num_top_classes=TOP_K, label="Teacher")
                ce_label = gr.Label(num_top_classes=TOP_K, label="CE student")
                kd_label = gr.Label(num_top_classes=TOP_K, label="KD student")
    run = start.click(with_services(distill_own_data, services),
                      [upload, kind, arch, hub_id, teacher_epochs, image_size, teacher_image_size, student, epochs,
                       repeats, choose, dataset_id, image_column, label_column],
                      [status, losses, accuracies, table, own_students, prepared, chosen], api_visibility="private",
                      concurrency_limit=services.training_visitors, concurrency_id="training", show_progress="full",
                      show_progress_on=[status])  # private: the API's checked endpoints are settings.api_checks
    stop.click(stopped, None, status, cancels=[run], api_visibility="private")
    wire_why(run, own_students, panel)
    start.click(None, None, diagnosis, js="() => ''", api_visibility="private")  # a new run's comes at its end
    run.success(show_diagnosis, own_students, diagnosis, api_visibility="private")
    picture.change(predict_own_data, [picture, prepared, own_students], [teacher_label, ce_label, kd_label],
                   api_visibility="private")
