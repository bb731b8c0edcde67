"""The one vocabulary of a run's stream, from the engine to the browser and the CLI.

A Train-tab run, a sweep, a study's stack, a CLI run: each is a stream of these small frozen events, in this order:

    Queued*                      while the request waits for a training slot (kd_core.serve.stack_pool)
    { TeacherProgress* TeacherEpoch }* LogitsProgress*   while its teacher is prepared (trained, then its logits
                                                          computed)
    StackStarted -> StackEvaluated(step 0) -> { StackStep* | StackEvaluated }* -> StackFinished(StackResult)

Tables are [seed][role]: seed-major, the roles in the run's order (CE first). Views (kd_core.views) and the CLI
read these events as they are; nothing re-encodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from kd_core.config import RunConfig
from kd_core.engine.roles import Role
from kd_core.run import Teacher
from kd_core.teacher.logits import LogitsProgress
from kd_core.teacher.training import TeacherEpoch, TeacherProgress

__all__ = ["LogitsProgress", "Queued", "StackEvaluated", "StackEvent", "StackFinished", "StackResult", "StackStarted",
           "StackStep", "TeacherEpoch", "TeacherProgress"]  # the teacher's events are defined where they happen


@dataclass(frozen=True)
class StackStarted:
    config: RunConfig
    device: str
    roles: tuple[Role, ...]
    seeds: tuple[int, ...]
    teacher_acc: float  # test accuracy
    teacher_val_acc: float  # on the validation split
    train_samples: int  # labelled images per seed
    transfer_samples: int  # unlabelled (teacher-labelled) images per seed
    steps_per_epoch: int
    total_steps: int
    logits_seconds: float
    logits_source: str  # "memory", "disk" or "computed"
    notes: tuple[str, ...] = ()


def seed_mean(table: Sequence[Sequence[float]], role: int) -> float:
    """The mean over seeds of one role's column of a [seed][role] table."""
    return sum(row[role] for row in table) / len(table)


@dataclass(frozen=True)
class StackStep:
    epoch: int  # 1-based epoch this step belongs to
    step: int  # steps done so far, over all epochs
    total_steps: int
    losses: tuple[tuple[float, ...], ...]  # [seed][role], mean over the steps since the previous StackStep
    elapsed_s: float  # training wall time so far (evaluation excluded)

    def loss(self, role: int) -> float:
        """Role `role`'s loss, mean over the seeds."""
        return seed_mean(self.losses, role)


@dataclass(frozen=True)
class StackEvaluated:
    epoch: int  # the epoch in progress (or just completed); 0 before training
    step: int
    progress: float  # epochs done, fractional
    accuracy: tuple[tuple[float, ...], ...]  # [seed][role] on the live validation subset
    hidden_accuracy: tuple[tuple[float, ...], ...] | None  # on its images of the hidden class
    elapsed_s: float

    def mean(self, role: int) -> float:
        """Role `role`'s accuracy, mean over the seeds."""
        return seed_mean(self.accuracy, role)

    def hidden_mean(self, role: int) -> float | None:
        return None if self.hidden_accuracy is None else seed_mean(self.hidden_accuracy, role)

    def per_seed(self, role: int) -> tuple[float, ...]:
        return tuple(row[role] for row in self.accuracy)


@dataclass(frozen=True, eq=False)
class StackResult:
    config: RunConfig
    device: str
    roles: tuple[Role, ...]
    seeds: tuple[int, ...]
    teacher_acc: float
    teacher_val_acc: float
    teacher_class_acc: list[float]
    test_acc: list[list[float]]  # [seed][role], the 10,000 test images (reported, never chosen on)
    val_acc: list[list[float]]  # [seed][role], the whole validation split
    class_acc: list[list[list[float]]]  # [seed][role][class], test set
    agreement: list[list[float]]  # [seed][role]: share of test images whose top-1 equals the teacher's
    test_logits: torch.Tensor = field(repr=False)  # [S, N, K] float32, students seed-major, CPU
    val_logits: torch.Tensor = field(repr=False)  # [S, 5000, K] on the validation split
    teacher_val_logits: torch.Tensor = field(repr=False)  # [5000, K] the teacher's, same images
    epochs: int  # epochs completed (fewer than asked when a time limit stopped the run)
    seconds: float  # training wall time, evaluation and event handling excluded
    samples_per_s: float  # training samples per second, each (seed, sample) counted once
    logits_seconds: float
    stopped: str  # "" when all epochs ran, else why training stopped early
    students: object = field(repr=False)  # the stack, on CPU
    teacher: Teacher | None = field(default=None, repr=False)  # the run's (kd_core.run): path, hash, metadata
    teacher_test_logits: torch.Tensor | None = field(default=None, repr=False)  # [N, K] the teacher's, test set

    def module(self, seed_index: int, role_index: int) -> torch.nn.Module:
        """One trained student as an ordinary module (CPU, eval mode)."""
        return self.students.module(seed_index * len(self.roles) + role_index)


@dataclass(frozen=True)
class StackFinished:
    result: StackResult


StackEvent = StackStarted | StackStep | StackEvaluated | StackFinished


@dataclass(frozen=True)
class Queued:
    """What a request still waiting for a training slot is told (about once a second; kd_core.serve.stack_pool)."""

    runs_ahead: int  # stacks asked for earlier, also waiting
    running: int  # stacks training now
    estimate_s: float | None  # until this run starts; None until a run has finished
    recent_runs: int  # how many recent run times the estimate comes from
    mean_run_s: float | None
