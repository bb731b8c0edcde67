"""The Predict tab: a picture, uploaded or drawn, becomes the models' 28×28 input, and the teacher, the CE student
and every method's student give their top classes (/predict, /predict_sketch), from this session's run or the
shipped students; below them, the take-out panel (kd_core.ui.publish).
"""

from __future__ import annotations

import gradio as gr

from kd_core.engine.roles import METHODS, NAMES
from kd_core.serve import settings
from kd_core.ui import publish
from kd_core.ui.common import EXAMPLES, TOP_K, open_picture, served_picture, user_errors
from kd_core.views import pictures as picture_views
from kd_core.views import session

SUBJECTS = {"fashion-mnist": "a garment", "mnist": "a handwritten digit", "cifar10": "an animal or a vehicle"}
# the Predict tab's student of each method, in the order of /predict's outputs: Hinton KD's where the KD student has
# always been (before the `students` sentence), every other method's after that sentence, so that the indices
# gradio_client scripts read never move when a method is added
PREDICT_METHODS = ("kd", *(method for method in METHODS if method != "kd"))


def show_prediction(picture, students):
    """/predict's outputs: preview, steps, teacher, CE student, KD student, the students' source, then every other
    method's student (PREDICT_METHODS); a method the session's run did not train gets None (an empty Label)."""
    view = picture_views.predict_picture(picture, students, TOP_K)
    kd, *others = (view.predictions.get(method) for method in PREDICT_METHODS)
    return (served_picture(view.preview), f"What the models see: {view.steps}.", view.predictions["teacher"],
            view.predictions["ce"], kd, f"Students: {view.students}.", *others)


@user_errors
def predict_upload(image: dict | str | None, students: session.SessionStudents | None):
    """An uploaded picture -> the 28×28 model input, then the teacher's and every student's top-k predictions."""
    if image is None:  # the upload was cleared
        return None, "", None, None, None, gr.skip(), *[None] * (len(PREDICT_METHODS) - 1)
    return show_prediction(open_picture(image), students)


@user_errors
def predict_sketch(sketch: dict, students: session.SessionStudents | None):
    """A drawing (an ImageEditor value, checked by settings.check_sketch) -> the same as /predict."""
    return show_prediction(open_picture(sketch["composite"]), students)


def show_students(students: session.SessionStudents | None) -> list[gr.Label]:
    """The Predict tab's method Labels, each shown only when the session's students include that method's."""
    shown = session.student_methods(students)
    return [gr.Label(visible=method in shown) for method in PREDICT_METHODS]


def predict_tab(page: gr.Blocks, students: gr.State) -> None:
    with gr.Row():
        with gr.Column():
            with gr.Tab("Upload"):
                image = gr.Image(EXAMPLES[0] if EXAMPLES else None, type="filepath", height=280,
                                 label="A picture of " + " or ".join(SUBJECTS[name]
                                                                     for name in settings.app_datasets()),
                                 sources=["upload", "clipboard"],
                                 elem_classes="kd-pixels")
                gr.Examples(EXAMPLES, image, label="Fashion-MNIST test images (click one)",
                            examples_per_page=10)
            with gr.Tab("Draw"):
                sketch = gr.Sketchpad(type="pil", image_mode="RGBA", height=320, canvas_size=(280, 280),
                                      label="Draw a garment: pick the brush on the left, then draw",
                                      brush=gr.Brush(colors=["#000000"], default_size=14), transforms=(),
                                      layers=False)
                classify = gr.Button("Classify the drawing", variant="primary")
        with gr.Column():
            preview = gr.Image(label="What the models see", height=280, interactive=False,
                               elem_classes="kd-pixels")
            steps = gr.Markdown()
    shown = session.student_methods(None)
    with gr.Row(elem_classes="kd-labels"):  # a grid of equal columns (CSS): six to a line at 1,400 px, more wrap
        teacher, ce = (gr.Label(num_top_classes=TOP_K, label=name) for name in ("teacher", NAMES["ce"]))
        methods = [gr.Label(num_top_classes=TOP_K, label=NAMES[method], visible=method in shown)
                   for method in PREDICT_METHODS]
    source = gr.Markdown()
    outputs = [preview, steps, teacher, ce, methods[0], source, *methods[1:]]
    # students.change: a finished run's students (maybe of another dataset) answer for the shown picture
    gr.on([image.change, page.load, students.change], predict_upload, [image, students], outputs,
          api_name="predict", preprocess=False)
    classify.click(predict_sketch, [sketch, students], outputs, api_name="predict_sketch", preprocess=False)
    # which students show follows the session's; on every prediction too, as Gradio may forget a session's students
    # (beyond app.SESSIONS_KEPT) while its page still shows their Labels
    gr.on([page.load, students.change, image.change, classify.click], show_students, students, methods,
          api_visibility="private")
    publish.take_out_panel(students, image, sketch, classify)
