"""Why a run came out as it did (kd_core.engine.diagnosis): a teacher no better than the CE student is named with
its fix, in the function and in the CLI's JSON; a run whose KD loses with a good teacher still gets a reason."""

from __future__ import annotations

import math

import pytest
import torch
from test_sources import run_cli

from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset
from kd_core.engine import train
from kd_core.engine.diagnosis import (
    KD_WORSE,
    TEACHER_NOT_BETTER,
    diagnose,
    kd_worse_check,
    teacher_check,
    teacher_margin,
)
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.teacher.training import fit_teacher


def test_clearly_above_is_two_standard_errors_and_at_least_a_point():
    assert teacher_margin(0.9, 100) == pytest.approx(2 * math.sqrt(0.9 * 0.1 / 100))  # 6 points on 100 images
    assert teacher_margin(0.7, 2000) == pytest.approx(2 * math.sqrt(0.7 * 0.3 / 2000))  # 2.0 points
    assert teacher_margin(0.9, 5000) == 0.01  # two standard errors are 0.85 points: a point at least
    assert teacher_margin(0.999, 5000) == 0.01
    assert teacher_check("t", 0.93, 0.90, 100, 0.9) is not None  # 3 points ahead, 5.1 needed on 100 images
    assert teacher_check("t", 0.90, 0.90, 5000, 0.9) is not None  # level
    assert teacher_check("t", 0.97, 0.90, 100, 0.9) is None
    assert teacher_check("t", 0.92, 0.80, 5000, 0.9) is None  # the shipped teacher against mlp-small


def test_the_teacher_line_names_the_teacher_and_the_fixes():
    found = teacher_check("zoo:cnn-teacher", 0.797, 0.953, 300, 0.9, teacher_epochs=5)
    assert found.code == TEACHER_NOT_BETTER and "\n" not in found.message
    assert found.message.startswith("The teacher (zoo:cnn-teacher, trained 5 epochs on this data) is not clearly "
                                    "better than the CE student on the validation split (79.7% against 95.3%")
    for fix in ("more epochs (more than 5)", "a bigger or a pretrained teacher", "a smaller student",
                "The run went on"):
        assert fix in found.message


def test_kd_worse_with_a_good_teacher_still_gets_a_reason_and_a_fix():
    found = kd_worse_check(0.99, 0.98, -0.018, True, 4.0, 0.9, 0.97)
    assert found.code == KD_WORSE and "T = 4 and α = 0.9" in found.message and "a lower α" in found.message
    assert kd_worse_check(0.99, 0.98, -0.018, False, 4.0, 0.9, 0.97) is None  # within noise: nothing to explain
    assert kd_worse_check(0.99, 0.98, 0.01, True, 4.0, 0.9, 0.97) is None
    assert "Fashion-MNIST's validation split" in found.message and "--T auto --alpha auto" in found.message
    chosen = kd_worse_check(0.99, 0.98, -0.018, True, 1.0, 0.1, 0.97, defaults_on_own_data=False)
    assert "T = 1 and α = 0.1 did not pay off here" in chosen.message and "Fashion-MNIST" not in chosen.message


@pytest.fixture(scope="module")
def weak_teacher(tmp_path_factory, fashion):
    """A deliberately weak Fashion-MNIST teacher: cnn-tiny, one epoch on 200 images."""
    few = Dataset("fashion-mnist", fashion.train_images[:200], fashion.train_labels[:200], fashion.test_images,
                  fashion.test_labels, fashion.classes, fashion.mean, fashion.std, source="subset")
    torch.manual_seed(0)
    model, _ = fit_teacher(models.build("cnn-tiny", fashion.image_shape, 10), few, epochs=1, lr=3e-3,
                           batch_size=64, flips=False)
    path = tmp_path_factory.mktemp("weak") / "weak-teacher.safetensors"
    return checkpoints.save_model(path, model, {"arch": "cnn-tiny", "dataset": "fashion-mnist", "in_shape": [1, 28, 28],
                                                "num_classes": 10})


ARGS = dict(epochs=3, repeats=2, train_size=1000)


def test_a_weak_teacher_is_diagnosed(weak_teacher):
    result = train.run(RunConfig(teacher=str(weak_teacher), **ARGS))
    findings = diagnose(result)
    assert result.stack.teacher_val_acc < 0.6 and [f.code for f in findings] == [TEACHER_NOT_BETTER]
    assert "weak-teacher.safetensors" in findings[0].message
    assert result.summary()["diagnosis"] == [{"code": TEACHER_NOT_BETTER, "message": findings[0].message}]


def test_the_cli_json_carries_the_diagnosis(weak_teacher, capsys):
    code, summary, err = run_cli(["distill", "--teacher", str(weak_teacher), "--epochs", "3", "--repeats", "2",
                                  "--train-size", "1000", "--json"], capsys)
    assert code == 0, err
    assert [f["code"] for f in summary["diagnosis"]] == [TEACHER_NOT_BETTER]
    assert summary["diagnosis"][0]["message"].startswith("The teacher (weak-teacher.safetensors) is not clearly")
