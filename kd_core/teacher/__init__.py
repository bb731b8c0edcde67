"""The teacher: where it comes from and how it is prepared for a run's data (`sources`), how it is trained
(`training`: the recipe and the loop, which stops at the next batch when asked), and its logits and features, computed
once per (checkpoint, data) and cached in memory and on disk (`logits`).
"""

from kd_core.teacher.logits import LogitsProgress, TeacherLogits, teacher_features, teacher_logits
from kd_core.teacher.training import RECIPE, Stopped, TeacherEpoch, TeacherRecipe, fit_teacher, train_teacher

__all__ = [
    "LogitsProgress",
    "RECIPE",
    "Stopped",
    "TeacherEpoch",
    "TeacherLogits",
    "TeacherRecipe",
    "fit_teacher",
    "teacher_features",
    "teacher_logits",
    "train_teacher",
]
