import math

import pytest
import torch

from kd_core import train
from kd_core.config import RunConfig
from kd_core.train import Evaluated, Finished, Started, Step, distill, run

SMALL = RunConfig(train_size=2000, epochs=2, event_interval_s=0.0)


def kinds(events):
    return [type(e).__name__ for e in events]


def test_event_order_and_counts(fashion):
    events = list(distill(SMALL.replace(batch_size=500)))
    # 2000 samples / 500 per batch = 4 steps per epoch; interval 0 -> every step is an event
    assert kinds(events) == (["Started", "Evaluated"] + ["Step"] * 4 + ["Evaluated"]
                             + ["Step"] * 4 + ["Evaluated", "Finished"])
    started = events[0]
    assert started.train_samples == 2000 and started.steps_per_epoch == 4 and started.total_steps == 8
    assert [e.epoch for e in events if isinstance(e, Evaluated)] == [0, 1, 2]
    assert [e.step for e in events if isinstance(e, Step)] == list(range(1, 9))
    elapsed = [e.elapsed_s for e in events if isinstance(e, Step)]
    assert elapsed == sorted(elapsed)


def test_step_events_are_rate_limited(fashion):
    events = list(distill(SMALL.replace(event_interval_s=3600.0, batch_size=100)))
    steps = [e for e in events if isinstance(e, Step)]
    # first step (time-to-first-event) and the last step only; losses averaged over the steps between
    assert [s.step for s in steps] == [1, 40]


def test_alpha_zero_trains_two_identical_students(fashion):
    result = run(SMALL.replace(alpha=0.0))
    for ce, kd in zip(result.ce_student.parameters(), result.kd_student.parameters(), strict=True):
        assert torch.equal(ce, kd)
    assert result.ce_acc == result.kd_acc


def test_kd_student_matches_a_plain_reference_loop(fashion):
    """The engine's KD student equals a hand-written loop with the same init, batches and loss."""
    from kd_core.data import student_indices
    from kd_core.losses import kd_loss
    from kd_core.teacher import teacher_logits

    cfg = SMALL.replace(epochs=1, temperature=3.0, alpha=0.7, batch_size=256)
    result = run(cfg)
    from kd_core import checkpoints

    logits = teacher_logits(checkpoints.default_teacher_path("fashion-mnist"), fashion)
    index = student_indices(fashion.train_labels, train_size=2000, seed=0)
    student = train.new_student("mlp-small", fashion, seed=0)
    optimizer = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    order = torch.randperm(len(index), generator=torch.Generator().manual_seed(0))
    for first in range(0, len(index), 256):
        batch = index[order[first:first + 256]]
        loss = kd_loss(student(fashion.normalize(fashion.train_images[batch])), logits.train[batch],
                       fashion.train_labels[batch], T=3.0, alpha=0.7)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for mine, engine in zip(student.parameters(), result.kd_student.parameters(), strict=True):
        assert torch.allclose(mine, engine, atol=1e-5)


def test_full_data_one_epoch_accuracy_floor(fashion):
    result = run(RunConfig(epochs=1, device="cpu"))
    assert result.teacher_acc >= 0.92
    assert result.ce_acc >= 0.80 and result.kd_acc >= 0.80
    assert result.epochs == 1 and result.seconds > 0
    assert result.samples_per_s == pytest.approx(60000 / result.seconds, rel=1e-6)
    summary = result.summary()
    assert {"teacher_acc", "ce_acc", "kd_acc", "epochs", "seconds", "samples_per_s", "device",
            "config"} <= summary.keys()
    assert summary["device"] == "cpu" and summary["config"]["epochs"] == 1


def test_hidden_class_is_learned_only_from_the_teacher(fashion):
    # measured with the shipped teacher: CE 0.000, KD 0.197 of the 1000 test dresses (T=4, α=0.9)
    result = run(RunConfig(hide_class=3, train_size=10000, epochs=10, temperature=4.0, alpha=0.9))
    summary = result.summary()
    assert summary["ce_hidden_acc"] < 0.02  # never saw a dress
    assert summary["kd_hidden_acc"] > 0.12  # learned dresses from the teacher's soft targets alone
    assert summary["teacher_hidden_acc"] > 0.8


def test_time_limit_stops_training_early(fashion):
    result = run(RunConfig(epochs=5, max_seconds=0.05, batch_size=32))
    assert result.stopped.startswith("time limit") and result.epochs == 1
    assert result.samples_per_s > 0 and 0 < result.seconds < 1.0


def test_closing_the_generator_cancels_and_cleans_up(fashion):
    stream = distill(SMALL.replace(epochs=10))
    seen = []
    for event in stream:
        seen.append(event)
        if isinstance(event, Step) and event.step == 3:
            stream.close()
    assert kinds(seen)[-1] == "Step" and not any(isinstance(e, Finished) for e in seen)
    assert stream.gi_frame is None  # finished: its finally block ran


def test_a_diverging_loss_stops_with_a_message(fashion, monkeypatch):
    def poisoned(student_logits, teacher_logits, labels, *, T, alpha):
        return student_logits.sum() * math.nan

    monkeypatch.setattr(train, "kd_loss", poisoned)
    with pytest.raises(train.TrainingDiverged, match="lower the learning rate"):
        list(distill(SMALL))


@pytest.mark.parametrize("change, message", [
    ({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha"), ({"epochs": 0}, "epochs"),
    ({"epochs": 51}, "epochs"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"hide_class": 10}, "hide_class"), ({"dataset": "imagenet"}, "dataset"),
    ({"student": "nope"}, "unknown model"), ({"train_size": -1}, "train_size"),
    ({"cpu_threads": 0}, "cpu_threads"),
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
    assert isinstance(started, Started)
    assert started.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert started.logits_source in {"memory", "disk"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.gpu
def test_gpu_run_matches_the_cpu_accuracy_floor(fashion):
    result = run(RunConfig(epochs=1, device="cuda"))
    assert result.device.startswith("cuda") and result.kd_acc >= 0.80
