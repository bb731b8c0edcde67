"""Why KD won or lost: what it changes besides top-1, read from the test logits the engine already holds.

Three measures, each a pure function of logits and labels (no extra pass over the data):

    agreement    the share of test images where a student's top-1 equals the teacher's; and, among the images the
                 teacher gets wrong, the share where the student makes the teacher's very mistake (copied errors)
    calibration  expected calibration error (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the
                 confidences (top softmax probability) fall into ECE_BINS equal-width bins (i/15, (i+1)/15];
                 ECE = Σ_b (n_b / N) · |accuracy_b − mean confidence_b|; the reliability diagram is the same bins
    per class    each class's test accuracy for CE and KD, and the classes where KD gained or lost most

Published studies disagree on whether KD students are better calibrated than CE ones, so the run measures it.
"""

from __future__ import annotations

import math

import torch

ECE_BINS = 15


def calibration_bins(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (lower, upper], the top-1 softmax confidence: {"lower", "upper", "count",
    "confidence" (mean), "accuracy"} (confidence and accuracy None for an empty bin). logits [N, K], labels [N]."""
    probabilities = torch.softmax(logits.double(), dim=1)
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    # (lower, upper]: a confidence of exactly i/15 belongs to bin i − 1 (1.0 to the last, 1/K ≥ 0 never to none)
    index = (torch.ceil(confidence * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins)
    confidence_sum = torch.bincount(index, confidence, minlength=bins)
    correct_sum = torch.bincount(index, correct, minlength=bins)
    rows = []
    for b in range(bins):
        n = int(count[b])
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": n,
                     "confidence": float(confidence_sum[b] / n) if n else None,
                     "accuracy": float(correct_sum[b] / n) if n else None})
    return rows


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """ECE as a fraction in [0, 1] (NaN with no images): Σ_b (n_b / N) · |accuracy_b − confidence_b|."""
    rows = calibration_bins(logits, labels, bins)
    total = sum(row["count"] for row in rows)
    if total == 0:
        return math.nan
    return sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in rows if row["count"])


def agreement(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> dict:
    """Student and teacher top-1 [N] (or logits [N, K]): {"top1": share of images where they agree,
    "teacher_errors": share of images the teacher gets wrong, "copied_errors": share of those where the student
    gives the teacher's wrong class} (NaN where there is nothing to count)."""
    student = student.argmax(1) if student.dim() == 2 else student
    teacher = teacher.argmax(1) if teacher.dim() == 2 else teacher
    wrong = teacher != labels

    def share(mask: torch.Tensor) -> float:
        return float(mask.double().mean()) if mask.numel() else math.nan

    return {"top1": share(student == teacher), "teacher_errors": share(wrong),
            "copied_errors": share(student[wrong] == teacher[wrong])}


def class_accuracies(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    """Top-1 accuracy per class (NaN for a class without test images). logits [N, K], labels [N]."""
    predicted = logits.argmax(1)
    correct = torch.bincount(labels[predicted == labels], minlength=num_classes).double()
    total = torch.bincount(labels, minlength=num_classes).double()
    return [float(c / t) if t else math.nan for c, t in zip(correct, total, strict=True)]


def gains(per_class: list[dict], most: int = 3) -> tuple[list[dict], list[dict]]:
    """The `most` classes where KD gained most over CE (kd_acc − ce_acc > 0, largest first) and those where it
    lost most (< 0, largest loss first), from `per_class` rows {"class", "ce_acc", "kd_acc"}."""
    rows = [r for r in per_class if not (math.isnan(r["ce_acc"]) or math.isnan(r["kd_acc"]))]
    ranked = sorted(rows, key=lambda r: r["kd_acc"] - r["ce_acc"])
    gained = [r for r in reversed(ranked) if r["kd_acc"] > r["ce_acc"]][:most]
    lost = [r for r in ranked if r["kd_acc"] < r["ce_acc"]][:most]
    return gained, lost
