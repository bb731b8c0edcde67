import math

import pytest
import torch

from kd_core import plots
from kd_core.train import Evaluated, Step


def test_loss_frame_has_one_row_per_student_and_step():
    steps = [Step(1, 1, 4, 2.5, 3.0, 0.1), Step(1, 3, 4, 1.5, 2.0, 0.2)]
    frame = plots.loss_frame(steps)
    assert frame.to_dict("records") == [
        {"step": 1, "loss": 2.5, "student": "CE student"}, {"step": 1, "loss": 3.0, "student": "KD student"},
        {"step": 3, "loss": 1.5, "student": "CE student"}, {"step": 3, "loss": 2.0, "student": "KD student"}]


def test_loss_frame_of_no_steps_is_empty_with_columns():
    frame = plots.loss_frame([])
    assert list(frame.columns) == ["step", "loss", "student"] and len(frame) == 0


def test_accuracy_frame_in_percent_with_teacher_line():
    evaluations = [Evaluated(0, 0, 0.1, 0.125, None, None, 0.0), Evaluated(1, 8, 0.5, 0.75, None, None, 1.0)]
    frame = plots.accuracy_frame(evaluations, teacher_acc=0.9)
    assert frame.to_dict("records") == [
        {"epoch": 0, "accuracy": 10.0, "model": "CE student"},
        {"epoch": 0, "accuracy": 12.5, "model": "KD student"},
        {"epoch": 0, "accuracy": 90.0, "model": "teacher"},
        {"epoch": 1, "accuracy": 50.0, "model": "CE student"},
        {"epoch": 1, "accuracy": 75.0, "model": "KD student"},
        {"epoch": 1, "accuracy": 90.0, "model": "teacher"}]


def test_accuracy_frame_adds_hidden_class_curves():
    frame = plots.accuracy_frame([Evaluated(1, 8, 0.5, 0.75, 0.0, 0.25, 1.0)])
    assert frame.to_dict("records") == [
        {"epoch": 1, "accuracy": 50.0, "model": "CE student"},
        {"epoch": 1, "accuracy": 75.0, "model": "KD student"},
        {"epoch": 1, "accuracy": 0.0, "model": "CE hidden"},
        {"epoch": 1, "accuracy": 25.0, "model": "KD hidden"}]


def test_probability_frame_is_the_softmax_at_t():
    logits = torch.tensor([3.0, 1.0, 0.0])
    frame = plots.probability_frame(logits, ["a", "b", "c"], temperature=2.0)
    assert list(frame["class"]) == ["a", "b", "c"]
    assert frame["probability"].tolist() == pytest.approx(torch.softmax(logits / 2, 0).tolist())
    assert frame["probability"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("probabilities, bits", [
    ([1.0, 0.0, 0.0, 0.0], 0.0),
    ([0.25] * 4, 2.0),
    ([0.5, 0.5], 1.0),
    ([0.1] * 10, math.log2(10)),
])
def test_entropy_bits(probabilities, bits):
    assert plots.entropy_bits(torch.tensor(probabilities)) == pytest.approx(bits, abs=1e-6)
