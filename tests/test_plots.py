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


@pytest.mark.parametrize("rgba, colour", [
    ((1.0, 1.0, 1.0, 1.0), "black"),  # the heatmap's white cells (not beyond noise)
    ((0.0196, 0.188, 0.380, 1.0), "white"),  # RdBu's darkest blue (navy), where black text was unreadable
    ((0.404, 0.0, 0.122, 1.0), "white"),  # its darkest red
    ((0.573, 0.773, 0.871, 1.0), "black"),  # a light blue
    ((0.5, 0.5, 0.5, 1.0), "black"),  # mid grey: luminance 0.214, above the 0.179 where the contrasts are equal
    ((0.45, 0.45, 0.45, 1.0), "white"),  # luminance 0.171
])
def test_the_heatmaps_text_colour_follows_the_cell(rgba, colour):
    assert plots.text_colour(rgba) == colour


def test_a_sweep_cell_says_its_gain_with_its_interval_and_the_seeds_it_won():
    assert plots.cell_label(78.61, 1.7, 2.35, 3.0, 3) == "78.6\n+1.7 ± 2.4\n3/3"  # white, and now it says why
    assert plots.cell_label(76.0, -1.38, math.nan, 1.0, 1) == "76.0\n-1.4\n1/1"  # one seed: no interval
    assert plots.cell_label(76.0) == "76.0"


def test_the_sweep_heatmap_prints_white_on_its_dark_cells():
    """A beyond-noise cell at the colour scale's end is navy: its text is white, a white cell's black."""
    import pandas as pd

    frame = pd.DataFrame({"T": [1.0, 1.0], "alpha": [0.5, 0.9], "accuracy": [80.0, 84.0], "gain": [0.0, 4.0],
                          "gain_low": [-1.0, 3.0], "gain_high": [1.0, 5.0], "wins": [2, 3],
                          "beyond_noise": [False, True], "seeds": [3, 3]})
    figure = plots.sweep_heatmap(frame, ce_acc=0.80)
    texts = {text.get_text(): text.get_color() for text in figure.axes[0].texts}
    assert texts == {"80.0\n+0.0 ± 1.0\n2/3": "black", "84.0\n+4.0 ± 1.0\n3/3": "white"}
