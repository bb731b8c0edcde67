"""The Predict and Dark knowledge tabs' views: a picture -> what the teacher and the session's students say.

`predict_picture` answers for the teacher, the CE student and every method's student of the session's run (the
shipped pair without one); `soften_picture` shows the teacher's probabilities at T = 1 and at T (dark knowledge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from PIL import Image

from kd_core.config import MAX_TEMPERATURE
from kd_core.models import predict
from kd_core.models.predict import Classifier
from kd_core.serve.settings import DATASET_LABELS
from kd_core.views import plots
from kd_core.views.session import SessionStudents


@dataclass(frozen=True, eq=False)
class PredictView:
    """What the Predict tab shows for one picture."""

    preview: Image.Image  # the model input, enlarged with sharp pixels
    steps: str  # the preprocessing, e.g. "grayscale → inverted (light background) → …"
    # "teacher", "ce", then each method whose student predicts (kd_core.engine.roles.METHODS keys) -> top-k
    # {class: probability}
    predictions: dict[str, dict[str, float]]
    students: str  # where the students come from


def session_classifiers(students: SessionStudents | None) -> tuple[dict[str, Classifier], str]:
    """{"teacher": …, "ce": CE student, then a student per method of the session's run, by method name}, and a
    sentence saying whose students they are. Without a run: the shipped pair, CE and Hinton KD ("kd").

    The teacher is the default one of the students' dataset: Fashion-MNIST's for the shipped pair.
    """
    if students is not None:
        teacher = predict.default_teacher(students.kd.meta["dataset"])
        description = students.description
        if students.hidden_bias:
            name = teacher.classes[students.hidden]
            description += f", each with +{students.hidden_bias:g} on the {name} logit (the hidden-class bias)"
        return {"teacher": teacher, "ce": students.ce, **students.methods}, description
    ce, kd = predict.default_students()
    cfg = kd.meta.get("config", {})
    return {"teacher": predict.default_teacher(kd.meta["dataset"]), "ce": ce, "kd": kd}, (
        f"the default pair shipped in checkpoints/ (T={cfg.get('temperature'):g}, α={cfg.get('alpha'):g}, "
        f"{cfg.get('epochs')} epochs, {kd.meta['arch']} on {DATASET_LABELS[kd.meta['dataset']]}); "
        f"train your own in the Train tab")


def predict_picture(picture: Image.Image, students: SessionStudents | None, k: int = 3) -> PredictView:
    """The teacher's and every student's top-k on `picture` (ValueError if it is blank)."""
    classifiers, source = session_classifiers(students)
    prepared = predict.prepare_image(picture, classifiers["teacher"].in_shape)
    return PredictView(predict.enlarge(prepared.pixels), " → ".join(prepared.steps) or "used as is",
                       predict.predict_all(classifiers, prepared.pixels, k), source)


@dataclass(frozen=True, eq=False)
class SoftenView:
    """What the Dark knowledge tab shows: the teacher's probabilities at T = 1 and at T."""

    preview: Image.Image
    plain: pd.DataFrame  # plots.probability_frame at T = 1
    softened: pd.DataFrame  # at the chosen T
    caption: str


def soften_picture(picture: Image.Image, temperature: float, dataset: str = "fashion-mnist") -> SoftenView:
    teacher = predict.default_teacher(dataset)
    if not (isinstance(temperature, (int, float)) and 0 < temperature <= MAX_TEMPERATURE):
        raise ValueError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}]; got {temperature!r}")
    prepared = predict.prepare_image(picture, teacher.in_shape)
    logits = teacher.logits(prepared.pixels[None])[0]
    plain = plots.probability_frame(logits, teacher.classes, 1.0)
    soft = plots.probability_frame(logits, teacher.classes, temperature)
    top = teacher.classes[int(logits.argmax())]
    plain_bits, soft_bits = (plots.entropy_bits(predict.softened(logits, t)) for t in (1.0, temperature))
    caption = (f"The teacher says **{top}**. Entropy {plain_bits:.2f} bits at T = 1, {soft_bits:.2f} bits "
               f"at T = {temperature:g} (uniform: {math.log2(len(teacher.classes)):.2f}). The small "
               f"probabilities that softening brings out (which wrong classes look alike) are the dark "
               f"knowledge the KD student learns from.")
    return SoftenView(predict.enlarge(prepared.pixels), plain, soft, caption)

