"""The Dark knowledge tab: a picture and a temperature T -> the teacher's class probabilities at T = 1 and at T
(/soften), which show how it ranks the wrong classes, the ranking a KD student is trained to match.
"""

from __future__ import annotations

import gradio as gr

from kd_core.data.datasets import CLASSES
from kd_core.serve import settings
from kd_core.ui.common import DEFAULTS, EXAMPLES, open_picture, served_picture, user_errors
from kd_core.views import pictures as picture_views

CLASS_NAMES = CLASSES[DEFAULTS.dataset]


@user_errors
def soften(image: dict | str | None, temperature: float):
    """The teacher's class probabilities for a picture at T = 1 and at `temperature`."""
    if image is None:
        return None, None, None, ""
    view = picture_views.soften_picture(open_picture(image), temperature)
    return (served_picture(view.preview),
            gr.BarPlot(view.plain, title="Teacher at T = 1: its ordinary softmax"),
            gr.BarPlot(view.softened, title=f"Teacher at T = {temperature:g}: the soft targets KD matches"),
            view.caption)


def dark_knowledge_tab(page: gr.Blocks) -> gr.Slider:
    gr.Markdown("A trained teacher is confident: at T = 1 almost all its probability sits on one class. "
                "Dividing its logits by T > 1 before the softmax shows how it ranks the *wrong* classes. "
                "That ranking is what a KD student is trained to match.")
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(EXAMPLES[6] if len(EXAMPLES) > 6 else None, type="filepath", label="Picture",
                             sources=["upload", "clipboard"], height=220, elem_classes="kd-pixels")
            gr.Examples(EXAMPLES, image, label="Test images", examples_per_page=10)
            temperature = gr.Slider(*settings.APP_TEMPERATURES, DEFAULTS.temperature, step=0.5, label="Temperature T")
            preview = gr.Image(label="What the teacher sees", height=140, interactive=False,
                               elem_classes="kd-pixels")
        with gr.Column(scale=2):
            plain, softened = (gr.BarPlot(x="class", y="probability", y_lim=[0, 1], sort=list(CLASS_NAMES),
                                          height=260, x_label_angle=-30) for _ in range(2))
            caption = gr.Markdown()
    gr.on([image.change, temperature.change, page.load], soften, [image, temperature],
          [preview, plain, softened, caption], api_name="soften", preprocess=False)
    return temperature
