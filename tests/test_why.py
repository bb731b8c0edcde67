"""What KD changes besides top-1 (kd_core.engine.why: agreement, calibration, per-class accuracy), and T and α
chosen on the validation split (kd_core.engine.choose)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kd_core.config import RunConfig
from kd_core.engine import choose, why
from kd_core.engine.loop import train_stack
from kd_core.engine.train import run as run_distill
from kd_core.run import as_run


def confident(p: float, predicted: int) -> list[float]:
    """Two-class logits whose softmax gives `predicted` the probability p."""
    row = [math.log(1 - p), math.log(1 - p)]
    row[predicted] = math.log(p)
    return row


def test_ece_matches_a_hand_computation_on_fixed_logits():
    # two images at confidence 0.9 (one right, one wrong) fall in bin (13/15, 14/15]: accuracy 0.5, confidence 0.9;
    # two at 0.7 (both right) in bin (10/15, 11/15]: accuracy 1, confidence 0.7.
    # ECE = 2/4 · |0.5 − 0.9| + 2/4 · |1 − 0.7| = 0.2 + 0.15 = 0.35
    logits = torch.tensor([confident(0.9, 0), confident(0.9, 0), confident(0.7, 1), confident(0.7, 0)],
                          dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0])
    assert why.expected_calibration_error(logits, labels) == pytest.approx(0.35, abs=1e-12)
    bins = why.calibration_bins(logits, labels)
    assert len(bins) == 15 and [b["count"] for b in bins] == [0] * 10 + [2, 0, 0, 2, 0]
    assert bins[13]["accuracy"] == 0.5 and bins[13]["confidence"] == pytest.approx(0.9)
    assert bins[10]["accuracy"] == 1.0 and bins[10]["confidence"] == pytest.approx(0.7)
    # a perfectly confident, always right model is perfectly calibrated; confidence 1.0 goes to the last bin
    sure = torch.tensor([[50.0, 0.0], [0.0, 50.0]])
    assert why.expected_calibration_error(sure, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-12)
    assert why.calibration_bins(sure, torch.tensor([0, 1]))[-1]["count"] == 2


def test_per_class_accuracy_agreement_and_gains_match_a_hand_count():
    labels = torch.tensor([0, 0, 1, 1, 2])
    student = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 0]), 3).float()
    teacher = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 2]), 3).float()
    assert why.class_accuracies(student, labels, 4)[:3] == [0.5, 1.0, 0.0]
    assert math.isnan(why.class_accuracies(student, labels, 4)[3])  # no test image of class 3
    # agree on images 0, 1, 2 (3/5); the teacher errs on images 1 and 3, the student copies image 1's error
    assert why.agreement(student, teacher, labels) == {"top1": 0.6, "teacher_errors": 0.4, "copied_errors": 0.5}
    rows = [{"class": c, "ce_acc": ce, "kd_acc": kd} for c, ce, kd in
            [("a", 0.5, 0.9), ("b", 0.8, 0.7), ("c", 0.6, 0.6), ("d", 0.2, 0.3), ("e", 0.9, 0.5)]]
    gained, lost = why.gains(rows, most=2)
    assert [r["class"] for r in gained] == ["a", "d"] and [r["class"] for r in lost] == ["e", "b"]


def test_a_run_s_json_has_calibration_per_class_and_agreement_from_its_test_logits(fashion):
    result = run_distill(RunConfig(epochs=1, train_size=1000, repeats=2, device="cpu"), fashion)
    summary = result.summary()
    labels = fashion.test_labels
    kd_logits = result.seed_logits("kd")  # [seeds, N, K]
    for k, row in enumerate(summary["per_class"]):  # a hand count of right answers, mean over seeds
        hand = [((seed.argmax(1) == k) & (labels == k)).sum().item() / (labels == k).sum().item() for seed in kd_logits]
        assert row["class"] == fashion.classes[k] and row["kd_acc"] == pytest.approx(sum(hand) / len(hand), abs=1e-6)
    calibration = summary["calibration"]
    assert set(calibration) == {"teacher", "ce", "kd"} and all(0 <= v <= 1 for v in calibration.values())
    assert calibration["kd"] == pytest.approx(
        sum(why.expected_calibration_error(seed, labels) for seed in kd_logits) / len(kd_logits))
    assert summary["agreement"]["kd_top1"] == pytest.approx(summary["kd_agreement"], abs=1e-6)
    assert sum(b["count"] for b in summary["reliability"]["ce"]) == 2 * len(labels)  # both seeds' images


def test_the_auto_grid_keeps_a_number_given_and_includes_a_low_alpha():
    assert choose.grid(3.0, 0.5) is None
    assert choose.grid(None, None) == ([1.0, 2.0, 4.0], [0.1, 0.5, 0.9])
    assert choose.grid(2.0, None) == ([2.0], [0.1, 0.5, 0.9]) and choose.grid(None, 0.3) == ([1.0, 2.0, 4.0], [0.3])


def test_the_choice_reads_validation_only_changed_test_labels_give_the_same_choice(fashion):
    small = dataclasses.replace(fashion, train_images=fashion.train_images[:8000],
                                train_labels=fashion.train_labels[:8000], test_images=fashion.test_images[:1000],
                                test_labels=fashion.test_labels[:1000])
    shuffled = dataclasses.replace(small, test_labels=small.test_labels[torch.randperm(1000,
                                                                                        generator=torch.Generator().manual_seed(0))])
    cfg = RunConfig(epochs=1, train_size=1500, repeats=2, device="cpu")
    grid = ([1.0, 4.0], [0.1, 0.9])
    # the app's path on the true labels: the test set evaluated (as a stack pool does), yet never read by the choice
    events = list(choose.choosing(as_run(cfg, small), *grid, train=train_stack))
    assert not math.isnan(events[-1].result.test_acc[0][0])
    choices = [choose.choice(events[-1].result, *grid)]
    # the CLI's path (no test image read) on shuffled test labels
    choices.append({k: v for k, v in choose.choose(as_run(cfg, shuffled), *grid).items() if k != "seconds"})
    assert choices[0] == choices[1]
    assert [(row["T"], row["alpha"]) for row in choices[0]["grid"]] == [(1, 0.1), (1, 0.9), (4, 0.1), (4, 0.9)]
    best = max(choices[0]["grid"], key=lambda row: row["val_kd_minus_ce"])
    assert (choices[0]["T"], choices[0]["alpha"]) == (best["T"], best["alpha"])


def test_the_why_views_show_the_summary_s_figures():
    from kd_core.views import plots
    from kd_core.views import why as views

    bins = [{"lower": b / 15, "upper": (b + 1) / 15, "count": 0, "confidence": None, "accuracy": None}
            for b in range(15)]
    bins[14] = {**bins[14], "count": 8, "confidence": 0.97, "accuracy": 0.9}
    summary = {"agreement": {"ce_top1": 0.8, "kd_top1": 0.85, "ce_copied_errors": 0.4, "kd_copied_errors": 0.5,
                             "teacher_errors": 0.1},
               "calibration": {"teacher": 0.012, "ce": 0.07, "kd": 0.03},
               "reliability": {"teacher": bins, "ce": bins, "kd": bins},
               "per_class": [{"class": "cat", "ce_acc": 0.5, "kd_acc": 0.6}, {"class": "dog", "ce_acc": 0.9,
                                                                             "kd_acc": 0.8}]}
    text = views.why_html(summary)
    assert "CE 80.0 %, KD 85.0 %" in text and "teacher 1.2 %, CE 7.0 %, KD 3.0 %" in text
    assert "gained most: cat +10.0; lost most: dog -10.0" in text
    spec = views.reliability_spec(summary)
    assert [(row["model"], row["images"]) for row in spec["data"]["values"]] == [
        (plots.TEACHER, 8), (plots.CE, 8), (plots.KD, 8)]  # empty bins drawn nowhere
    plots.spec_json(spec)  # no NaN: valid JSON for the browser
    assert views.why_html(None) == "" and views.chosen_html(None) == ""
    chosen = {"T": 2.0, "alpha": 0.1, "grid": [{"T": t, "alpha": a, "val_kd_minus_ce": 0.01 * t - a / 10}
                                              for t in (1.0, 2.0) for a in (0.1, 0.9)]}
    table = views.chosen_html(chosen)
    assert "T = 2, α = 0.1" in table and table.count("<tr>") == 3 and "<td><b>+1.00</b></td>" in table
