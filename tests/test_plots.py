import json
import math

import pytest
import torch

from kd_core.engine.loop import StackEvaluated, StackStep
from kd_core.views import plots


def test_loss_frame_has_one_row_per_student_and_step():
    steps = [StackStep(1, 1, 4, ((2.0, 3.5), (3.0, 2.5)), 0.1), StackStep(1, 3, 4, ((1.5, 2.0),), 0.2)]  # [seed][role]
    frame = plots.loss_frame(steps)
    assert frame.to_dict("records") == [
        {"step": 1, "loss": 2.5, "student": "CE"}, {"step": 1, "loss": 3.0, "student": "KD"},  # seed means
        {"step": 3, "loss": 1.5, "student": "CE"}, {"step": 3, "loss": 2.0, "student": "KD"}]


def test_loss_frame_of_no_steps_is_empty_with_columns():
    frame = plots.loss_frame([])
    assert list(frame.columns) == ["step", "loss", "student"] and len(frame) == 0


def test_accuracy_spec_draws_the_seed_mean_and_a_one_std_band():
    """The browser draws the chart from these rows: the mean over the seeds, mean ± the sample std as the band,
    the teacher as a rule, the x axis fixed to the run's epochs."""
    # two evaluations of 2 seeds: CE at 10/20 % then 50/70 %, KD at 20/20 % then 80/60 %
    evaluations = [StackEvaluated(0, 0, 0.0, ((0.1, 0.2), (0.2, 0.2)), None, 0.0),  # [seed][role]
                   StackEvaluated(1, 8, 1.0, ((0.5, 0.8), (0.7, 0.6)), None, 1.0)]
    spec = json.loads(plots.spec_json(plots.accuracy_spec(evaluations, teacher_acc=0.9, total_epochs=1)))
    rows = {(row["student"], row["epoch"]): row for row in spec["data"]["values"]}
    assert [rows["CE student", e]["accuracy"] for e in (0.0, 1.0)] == pytest.approx([15.0, 60.0])
    assert [rows["KD student", e]["accuracy"] for e in (0.0, 1.0)] == pytest.approx([20.0, 70.0])
    std = math.sqrt(0.02) * 100  # of 50 and 70 %
    assert rows["CE student", 0.0]["low"] == pytest.approx(15.0 - math.sqrt(50))
    assert rows["CE student", 1.0]["high"] == pytest.approx(60.0 + std)
    teacher = spec["layer"][-1]
    assert teacher["mark"]["type"] == "rule" and teacher["data"]["values"] == [{"teacher": pytest.approx(90.0)}]
    assert spec["layer"][0]["encoding"]["x"]["scale"]["domain"] == [0, 1]


def test_accuracy_spec_leaves_out_a_diverged_students_points():
    evaluations = [StackEvaluated(0, 0, 0.0, ((0.1, math.nan),), None, 0.0)]
    spec = json.loads(plots.spec_json(plots.accuracy_spec(evaluations, None, 1)))
    assert [row["student"] for row in spec["data"]["values"]] == ["CE student"]


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
