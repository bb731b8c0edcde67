import pytest
import torch

from kd_core.config import RunConfig
from kd_core.losses import kd_loss
from kd_core.sweep import (
    MAX_GRID,
    SweepEvaluated,
    SweepFinished,
    SweepStarted,
    SweepStep,
    grid_loss,
    run_sweep,
    student_weights,
    sweep,
)
from kd_core.train import run

SMALL = RunConfig(train_size=2000, epochs=1, event_interval_s=0.0)


def test_grid_loss_is_the_sum_of_per_student_kd_losses():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, 10, generator=generator) * 3
    teacher = torch.randn(16, 10, generator=generator) * 3
    labels = torch.randint(0, 10, (16,), generator=generator)
    T, alpha = torch.tensor([1.0, 2.0, 8.0]), torch.tensor([0.0, 0.5, 1.0])
    expected = sum(kd_loss(logits[s], teacher, labels, T=T[s].item(), alpha=alpha[s].item())
                   for s in range(3))
    assert grid_loss(logits, teacher, labels, T, alpha).item() == pytest.approx(expected.item(), rel=1e-5)


def test_batched_sweep_equals_separate_distill_runs(fashion):
    events = list(sweep(SMALL, temperatures=[1.0, 4.0], alphas=[0.5, 0.9]))
    finished = events[-1]
    assert isinstance(finished, SweepFinished)
    students = finished.students
    grid = [(1.0, 0.5), (1.0, 0.9), (4.0, 0.5), (4.0, 0.9)]
    assert events[0].grid == grid
    for cell in (0, 3):  # two cells are enough to show the grid order and the loss per cell
        T, alpha = grid[cell]
        separate = run(SMALL.replace(temperature=T, alpha=alpha))
        batched = student_weights(students, cell + 1)
        for name, value in separate.kd_student.state_dict().items():
            assert torch.allclose(batched[name], value, atol=2e-5), name
        if cell == 0:
            ce = student_weights(students, 0)
            for name, value in separate.ce_student.state_dict().items():
                assert torch.allclose(ce[name], value, atol=2e-5), name
            assert finished.result.ce_acc == pytest.approx(separate.ce_acc, abs=2e-3)
        assert finished.result.kd_acc[cell] == pytest.approx(separate.kd_acc, abs=2e-3)


def test_event_order_and_summary(fashion):
    events = list(sweep(SMALL.replace(epochs=2, batch_size=1000), temperatures=[2.0], alphas=[0.0, 1.0]))
    names = [type(e).__name__ for e in events]
    assert names == ["SweepStarted", "SweepStep", "SweepStep", "SweepEvaluated", "SweepStep", "SweepStep",
                     "SweepEvaluated", "SweepFinished"]
    assert isinstance(events[0], SweepStarted) and events[0].total_steps == 4
    assert [e.step for e in events if isinstance(e, SweepStep)] == [1, 2, 3, 4]
    assert all(len(e.kd_acc) == 2 for e in events if isinstance(e, SweepEvaluated))
    summary = events[-1].result.summary()
    assert set(summary) >= {"ce_acc", "grid", "seconds"}
    assert [(g["T"], g["alpha"]) for g in summary["grid"]] == [(2.0, 0.0), (2.0, 1.0)]
    # α = 0 is exactly the CE baseline, trained from the same init on the same batches
    assert summary["grid"][0]["kd_acc"] == pytest.approx(summary["ce_acc"], abs=1e-3)
    frame = events[-1].result.frame()
    assert list(frame.columns) == ["T", "alpha", "kd_acc"] and len(frame) == 2


@pytest.mark.parametrize("temperatures, alphas, message", [
    ([], [0.5], "at least one"), ([0.0], [0.5], "temperature"), ([2.0], [1.5], "alpha"),
    ([float(t) for t in range(1, 7)], [0.1, 0.2, 0.3, 0.4, 0.5], f"at most {MAX_GRID}"),
])
def test_bad_grids_are_refused(temperatures, alphas, message):
    with pytest.raises(ValueError, match=message):
        next(sweep(SMALL, temperatures, alphas))


def test_batchnorm_students_are_refused_clearly():
    with pytest.raises(ValueError, match="BatchNorm"):
        run_sweep(SMALL.replace(student="cnn-tiny"), [2.0], [0.5])
