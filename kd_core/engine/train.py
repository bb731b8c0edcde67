"""`distill(cfg)`: CE students and KD students trained side by side, one pair per seed, as a stream of events.

A view over the one engine (`kd_core.engine.loop.train_stack`) with two roles, CE and Hinton KD at (T, α) (and one
role per further method of `cfg.methods`), times `cfg.repeats` seeds. Seed i's CE and KD students start from
the same initial weights and see the same batches of the same subset, in one loop, so any difference between
them is the loss; the seeds show how much of it is luck. The events are the engine's own, [seed][role]:

    StackStarted -> StackEvaluated(step 0) -> { StackStep* (≤ 1 per `event_interval_s`) | StackEvaluated }*
    -> StackFinished(StackResult)

`StackEvaluated` carries accuracies on a fixed 500-image subset of the validation split (`cfg.evaluations`
times per run, the live curves); `RunResult` (`run_result(finished.result)`, or `run(cfg)`) reads the pair
out of the result: test accuracies (reported) and the whole validation split's (which choose), means over
seeds with the per-seed values beside them. Nothing here prints; closing `distill` (a consumer that stops
iterating, a Gradio cancel) stops training at the next event.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset
from kd_core.data.sources import resolve_dataset
from kd_core.engine import bias, why
from kd_core.engine.diagnosis import diagnose
from kd_core.engine.loop import (
    StackEvent,
    StackFinished,
    StackResult,
    TrainingDiverged,
    class_accuracy,
    new_student,
    resolve_device,
    train_stack,
)
from kd_core.engine.roles import CE_ROLE, NAMES, Role, method_role
from kd_core.engine.stats import Difference, mean_std, paired_difference, verdict
from kd_core.models import checkpoints
from kd_core.models import students as student_sources
from kd_core.run import Run, as_run

__all__ = ["TrainingDiverged", "class_accuracy", "new_student", "resolve_device"]  # re-exported for callers


# ----------------------------------------------------------------------------------------- the result

@dataclass(frozen=True, eq=False)
class RunResult:
    config: RunConfig
    device: str
    teacher_acc: float
    ce_acc: float  # test accuracy, mean over seeds
    kd_acc: float
    ce_class_acc: list[float]  # per-class test accuracy, mean over seeds
    kd_class_acc: list[float]
    teacher_class_acc: list[float]
    ce_agreement: float  # fraction of test images where the student's top-1 equals the teacher's (mean)
    kd_agreement: float
    epochs: int  # epochs completed (fewer than asked when a time limit stopped the run)
    seconds: float  # training wall time, evaluation and event handling excluded
    samples_per_s: float  # training samples per second, each (seed, sample) counted once for both students
    logits_seconds: float
    stopped: str  # "" when all epochs ran, else why training stopped early
    ce_student: nn.Module = field(repr=False)  # the first seed's, on CPU, eval mode
    kd_student: nn.Module = field(repr=False)
    stack: StackResult = field(repr=False)  # every seed's students and figures

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.stack.seeds

    def accuracies(self, role: str, split: str = "test") -> list[float]:
        """Per-seed accuracy of the "ce" or "kd" students on "test" or "val"."""
        table = self.stack.test_acc if split == "test" else self.stack.val_acc
        return [row[self.column(role)] for row in table]

    def hidden_accuracies(self, role: str) -> list[float] | None:
        hidden = self.config.hide_class
        if hidden is None:
            return None
        return [row[self.column(role)][hidden] for row in self.stack.class_acc]

    @property
    def kd_method(self) -> str:
        """The method whose students the `kd_*` fields describe: Hinton KD when the run has it, else its first."""
        return self.config.methods[kd_index(self.config) - 1]

    def column(self, role: str) -> int:
        """The stack's role index of "ce", "kd" (the pair's KD student) or a method name."""
        if role == "ce":
            return 0
        if role == "kd":
            return kd_index(self.config)
        return 1 + self.config.methods.index(role)

    def methods(self) -> list[dict]:
        """Every distilling method's test accuracy over the seeds and its paired difference with CE."""
        rows = []
        for method in self.config.methods:
            acc, val = self.accuracies(method), self.accuracies(method, "val")
            difference = paired_difference(acc, self.accuracies("ce"))
            name = NAMES[method].removesuffix(" student")  # "KD", "DIST", "Hint", …
            rows.append({"method": method, "acc": mean_std(acc)[0], "acc_std": mean_std(acc)[1],
                         "val_acc": mean_std(val)[0], "per_seed": acc, "minus_ce": difference.summary(),
                         "wins": difference.wins, "verdict": verdict(difference, name)})
        return rows

    @property
    def difference(self) -> Difference:
        """KD − CE test accuracy, paired by seed."""
        return paired_difference(self.accuracies("kd"), self.accuracies("ce"))

    @property
    def verdict(self) -> str:
        return verdict(self.difference)

    def per_seed(self) -> list[dict]:
        rows = []
        ce_hidden, kd_hidden = self.hidden_accuracies("ce"), self.hidden_accuracies("kd")
        for i, seed in enumerate(self.seeds):
            row = {"seed": seed, "ce_acc": self.accuracies("ce")[i], "kd_acc": self.accuracies("kd")[i],
                   "ce_val_acc": self.accuracies("ce", "val")[i], "kd_val_acc": self.accuracies("kd", "val")[i]}
            if ce_hidden is not None:
                row.update(ce_hidden_acc=ce_hidden[i], kd_hidden_acc=kd_hidden[i])
            rows.append(row)
        return rows

    def bias_report(self) -> dict | None:
        """With a hidden class: test accuracy (hidden class and overall, means over seeds) against the bias
        added to its logit, for both students, and the automatic bias of each KD student (`kd_core.engine.bias`)."""
        hidden = self.config.hide_class
        if hidden is None:
            return None
        labels = resolve_dataset(self.config).test_labels
        roles, kd = len(self.stack.roles), self.column("kd")
        logits = self.stack.test_logits.view(len(self.seeds), roles, *self.stack.test_logits.shape[1:])
        ce, kd_curve = (bias.bias_curve(logits[:, role], labels, hidden) for role in (0, kd))
        curve = [{"bias": c["bias"], "kd_hidden_acc": k["hidden_acc"], "kd_acc": k["acc"],
                  "ce_hidden_acc": c["hidden_acc"], "ce_acc": c["acc"]} for c, k in zip(ce, kd_curve, strict=True)]
        val = self.stack.val_logits.view(len(self.seeds), roles, *self.stack.val_logits.shape[1:])
        autos = [bias.auto_bias(val[g, kd], self.stack.teacher_val_logits, hidden) for g in range(len(self.seeds))]
        at_auto = [bias.bias_curve(logits[g, kd], labels, hidden, [b])[0] for g, b in enumerate(autos)]
        return {"bias_curve": curve, "auto_bias": mean_std(autos)[0], "auto_bias_per_seed": autos,
                "kd_hidden_acc_at_auto_bias": mean_std([r["hidden_acc"] for r in at_auto])[0],
                "kd_acc_at_auto_bias": mean_std([r["acc"] for r in at_auto])[0]}

    def summary(self) -> dict:
        """The CLI's JSON fields (docs/contracts.md): means over seeds, then the per-seed figures and the
        paired difference KD − CE with its 95 % interval."""
        hidden = self.config.hide_class
        difference = self.difference
        ce_hidden, kd_hidden = self.hidden_accuracies("ce"), self.hidden_accuracies("kd")
        return {
            "teacher_acc": self.teacher_acc, "ce_acc": self.ce_acc, "kd_acc": self.kd_acc,
            "epochs": self.epochs, "seconds": self.seconds, "samples_per_s": self.samples_per_s,
            "device": self.device, "config": self.config.__dict__.copy(),
            "logits_seconds": self.logits_seconds, "stopped": self.stopped,
            "ce_agreement": self.ce_agreement, "kd_agreement": self.kd_agreement,
            "ce_hidden_acc": None if hidden is None else mean_std(ce_hidden)[0],
            "kd_hidden_acc": None if hidden is None else mean_std(kd_hidden)[0],
            "teacher_hidden_acc": None if hidden is None else self.teacher_class_acc[hidden],
            "teacher_val_acc": self.stack.teacher_val_acc,
            "ce_val_acc": mean_std(self.accuracies("ce", "val"))[0],
            "kd_val_acc": mean_std(self.accuracies("kd", "val"))[0],
            "ce_acc_std": mean_std(self.accuracies("ce"))[1], "kd_acc_std": mean_std(self.accuracies("kd"))[1],
            "repeats": len(self.seeds), "per_seed": self.per_seed(),
            "kd_minus_ce": difference.summary(), "kd_wins": difference.wins, "verdict": self.verdict,
            "kd_method": self.kd_method,
            "unlabeled": self.config.unlabeled, "methods": self.methods(),
            **(self.bias_report() or {}),
            **self.why(),
            "diagnosis": [finding.to_json() for finding in diagnose(self)],  # why, on validation figures
        }

    def seed_logits(self, role: str) -> torch.Tensor:
        """The test logits [seeds, N, K] of the "ce" or "kd" students."""
        logits = self.stack.test_logits
        return logits.view(len(self.seeds), len(self.stack.roles), *logits.shape[1:])[:, self.column(role)]

    def why(self) -> dict:
        """What KD changed besides top-1 (kd_core.engine.why), on the test set, means over seeds: `agreement` with the
        teacher, `calibration` (ECE, 15 bins) and `reliability` (the bins) of the teacher, CE and KD, and `per_class`
        test accuracy of CE and KD, every class. Empty when the students were not evaluated on the test set."""
        teacher = self.stack.teacher_test_logits
        if teacher is None or self.stack.test_logits.shape[1] == 0:
            return {}
        dataset = resolve_dataset(self.config)  # already in memory: the run loaded it
        labels = dataset.test_labels[:teacher.shape[0]]
        students = {role: self.seed_logits(role) for role in ("ce", "kd")}
        agreement = {role: [why.agreement(seed, teacher, labels) for seed in logits]
                     for role, logits in students.items()}
        calibration = {"teacher": why.expected_calibration_error(teacher, labels),
                       **{role: mean_std([why.expected_calibration_error(seed, labels) for seed in logits])[0]
                          for role, logits in students.items()}}
        reliability = {"teacher": why.calibration_bins(teacher, labels),
                       **{role: why.calibration_bins(logits.flatten(0, 1), labels.repeat(len(logits)))
                          for role, logits in students.items()}}  # every seed's images pooled
        per_class = [{"class": name, "ce_acc": ce, "kd_acc": kd}
                     for name, ce, kd in zip(dataset.classes, self.ce_class_acc, self.kd_class_acc, strict=True)]
        return {"agreement": {f"{role}_{key}": mean_std([seed[key] for seed in rows])[0]
                              for role, rows in agreement.items() for key in ("top1", "copied_errors")}
                | {"teacher_errors": why.agreement(teacher, teacher, labels)["teacher_errors"]},
                "calibration": calibration, "reliability": reliability, "per_class": per_class}


# ------------------------------------------------------------------------------------------- the view

def roles(cfg: RunConfig) -> list[Role]:
    """CE, then one student per method of cfg.methods (by default only Hinton KD at cfg's (T, α))."""
    return [CE_ROLE, *(method_role(m, cfg.temperature, cfg.alpha, cfg.dkd_beta, cfg.feature_weight)
                       for m in cfg.methods)]


def kd_index(cfg: RunConfig) -> int:
    """The role behind the pair's "kd" fields: Hinton KD when it runs, else the first method."""
    return 1 + (cfg.methods.index("kd") if "kd" in cfg.methods else 0)


def distill(run: Run | RunConfig, dataset: Dataset | None = None) -> Iterator[StackEvent]:
    """Train the run's CE and KD students for each of its seeds: the engine's events for `roles(config)`. A
    RunConfig (scripts, tests) is resolved here, where its request enters (`as_run`, the teacher prepared too)."""
    run = as_run(run, dataset, resolve_device(run.device if isinstance(run, RunConfig) else run.config.device))
    return train_stack(run, roles(run.config))


def run_result(stack: StackResult) -> RunResult:
    """The pair's view of a finished stack: role 0 (CE) and role `kd_index` (KD), means over seeds."""
    kd = kd_index(stack.config)

    def mean_over_seeds(role: int, table: list) -> list[float] | float:
        values = torch.tensor([row[role] for row in table])
        return values.mean(0).tolist()

    return RunResult(
        config=stack.config, device=stack.device, teacher_acc=stack.teacher_acc,
        ce_acc=mean_over_seeds(0, stack.test_acc), kd_acc=mean_over_seeds(kd, stack.test_acc),
        ce_class_acc=mean_over_seeds(0, stack.class_acc), kd_class_acc=mean_over_seeds(kd, stack.class_acc),
        teacher_class_acc=stack.teacher_class_acc,
        ce_agreement=mean_over_seeds(0, stack.agreement), kd_agreement=mean_over_seeds(kd, stack.agreement),
        epochs=stack.epochs, seconds=stack.seconds, samples_per_s=stack.samples_per_s,
        logits_seconds=stack.logits_seconds, stopped=stack.stopped,
        ce_student=stack.module(0, 0), kd_student=stack.module(0, kd), stack=stack)


def run(cfg: RunConfig, dataset: Dataset | None = None) -> RunResult:
    """Run `distill(cfg)` to the end and return its result (for scripts and tests)."""
    for event in distill(cfg, dataset):
        if isinstance(event, StackFinished):
            return run_result(event.result)
    raise RuntimeError("distill ended without a StackFinished event")


def predictions(model: nn.Module, dataset: Dataset, images: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Top-1 class per uint8 image (int64 [N], on the images' device), eval mode, large batches."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(dataset.normalize(images[i:i + batch_size])).argmax(1)
                         for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


# ------------------------------------------------------------------------------------------ saving

def student_metadata(result: RunResult, role: str, recipe: str = "") -> dict:
    """What a student checkpoint records besides its weights: enough to rebuild and use it, and the run's
    per-seed accuracies (the checkpoint holds the first seed's student)."""
    cfg = result.config
    dataset = resolve_dataset(cfg)  # already in memory: the run loaded it
    accuracies = result.accuracies(role)
    return {"arch": student_sources.arch(cfg), "dataset": dataset.name, "role": f"{role}-student",
            "in_shape": list(dataset.image_shape), "num_classes": dataset.num_classes,
            "classes": list(dataset.classes), "mean": list(dataset.mean), "std": list(dataset.std),
            "test_acc": round(accuracies[0], 4), "seed": cfg.seed,
            "val_acc": round(result.accuracies(role, "val")[0], 4),
            "val_acc_per_seed": [round(a, 4) for a in result.accuracies(role, "val")],
            "seeds": list(result.seeds), "test_acc_per_seed": [round(a, 4) for a in accuracies],
            "teacher_acc": round(result.teacher_acc, 4),
            "kd_minus_ce": result.difference.summary(), "verdict": result.verdict,
            "recipe": recipe, "config": cfg.__dict__}


def save_student(result: RunResult, role: str, path, recipe: str = ""):
    """Write the run's `role` ("ce" or "kd") student of the first seed as a checkpoint; returns its path."""
    model = result.kd_student if role == "kd" else result.ce_student
    return checkpoints.save_model(path, model, student_metadata(result, role, recipe))
