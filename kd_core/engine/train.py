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

import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from kd_core.config import CPU_MAX_TFLOP, CPU_TFLOP_PER_S, RunConfig
from kd_core.data.datasets import Dataset, student_indices
from kd_core.data.sources import resolve_dataset
from kd_core.engine import bias
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
from kd_core.engine.roles import CE_ROLE, FEATURE_METHODS, NAMES, Role, method_role
from kd_core.engine.run_data import LIVE_VALIDATION
from kd_core.engine.stats import Difference, mean_std, paired_difference, verdict
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.run import Run, as_run, resolve_run
from kd_core.teacher.logits import logits_cached

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
        }


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
    return {"arch": cfg.student, "dataset": dataset.name, "role": f"{role}-student",
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


@dataclass(frozen=True)
class CpuBudget:
    """A run's CPU cost as a function of its stack's grid (seeds × students per seed), counted once per run:
    `check_cpu_budget` and the app's pooled stacks (`cached_cpu_budget`) ask it for every grid they consider."""

    student_tflop: float  # one student's training and evaluations
    students_per_seed: int  # the run's own: CE + its methods
    teacher_tflop: float  # the teacher's forward of one image (0 when it reads none)
    per_seed_images: int  # teacher forwards per seed: augmented batches; the feature methods' images
    feature_cap: int  # the feature methods' teacher pass covers at most the training set
    features: bool
    fixed_images: int  # the teacher's pass over the training and test sets when its logits are not cached
    max_tflop: float

    def needed(self, seeds: int, students_per_seed: int | None = None) -> float:
        """TFLOP of a stack of `seeds` × `students_per_seed` (the run's own when None)."""
        students = (students_per_seed or self.students_per_seed) * seeds
        teacher_images = self.fixed_images + (min(self.feature_cap, self.per_seed_images * seeds) if self.features
                                              else self.per_seed_images * seeds)
        return students * self.student_tflop + teacher_images * self.teacher_tflop

    def check(self, seeds: int, students_per_seed: int | None = None) -> None:
        needed = self.needed(seeds, students_per_seed)
        if needed > self.max_tflop:
            raise ValueError(
                f"this run needs about {needed:,.1f} TFLOP, at least {needed / CPU_TFLOP_PER_S / 60:,.0f} "
                f"minutes on a CPU, over the CPU limit of {self.max_tflop:g} TFLOP; pick a smaller student or "
                f"teacher, fewer epochs, seeds or training images, or run it on a GPU")


def cpu_budget(run: Run | RunConfig, dataset: Dataset | None = None, device: torch.device | None = None,
               max_tflop: float = CPU_MAX_TFLOP) -> CpuBudget | None:
    """The run's `CpuBudget`, or None on a GPU (not capped).

    Counts every student's training (≈ 3 × forward) over every sample and epoch (transfer images too), their
    evaluations (the live validation subset `cfg.evaluations` + 1 times, the validation split and the test set
    at the end), a teacher forward per sample when augmenting, the teacher's pass over the training and
    test sets when its logits are not cached yet, and, for the feature methods, its pass over every seed's
    images (an upper bound: features already cached count too). `run` is the resolved run (its teacher is not
    looked up again).
    """
    if isinstance(run, RunConfig):  # (scripts, tests: where the request enters)
        run = resolve_run(run, dataset)
    cfg, dataset = run.config, run.dataset
    device = device or resolve_device(cfg.device)
    if device.type != "cpu":
        return None
    labelled = len(student_indices(dataset.train_labels, train_size=cfg.train_size, hide_class=cfg.hide_class,
                                   seed=cfg.seed, exclude=dataset.validation_index))
    if cfg.unlabeled:  # both streams' batches, every step of ceil(longer stream / batch) per epoch
        steps = -(-max(labelled, cfg.unlabeled) // cfg.batch_size) * cfg.epochs
        samples = steps * (min(cfg.batch_size, labelled) + min(cfg.batch_size, cfg.unlabeled))
    else:
        samples = labelled * cfg.epochs
    student = models.build(cfg.student, dataset.image_shape, dataset.num_classes)
    forward = models.flops_per_sample(student, dataset.image_shape)
    validation = len(dataset.validation_index)
    evaluations = min(LIVE_VALIDATION, validation) * (cfg.evaluations + 1) + validation + len(dataset.test_labels)
    teacher = run.teacher
    features = not cfg.augment and any(method in FEATURE_METHODS for method in cfg.methods)
    per_seed = samples if cfg.augment else labelled + cfg.unlabeled if features else 0
    fixed = 0 if logits_cached(teacher.path, dataset, teacher.hash) else (
        len(dataset.train_labels) + len(dataset.test_labels))
    teacher_tflop = (_teacher_flops(teacher.path, teacher.hash, dataset.image_shape) / 1e12
                     if per_seed or fixed else 0.0)
    return CpuBudget(forward * (3 * samples + evaluations) / 1e12, 1 + len(cfg.methods), teacher_tflop, per_seed,
                     len(dataset.train_labels), features, fixed, max_tflop)


def check_cpu_budget(run: Run | RunConfig, dataset: Dataset | None = None, device: torch.device | None = None,
                     max_tflop: float = CPU_MAX_TFLOP, students_per_seed: int | None = None,
                     repeats: int | None = None) -> None:
    """ValueError when a CPU run would need more than `max_tflop` TFLOP (the app's cap for big models), counted by
    `cpu_budget`; GPUs are not capped. `repeats` replaces the run's config's (a pooled stack's seeds)."""
    budget = cpu_budget(run, dataset, device, max_tflop)
    if budget is not None:
        cfg = run.config if isinstance(run, Run) else run
        budget.check(cfg.repeats if repeats is None else repeats, students_per_seed)


class BudgetCache:
    """`cpu_budget` per run, kept: the stack pool asks for every grid of every plan, under its lock, and each answer
    read the labels' subset and the teacher's logits file again (17 times, 0.1-0.2 s, per rush of 30 visitors with
    distinct T). A budget does not depend on what a stack varies per role (T, α, the methods' weights) or on
    `repeats` (the grid gives the seeds): 30 visitors with distinct T share one, counted once while the others wait
    for it. One that counted the teacher's logits pass is not kept (once the logits are cached, it is not needed)."""

    IGNORED = {"temperature": 1.0, "alpha": 0.0, "dkd_beta": 0.0, "feature_weight": 0.0, "repeats": 1}

    def __init__(self, size: int = 64) -> None:
        self.size, self._kept, self._counting, self._lock = size, {}, {}, threading.Lock()

    def __call__(self, run: Run) -> CpuBudget | None:
        data = run.dataset
        key = (run.config.replace(**self.IGNORED), run.teacher.hash, len(data.train_labels), len(data.test_labels))
        with self._lock:
            if key in self._kept:
                return self._kept[key]
            counting = self._counting.setdefault(key, threading.Lock())
        with counting:  # one count per key at a time: the others then read it
            with self._lock:
                if key in self._kept:
                    return self._kept[key]
            budget = cpu_budget(run)
            with self._lock:
                self._counting.pop(key, None)
                if budget is None or not budget.fixed_images:
                    if len(self._kept) >= self.size:
                        self._kept.pop(next(iter(self._kept)))  # the oldest
                    self._kept[key] = budget
        return budget


@functools.lru_cache(maxsize=16)
def _teacher_flops(path, digest: str, shape: tuple[int, int, int]) -> int:
    """A teacher's forward FLOPs per image, counted once per checkpoint content (the app asks per planned stack)."""
    return models.flops_per_sample(checkpoints.load_model(path)[0], shape)
