"""Models: the zoo chosen by name (`zoo`), outside architectures from timm and torchvision behind their own
preprocessing (`external`), checkpoints as safetensors with JSON metadata (`checkpoints`), and any picture to the
predictions of a teacher or a student (`predict`); where a student comes from, pretrained or not (`students`), and
pretrained weights fetched fast or refused in one line (`weights`).
"""

from kd_core.models.checkpoints import CheckpointError, inspect, load_model, resolve_teacher, save_model
from kd_core.models.predict import Classifier, load_classifier
from kd_core.models.zoo import STUDENTS, TEACHERS, build

__all__ = [
    "CheckpointError",
    "Classifier",
    "STUDENTS",
    "TEACHERS",
    "build",
    "inspect",
    "load_classifier",
    "load_model",
    "resolve_teacher",
    "save_model",
]
