"""A run's CPU budget: the training FLOPs of a resolved run, counted once (`cpu_budget` -> `CpuBudget`), checked
against the CPU cap (`check_cpu_budget`; GPUs are not capped) and kept per run for the stack pool's plans
(`BudgetCache`). `kd_core.engine.estimate` is the CLI's coarser check before anything is read."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch

from kd_core.config import CPU_MAX_TFLOP, CPU_TFLOP_PER_S, FEATURE_METHODS, RunConfig
from kd_core.data.datasets import Dataset, student_indices
from kd_core.engine.run_data import LIVE_VALIDATION
from kd_core.models import checkpoints
from kd_core.models import students as student_sources
from kd_core.models import zoo as models
from kd_core.run import Run, resolve_device, resolve_run
from kd_core.teacher.logits import logits_cached


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
    forward = student_flops_per_sample(cfg, dataset)
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


def student_flops_per_sample(cfg: RunConfig, dataset: Dataset) -> int:
    """One student's forward FLOPs per image, at the size it sees (a pretrained student's own input size)."""
    if student_sources.pretrained(cfg):
        student = student_sources.initial(cfg.replace(pretrained=False), dataset.image_shape, dataset.mean,
                                          dataset.std, dataset.num_classes, (cfg.seed,))[0][0]
    else:
        student = models.build(cfg.student, dataset.image_shape, dataset.num_classes)
    return models.flops_per_sample(student, dataset.image_shape)


@functools.lru_cache(maxsize=16)
def _teacher_flops(path, digest: str, shape: tuple[int, int, int]) -> int:
    """A teacher's forward FLOPs per image, counted once per checkpoint content (the app asks per planned stack)."""
    return models.flops_per_sample(checkpoints.load_model(path)[0], shape)
