"""A teacher's preparation in words (kd_core.views.teacher): the CLI and the Your data tab say the same of each event,
and between epochs the tab keeps the last epoch's validation accuracy in view."""

import math
import re

import pytest

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset
from kd_core.engine.events import LogitsProgress, Queued, StackStep, TeacherEpoch, TeacherProgress
from kd_core.run import Run
from kd_core.teacher import training
from kd_core.views.teacher import status_line, teacher_line


class Data(Dataset):
    def __init__(self) -> None:  # (only its note is read)
        self.note = "300 training, 60 validation and 60 test images"


RUN = Run(RunConfig(data="my.zip", teacher="zoo:cnn-tiny", teacher_epochs=5), Data(), None)


def test_each_teacher_event_is_one_line():
    assert teacher_line(TeacherEpoch(2, 0.5, 0.9125, 0.9, 12.0), 5) == (
        "teacher epoch 2/5: validation accuracy 91.2% (loss 0.5000, 12 s)")
    assert teacher_line(TeacherProgress(3, 40, 100, 1234.5, 6.2), 5) == (
        "teacher epoch 3/5: step 40 of 100, 1,234 images/s, about 6 s left")
    assert teacher_line(LogitsProgress(2_000, 12_000), 5) == "the teacher's logits: 2,000 of 12,000 images"
    assert teacher_line(StackStep(1, 1, 10, ((0.1, 0.2),), 0.5), 5) is None


def test_the_tab_s_status_keeps_the_last_epoch_s_accuracy_between_epochs():
    epoch = TeacherEpoch(1, 0.5, 0.875, 0.8, 3.0)
    progress = TeacherProgress(2, 30, 100, 800.0, 9.0)
    assert status_line(None, RUN) == ("300 training, 60 validation and 60 test images; "
                                      "preparing the teacher zoo:cnn-tiny…")
    assert status_line(progress, RUN) == "teacher epoch 2/5: step 30 of 100, 800 images/s, about 9 s left"
    assert status_line(progress, RUN, epoch).endswith(" · after epoch 1: validation accuracy 87.5%")
    assert status_line(Queued(2, 4, None, 0, None), RUN).startswith("waiting for a free training slot: 2 runs ahead")


PROGRESS = re.compile(r"^teacher epoch 1/1: step ([\d,]+) of ([\d,]+), [\d,]+ images/s, about [\d,]+ s left$")


@pytest.mark.parametrize("args", [
    pytest.param(["train-teacher", "--arch", "mlp-tiny", "--epochs", "1"],  # a zoo teacher on a built-in dataset
                 marks=pytest.mark.slow),  # (its loop runs on every core: 77 s here on a busy machine)
    ["distill", "--teacher", "zoo:mlp-tiny", "--teacher-epochs", "1", "--epochs", "1", "--repeats", "1"],
])
def test_the_cli_prints_the_teacher_s_progress_between_epochs(args, monkeypatch, tmp_path, capsys):
    """Between the epoch lines (minutes apart for a big teacher), a line per PROGRESS_S: steps, speed, time left."""
    monkeypatch.setattr(training, "PROGRESS_S", 0.0)  # every step, so that a 1-s test sees the lines
    out = ["--out", str(tmp_path / "teacher.safetensors")] if args[0] == "train-teacher" else []
    assert main([*args, *out]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if PROGRESS.match(line)]
    steps = [int(PROGRESS.match(line)[1].replace(",", "")) for line in lines]
    total = int(PROGRESS.match(lines[0])[2].replace(",", ""))
    assert total == math.ceil(55_000 / training.RECIPE.batch_size)  # the fit split, the recipe's batch
    assert len(lines) >= total - 1 and steps == sorted(steps) and steps[-1] <= total
