import json
import math

import pytest
import torch

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.engine import roles
from kd_core.engine.events import StackEvaluated, StackStarted, StackStep
from kd_core.engine.roles import role_losses
from kd_core.engine.sweep import MAX_GRID, run_sweep, sweep, sweep_result
from kd_core.engine.train import TrainingDiverged, class_accuracy, predictions, run

SMALL = RunConfig(train_size=2000, epochs=1, repeats=1, event_interval_s=0.0)


def kinds(events):
    return [type(e).__name__ for e in events]


def assert_same_weights(batched: dict, module: torch.nn.Module, atol: float) -> None:
    state = module.state_dict()
    assert batched.keys() == state.keys()
    for name, value in state.items():
        assert torch.allclose(batched[name].to(value.dtype), value, atol=atol, rtol=0), name


# ------------------------------------------------------------------ equivalence with distill

def test_batched_sweep_equals_separate_distill_runs(fashion):
    events = list(sweep(SMALL, temperatures=[1.0, 4.0], alphas=[0.5, 0.9]))
    result = sweep_result(events[-1].result, [1.0, 4.0], [0.5, 0.9])
    grid = [(1.0, 0.5), (1.0, 0.9), (4.0, 0.5), (4.0, 0.9)]
    assert [(role.temperature, role.alpha) for role in events[0].roles[1:]] == grid
    for cell in (0, 3):  # two corners show both the grid order and the loss per cell
        T, alpha = grid[cell]
        separate = run(SMALL.replace(temperature=T, alpha=alpha))
        assert_same_weights(result.stack.students.state_dict(cell + 1), separate.kd_student, atol=2e-5)
        assert_same_weights(result.stack.students.state_dict(0), separate.ce_student, atol=2e-5)
        assert result.kd_acc[cell] == pytest.approx(separate.kd_acc, abs=1e-3)
        assert result.ce_acc == pytest.approx(separate.ce_acc, abs=1e-3)
    # an exported student reproduces its reported accuracy
    module = result.kd_student(4.0, 0.9)
    acc = (predictions(module, fashion, fashion.test_images) == fashion.test_labels).float().mean().item()
    assert acc == pytest.approx(result.kd_acc[3], abs=1e-4)


def test_a_kd_std_sweep_cell_equals_distills_kd_std_student(fashion):
    """`method="kd-std"`: every cell is KD on standardised logits, the student `distill --methods kd-std`
    trains for that (T, α); a method without α is refused."""
    result = run_sweep(SMALL, [2.0], [0.5, 0.9], method="kd-std")
    assert result.summary()["method"] == "kd-std"
    separate = run(SMALL.replace(temperature=2.0, alpha=0.9, methods=("kd-std",)))
    assert_same_weights(result.stack.students.state_dict(2), separate.stack.module(0, 1), atol=2e-5)
    plain = run(SMALL.replace(temperature=2.0, alpha=0.9))
    assert any(not torch.allclose(result.stack.students.state_dict(2)[name], value, atol=1e-3)
               for name, value in plain.kd_student.state_dict().items())  # not Hinton KD's student
    with pytest.raises(ValueError, match="method must be one of kd, kd-std .*got 'dkd'"):
        run_sweep(SMALL, [2.0], [0.5], method="dkd")


@pytest.mark.slow
def test_batchnorm_students_equal_separate_distill_runs(fashion):
    cfg = SMALL.replace(student="cnn-tiny", train_size=1000)
    result = run_sweep(cfg, [1.0, 4.0], [0.5, 0.9])  # 5 students: more than one part
    assert len(result.stack.students.parts(cfg.batch_size)) > 1
    separate = run(cfg.replace(temperature=4.0, alpha=0.9))
    assert_same_weights(result.stack.students.state_dict(4), separate.kd_student, atol=5e-5)
    assert_same_weights(result.stack.students.state_dict(0), separate.ce_student, atol=5e-5)
    assert result.kd_acc[3] == pytest.approx(separate.kd_acc, abs=1e-3)


# -------------------------------------------------------------------------- events, results

def test_event_order_summary_and_frame(fashion):
    events = list(sweep(SMALL.replace(epochs=2, batch_size=1000, evaluations=2), temperatures=[2.0],
                        alphas=[0.0, 1.0]))
    assert kinds(events) == ["StackStarted", "StackEvaluated", "StackStep", "StackStep", "StackEvaluated",
                             "StackStep", "StackStep", "StackEvaluated", "StackFinished"]
    started = events[0]
    assert isinstance(started, StackStarted) and len(started.roles) == 3  # CE and the two cells
    assert (started.total_steps, started.steps_per_epoch, started.train_samples) == (4, 2, 2000)
    steps = [e for e in events if isinstance(e, StackStep)]
    assert [e.step for e in steps] == [1, 2, 3, 4] and [e.epoch for e in steps] == [1, 1, 2, 2]
    assert all(len(e.losses[0]) == 3 for e in steps)
    # α = 0 is exactly the CE baseline: same init, same batches, same loss
    assert all(e.loss(1) == pytest.approx(e.loss(0), rel=1e-6) for e in steps)
    evaluated = [e for e in events if isinstance(e, StackEvaluated)]
    assert [e.epoch for e in evaluated] == [0, 1, 2] and [e.step for e in evaluated] == [0, 2, 4]
    result = sweep_result(events[-1].result, [2.0], [0.0, 1.0])
    assert result.kd_acc[0] == pytest.approx(result.ce_acc, abs=1e-4)
    summary = result.summary()
    assert {"ce_acc", "grid", "seconds", "best", "repeats", "ce_val_acc", "diagnosis"} <= summary.keys()
    assert summary["diagnosis"] == []  # the shipped teacher is well ahead of the CE student
    assert [(g["T"], g["alpha"]) for g in summary["grid"]] == [(2.0, 0.0), (2.0, 1.0)]
    assert summary["students"] == 3 and summary["epochs"] == 2 and summary["stopped"] == ""
    json.dumps(summary)  # the CLI prints it
    frame = result.frame()
    assert {"T", "alpha", "kd_acc", "kd_hidden_acc", "kd_val_acc", "gain", "kd_wins"} <= set(frame.columns)
    assert frame[["T", "alpha"]].values.tolist() == [[2.0, 0.0], [2.0, 1.0]]
    assert frame["kd_acc"].tolist() == result.kd_acc


def test_repeats_give_cells_their_spread_and_the_best_cell_comes_from_validation(fashion):
    result = run_sweep(SMALL.replace(repeats=3), [1.0, 4.0], [0.9])
    summary = result.summary()
    assert summary["repeats"] == 3 and summary["seeds"] == [0, 1, 2] and summary["students"] == 9
    for i, cell in enumerate(summary["grid"]):
        kd, ce = result.accuracies(1 + i), result.accuracies(0)
        assert cell["kd_acc"] == pytest.approx(sum(kd) / 3)
        assert cell["kd_minus_ce"]["mean"] == pytest.approx(sum(k - c for k, c in zip(kd, ce, strict=True)) / 3)
        assert cell["kd_wins"] == sum(k > c for k, c in zip(kd, ce, strict=True))
    val = [cell["kd_val_acc"] for cell in summary["grid"]]
    best = summary["grid"][val.index(max(val))]
    assert summary["best"] == {"T": best["T"], "alpha": best["alpha"], "chosen_on": "validation"}
    # the best cell follows the validation figures, whatever the test figures say
    flipped = [[row[0], row[2], row[1]] for row in result.stack.val_acc]
    object.__setattr__(result.stack, "val_acc", flipped)
    assert result.best() != (best["T"], best["alpha"])


def test_step_events_are_rate_limited(fashion):
    events = list(sweep(SMALL.replace(event_interval_s=3600.0, batch_size=100), [2.0], [0.5]))
    assert [e.step for e in events if isinstance(e, StackStep)] == [1, 20]


def test_hidden_class_accuracy_per_student(fashion):
    hidden = 3  # Dress
    result = run_sweep(SMALL.replace(hide_class=hidden), [4.0], [0.0, 0.9])
    assert result.ce_hidden_acc is not None and len(result.kd_hidden_acc) == 2
    for (T, alpha), reported in zip([(4.0, 0.0), (4.0, 0.9)], result.kd_hidden_acc, strict=True):
        predicted = predictions(result.kd_student(T, alpha), fashion, fashion.test_images)
        per_class = class_accuracy(predicted, fashion.test_labels, fashion.num_classes).tolist()
        assert reported == pytest.approx(per_class[hidden], abs=1e-6)
    assert result.grid[1]["kd_hidden_acc"] == result.kd_hidden_acc[1]


def test_time_limit_stops_after_one_step(fashion):
    events = list(sweep(SMALL.replace(max_seconds=1e-6, epochs=3, evaluations=1), [2.0], [0.5]))
    assert kinds(events) == ["StackStarted", "StackEvaluated", "StackStep", "StackEvaluated", "StackFinished"]
    result = sweep_result(events[-1].result, [2.0], [0.5])
    assert result.epochs == 1 and "time limit" in result.stopped


def test_divergence_is_reported(fashion, monkeypatch):
    def poisoned(logits, teacher, labels, T, alpha):
        losses = role_losses(logits, teacher, labels, T, alpha)
        return losses * torch.tensor([1.0, 1.0, math.nan])  # the last grid student diverges

    monkeypatch.setattr(roles, "role_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        run_sweep(SMALL, [1.0], [0.5, 0.9])


def test_cli_sweep_json(capsys):
    assert main(["sweep", "--T", "2,4", "--alpha", "0.5", "--train-size", "1000", "--epochs", "1",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(g["T"], g["alpha"]) for g in summary["grid"]] == [(2.0, 0.5), (4.0, 0.5)]
    assert all(0.55 < g["kd_acc"] <= 1 for g in summary["grid"]) and 0.55 < summary["ce_acc"] <= 1
    assert summary["config"]["train_size"] == 1000 and summary["repeats"] == 5


# ------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("temperatures, alphas, message", [
    ([], [0.5], "at least one temperature"),
    ([2.0], [], "at least one alpha"),
    ([0.0], [0.5], r"temperature must be a number in \(0, 100\]"),
    ([float("inf")], [0.5], "temperature"),
    ([2.0], [1.5], r"alpha must be a number in \[0, 1\]"),
    ([2.0, 2.0], [0.5], "must not repeat"),
    ([float(t) for t in range(1, 7)], [0.1, 0.2, 0.3, 0.4, 0.5], f"at most {MAX_GRID} KD students"),
])
def test_bad_grids_are_refused(temperatures, alphas, message):
    with pytest.raises(ValueError, match=message):
        next(sweep(SMALL, temperatures, alphas))


def test_grid_of_max_size_is_accepted():
    temperatures, alphas = [1.0, 2.0, 4.0, 8.0, 16.0], [0.0, 0.25, 0.5, 0.75, 0.9]
    assert len(temperatures) * len(alphas) == MAX_GRID
    started = next(sweep(SMALL, temperatures, alphas))
    assert len(started.roles) == 1 + MAX_GRID
