import math

import pytest
import torch

from kd_core.config import RunConfig
from kd_core.engine import roles, train
from kd_core.engine.loop import StackEvaluated, StackFinished, StackStarted, StackStep
from kd_core.engine.train import distill, run

SMALL = RunConfig(train_size=2000, epochs=2, repeats=1, event_interval_s=0.0)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_event_order_and_counts(fashion):
    events = list(distill(SMALL.replace(batch_size=500, evaluations=4)))
    # 2000 samples / 500 per batch = 4 steps per epoch, 8 in all; interval 0 -> every step is an event;
    # 4 live evaluations, evenly spaced: after steps 2, 4, 6, 8
    assert kinds(events) == (["StackStarted", "StackEvaluated"] + ["StackStep", "StackStep", "StackEvaluated"] * 4
                             + ["StackFinished"])
    started = events[0]
    assert started.train_samples == 2000 and started.steps_per_epoch == 4 and started.total_steps == 8
    evaluated = [e for e in events if isinstance(e, StackEvaluated)]
    assert [e.step for e in evaluated] == [0, 2, 4, 6, 8] and [e.epoch for e in evaluated] == [0, 1, 1, 2, 2]
    assert [e.progress for e in evaluated] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert [e.step for e in events if isinstance(e, StackStep)] == list(range(1, 9))
    elapsed = [e.elapsed_s for e in events if isinstance(e, StackStep)]
    assert elapsed == sorted(elapsed)


def test_step_events_are_rate_limited(fashion):
    events = list(distill(SMALL.replace(event_interval_s=3600.0, batch_size=100)))
    steps = [e for e in events if isinstance(e, StackStep)]
    # first step (time-to-first-event) and the last step only; losses averaged over the steps between
    assert [s.step for s in steps] == [1, 40]


def test_alpha_zero_trains_two_identical_students(fashion):
    result = run(SMALL.replace(alpha=0.0))
    for ce, kd in zip(result.ce_student.parameters(), result.kd_student.parameters(), strict=True):
        # identical but for the fused Adam's rounding, which can differ by position in the stacked tensor
        assert torch.allclose(ce, kd, atol=1e-7, rtol=0)
    assert result.ce_acc == result.kd_acc


def test_full_data_one_epoch_accuracy_floor(fashion):
    result = run(RunConfig(epochs=1, device="cpu", repeats=1, train_size=0))
    assert result.teacher_acc >= 0.91
    assert result.ce_acc >= 0.82 and result.kd_acc >= 0.82
    assert result.epochs == 1 and result.seconds > 0
    summary = result.summary()
    assert {"teacher_acc", "ce_acc", "kd_acc", "epochs", "seconds", "samples_per_s", "device",
            "config", "ce_val_acc", "kd_val_acc", "repeats", "per_seed", "kd_minus_ce", "kd_wins",
            "diagnosis"} <= summary.keys()
    assert summary["diagnosis"] == []  # the shipped teacher (92 %) is clearly ahead of the CE student
    assert summary["device"] == "cpu" and summary["config"]["epochs"] == 1 and summary["repeats"] == 1
    assert abs(summary["ce_val_acc"] - summary["ce_acc"]) < 0.02  # validation and test agree


def test_repeats_report_means_per_seed_figures_and_the_paired_difference(fashion):
    result = run(SMALL.replace(repeats=3, seed=4, epochs=1, temperature=4.0, alpha=0.9))
    summary = result.summary()
    per_seed = summary["per_seed"]
    assert [row["seed"] for row in per_seed] == [4, 5, 6]
    ce, kd = [row["ce_acc"] for row in per_seed], [row["kd_acc"] for row in per_seed]
    assert summary["ce_acc"] == pytest.approx(sum(ce) / 3) and summary["kd_acc"] == pytest.approx(sum(kd) / 3)
    assert summary["kd_minus_ce"]["mean"] == pytest.approx(sum(k - c for k, c in zip(kd, ce, strict=True)) / 3)
    assert summary["kd_wins"] == sum(k > c for k, c in zip(kd, ce, strict=True)) and summary["verdict"]
    assert len(set(ce)) > 1  # three different seeds, three different students
    for i, seed_row in enumerate(per_seed):  # every seed's figure is its own student's
        predicted = train.predictions(result.stack.module(i, 1), fashion, fashion.test_images)
        assert (predicted == fashion.test_labels).float().mean().item() == pytest.approx(seed_row["kd_acc"])


def test_hidden_class_is_learned_only_from_the_teacher(fashion):
    # measured with the shipped teacher: CE 0.000, KD 0.197 of the 1000 test dresses (T=4, α=0.9)
    result = run(RunConfig(hide_class=3, train_size=10000, epochs=10, temperature=4.0, alpha=0.9, repeats=1))
    summary = result.summary()
    assert summary["ce_hidden_acc"] < 0.02  # never saw a dress
    assert summary["kd_hidden_acc"] > 0.12  # learned dresses from the teacher's soft targets alone
    assert summary["teacher_hidden_acc"] > 0.8


def test_time_limit_stops_training_early(fashion):
    result = run(RunConfig(epochs=5, max_seconds=0.05, batch_size=32, repeats=1, train_size=0))
    assert result.stopped.startswith("time limit") and result.epochs == 1
    assert result.samples_per_s > 0 and 0 < result.seconds < 1.0


def test_closing_the_generator_cancels_and_cleans_up(fashion):
    stream = distill(SMALL.replace(epochs=10))
    seen = []
    for event in stream:
        seen.append(event)
        if isinstance(event, StackStep) and event.step == 3:
            stream.close()
    assert kinds(seen)[-1] == "StackStep" and not any(isinstance(e, StackFinished) for e in seen)
    assert stream.gi_frame is None  # finished: its finally block ran


def test_a_diverging_loss_stops_with_a_message(fashion, monkeypatch):
    def poisoned(logits, teacher, labels, T, alpha):
        return logits.sum((2, 3)) * math.nan

    monkeypatch.setattr(roles, "role_losses", poisoned)
    with pytest.raises(train.TrainingDiverged, match="lower the learning rate"):
        list(distill(SMALL))


@pytest.mark.parametrize("change, message", [
    ({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha"), ({"epochs": 0}, "epochs"),
    ({"epochs": 51}, "epochs"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"hide_class": 10}, "hide_class"), ({"dataset": "imagenet"}, "dataset"),
    ({"student": "nope"}, "unknown model"), ({"train_size": -1}, "train_size"),
    ({"cpu_threads": 0}, "cpu_threads"), ({"repeats": 0}, "repeats"), ({"repeats": 9}, "repeats"),
    ({"repeats": "5"}, "repeats"),
])
def test_bad_settings_raise_before_any_work(change, message, fashion):
    with pytest.raises(ValueError, match=message):
        next(distill(RunConfig().replace(**change)))


def test_cuda_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        next(distill(RunConfig(device="cuda")))


def test_started_reports_the_device_and_cached_logits(fashion):
    started = next(distill(SMALL.replace(device="auto")))
    assert isinstance(started, StackStarted)
    assert started.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert started.logits_source in {"memory", "disk"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_gpu_run_matches_the_cpu_accuracy_floor(fashion):
    result = run(RunConfig(epochs=1, device="cuda", repeats=1))
    assert result.device.startswith("cuda") and result.kd_acc >= 0.80


def test_the_kd_fields_say_which_method_they_describe(fashion):
    """`kd_*` are Hinton KD's students when the run has them, else the first method's: `kd_method` names which."""
    quick = RunConfig(train_size=500, epochs=1, repeats=1)
    assert run(quick.replace(methods=("dist", "kd"))).summary()["kd_method"] == "kd"
    summary = run(quick.replace(methods=("dist", "hint"))).summary()
    assert summary["kd_method"] == "dist" and summary["kd_acc"] == summary["methods"][0]["acc"]
