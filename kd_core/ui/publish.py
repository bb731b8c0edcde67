"""Take the student out, in the Predict tab: the KD student run in the visitor's own browser
(kd_core.publish.browser_student, onnxruntime-web vendored by kd_core.publish.web_runtime and served from the
app's origin) and its publication on the Hugging Face Hub with the visitor's own sign-in (kd_core.publish.hub).
"""

from __future__ import annotations

import functools
import os

import gradio as gr
from gradio.utils import get_upload_folder

from kd_core.models import predict
from kd_core.publish import browser_student, hub, web_runtime
from kd_core.ui.common import USER_ERRORS, open_picture, user_errors
from kd_core.views import served, session

ON_SPACES = bool(os.environ.get("SPACE_ID"))  # set by Hugging Face Spaces: sign-in with the visitor's account


@functools.cache  # once per process: Gradio's static paths are the process's, and every page's
def serve_runtime() -> None:
    """Serve the vendored onnxruntime-web from the app's origin: no CDN, works offline."""
    if web_runtime.present():
        gr.set_static_paths([web_runtime.ASSETS])


def browser_panel(picture, students: session.SessionStudents | None) -> str:
    """The in-browser panel's payload for a picture: the KD student's ONNX, the prepared input, the server's
    ONNX Runtime answer (the page's script then runs the student itself)."""
    if picture is None:
        return ""
    try:
        kd = students.kd if students is not None else predict.default_students()[1]
        pixels = predict.prepare_image(picture, kd.in_shape).pixels
        folder = served.folder(get_upload_folder()) / browser_student.MODEL_FOLDER
        return browser_student.panel_html(browser_student.panel_data(kd, pixels, folder))
    except USER_ERRORS as error:
        return f"<div class='kd-browser'>{error}</div>"


def browser_upload(image: dict | str | None, students: session.SessionStudents | None) -> str:
    try:
        return browser_panel(None if image is None else open_picture(image), students)
    except ValueError:  # /predict, on the same event, already tells the visitor
        return ""


def browser_sketch(sketch: dict, students: session.SessionStudents | None) -> str:
    try:
        return browser_panel(open_picture(sketch["composite"]), students)
    except (ValueError, KeyError, TypeError):  # /predict_sketch tells the visitor
        return ""


@user_errors
def publish(repo: str, private: bool, students: session.SessionStudents | None,
            token: gr.OAuthToken | None) -> str:
    """Publish this session's KD student on the Hub with the visitor's own token (Spaces sign-in)."""
    if token is None:
        raise ValueError("Sign in with Hugging Face first (the button above).")
    if students is None or students.summary is None:
        raise ValueError("Train a pair first: this publishes your run's KD student.")
    published = hub.push(students.run_dir, repo.strip(), private=private, token=token.token,
                         summary=students.summary)
    return f"Published: [{published.repo_id}]({published.repo_url}) · commit: {published.commit_url}"


def take_out_panel(students: gr.State, image: gr.Image, sketch: gr.Sketchpad, classify: gr.Button) -> None:
    browser_student_panel(students, image, sketch, classify)
    hub_panel(students)


def browser_student_panel(students: gr.State, image: gr.Image, sketch: gr.Sketchpad, classify: gr.Button) -> None:
    gr.Markdown("### Run the KD student in your browser")
    if not web_runtime.present():
        gr.Markdown(web_runtime.how_to_vendor())
    with gr.Group(visible=web_runtime.present()):
        gr.Markdown("The KD student's ONNX file runs on your own device through onnxruntime-web (one WebAssembly "
                    "thread), on the same 28×28 input as the server's models above; the runtime (3.9 MB) comes "
                    "from this app, not from a CDN.", elem_classes="kd-small")
        panel = gr.HTML()
        result = gr.HTML(elem_id="browser-student")
        run_here = gr.Button("Run the KD student in your browser", size="sm")
    if web_runtime.present():
        # only on the visitor's own actions, one export at a time: an export on every page load and after every
        # run cost each of a classroom's 30 visitors an ONNX export (5-21 s on a busy CPU) beside the others'
        # training; preprocess=False: the pictures arrive as /predict's and /predict_sketch's do (open_picture)
        exports = dict(api_visibility="private", preprocess=False, concurrency_id="export", concurrency_limit=1)
        for event in (gr.on([image.change, run_here.click], browser_upload, [image, students], panel, **exports),
                      classify.click(browser_sketch, [sketch, students], panel, **exports)):
            event.then(None, panel, result, js=browser_student.script())


def hub_panel(students: gr.State) -> None:
    gr.Markdown("### Publish the KD student on the Hugging Face Hub")
    if not ON_SPACES:
        gr.Markdown("From the command line, with a token in `HF_TOKEN` (or after `hf auth login`): "
                    "`python -m kd_core distill --save-students students` then "
                    "`python -m kd_core push students --repo NAME` (it exports ONNX, writes the card with the "
                    "CE twin's figures and prints the commit URL). On a Space, a Sign-in button appears here.",
                    elem_classes="kd-small")
        return
    gr.LoginButton()
    with gr.Row():
        repo = gr.Textbox(label="Repository (NAME or OWNER/NAME)", value="kd-playground-student")
        private = gr.Checkbox(label="Private", value=True)
        button = gr.Button("Publish the KD student", variant="primary")
    published = gr.Markdown()
    button.click(publish, [repo, private, students], published, api_visibility="private", concurrency_id="export",
                 concurrency_limit=1)
