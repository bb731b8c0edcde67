"""The omitted class's bias: the curve is a direct re-evaluation, the automatic choice reads no label."""

import json

import pytest
import torch
from PIL import Image
from support import finished_session, own_top_k

from kd_core.config import RunConfig
from kd_core.engine import bias
from kd_core.engine.train import run
from kd_core.views import pictures as picture_views
from kd_core.views import session
from kd_core.views.bias import bias_view

HIDDEN = RunConfig(hide_class=3, train_size=5000, epochs=3, lr=1e-3, repeats=2)


@pytest.fixture(scope="module")
def hidden_run(fashion):
    return run(HIDDEN)


def test_the_bias_curve_matches_a_direct_evaluation(hidden_run, fashion):
    report = hidden_run.bias_report()
    assert [row["bias"] for row in report["bias_curve"]] == list(bias.BIASES)
    for row in report["bias_curve"][::8]:
        hidden_acc, acc = [], []
        for seed_index in range(2):  # each seed's KD student, evaluated from its weights with the bias added
            model = hidden_run.stack.module(seed_index, 1)
            with torch.no_grad():
                logits = model(fashion.normalize(fashion.test_images))
            logits[:, 3] += row["bias"]
            predicted = logits.argmax(1)
            hidden_acc.append((predicted[fashion.test_labels == 3] == 3).float().mean().item())
            acc.append((predicted == fashion.test_labels).float().mean().item())
        assert row["kd_hidden_acc"] == pytest.approx(sum(hidden_acc) / 2, abs=1e-4)
        assert row["kd_acc"] == pytest.approx(sum(acc) / 2, abs=1e-4)
    assert report["bias_curve"][0]["ce_hidden_acc"] < 0.02  # the CE students never saw a dress
    # raising the bias reveals what the KD students learnt from the teacher alone
    assert max(r["kd_hidden_acc"] for r in report["bias_curve"]) > report["bias_curve"][0]["kd_hidden_acc"] + 0.2


def test_auto_bias_reads_no_label_and_matches_the_teachers_share():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(1000, 10, generator=g)
    teacher[:100, 3] += 10  # the teacher calls 10 % of the images class 3
    student = torch.randn(1000, 10, generator=g)
    student[:, 3] -= 3  # a student that almost never predicts 3
    b = bias.auto_bias(student, teacher, 3)
    share = lambda value: (bias.shifted(student, 3, value).argmax(1) == 3).float().mean().item()  # noqa: E731
    target = (teacher.argmax(1) == 3).float().mean().item()
    assert share(b) >= target > share(b - bias.AUTO_STEP)
    assert bias.auto_bias(student, teacher, 3, high=0.5) == 0.5  # capped


def test_session_bias_moves_the_predict_tabs_students(hidden_run):
    meta = {"classes": list(range(10)), "mean": [0.286], "std": [0.353], "in_shape": [1, 28, 28],
            "dataset": "fashion-mnist"}
    from kd_core.models.predict import classifier_from

    students = session.SessionStudents(classifier_from("CE student", hidden_run.ce_student, meta),
                                       classifier_from("KD student", hidden_run.kd_student, meta),
                                       "a run", None, 3, hidden_run.bias_report())
    images = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    biased = session.with_hidden_bias(students, 2.5)
    assert torch.allclose(biased.kd.logits(images)[:, 3], students.kd.logits(images)[:, 3] + 2.5)
    assert torch.equal(biased.kd.logits(images)[:, :3], students.kd.logits(images)[:, :3])
    spec, caption = bias_view(biased)
    assert "+2.5" in caption and "Dress" in caption
    layers = json.loads(spec)["layer"]  # the curves for the browser to draw, the chosen bias marked
    assert {row["mark"] for row in layers[1]["data"]["values"]} >= {"chosen +2.5"}
    curve = hidden_run.bias_report()["bias_curve"]
    kd_dress = [row["accuracy"] for row in json.loads(spec)["data"]["values"] if row["curve"] == "KD: Dress"]
    assert kd_dress == pytest.approx([100 * row["kd_hidden_acc"] for row in curve])
    with pytest.raises(ValueError, match=r"bias must be a number in \[0, 8\]"):
        session.with_hidden_bias(students, -1)
    with pytest.raises(ValueError, match="hidden class"):
        session.with_hidden_bias(None, 1.0)


def test_the_bias_moves_every_students_predictions_in_the_predict_tab(fashion):
    """Every student of a run, each method's as well as CE's, predicts with the bias on the hidden class's logit;
    `kd` (here the first method's, DKD: no Hinton KD in the run) stays the same student as its method's."""
    cfg = RunConfig(hide_class=3, train_size=1000, epochs=1, repeats=1, methods=("dkd", "dist"))
    result, students = finished_session(cfg)
    biased = session.with_hidden_bias(students, 8.0)
    assert biased.kd is biased.methods["dkd"] and biased.hidden_bias == 8.0
    image = fashion.test_images[13]  # a dress: no student saw one
    view = picture_views.predict_picture(Image.fromarray(image[0].numpy()), biased)
    assert list(view.predictions) == ["teacher", "ce", "dkd", "dist"] and "+8 on the Dress logit" in view.students
    for role in ("ce", "dkd", "dist"):
        model = result.stack.module(0, result.column(role))
        assert view.predictions[role] == pytest.approx(own_top_k(model, fashion, image, logit_bias=(3, 8.0)),
                                                       abs=1e-5), role
        assert view.predictions[role] != pytest.approx(own_top_k(model, fashion, image), abs=1e-3), role
