"""A run, resolved once where a request enters: the validated config, the dataset and the teacher.

`resolve_run(cfg)` is called by the CLI, each app handler and each study worker, and by nothing after them. It
validates the config (once, against the data's classes), loads the dataset (built-in, or the user's folder or zip),
and, for a kd_core checkpoint, reads the teacher file once: its path, its hash (which keys the logits cache and
shared runs) and its metadata. A teacher that must be prepared first (an outside model, or one to train on the
data) is prepared by `prepare(run)`, heavy work that its caller runs in a training slot; it reports each epoch and
the logits' progress as events and returns the run with its teacher. The run key, the stack pool's plan, the CPU
and ZeroGPU budgets, the engine, the results table and the model card read the `Run`; none resolves again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kd_core.config import RunConfig
from kd_core.data.datasets import CLASSES, Dataset, load_dataset
from kd_core.models import checkpoints, students
from kd_core.teacher import sources as teachers
from kd_core.teacher.logits import LogitsProgress
from kd_core.teacher.training import RECIPE, Stopped, TeacherEpoch, TeacherProgress, TeacherRecipe


@dataclass(frozen=True)
class Teacher:
    path: Path  # the kd_core checkpoint the engine reads
    hash: str  # the file's SHA-256 prefix: keys the logits cache and shared runs
    meta: dict = field(repr=False)  # its metadata (arch, params, dataset, test_acc, …), read once
    source: str = "default"  # what the user asked for: "default", a path, timm:NAME, hf-hub:…, …
    val_acc: float | None = None  # on the validation split, when it was prepared for this data
    train_seconds: float | None = None  # when it was trained first


@dataclass(frozen=True, eq=False)
class Run:
    config: RunConfig  # validated; once prepared, `teacher` is the checkpoint's path and `teacher_epochs` 0
    dataset: Dataset = field(repr=False)
    teacher: Teacher | None  # None until `prepare` (an outside teacher, or one to train on the data first)
    notes: tuple[str, ...] = ()

    @property
    def prepared(self) -> bool:
        return self.teacher is not None

    @property
    def key(self) -> tuple:
        """What makes two runs the same run: the config and the teacher file's content."""
        return (self.config, self.teacher.hash if self.teacher else self.config.teacher)

    def replace(self, **changes) -> Run:
        """The same run with config fields changed that need no new resolution (seeds, T, α, methods, …)."""
        return dataclasses.replace(self, config=self.config.replace(**changes))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for cuda without a GPU is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


def resolve_run(cfg: RunConfig, dataset: Dataset | None = None) -> Run:
    """cfg checked, its data loaded and its checkpoint teacher read once; ValueError (or DatasetUnavailable,
    CheckpointError) in one line otherwise. The config is validated once, here, against the data's classes.
    An outside or untrained teacher is left for `prepare`."""
    if teachers.needs_preparing(cfg):
        cfg.validate()  # (the user's data: its classes are known once it is read)
        teachers.fetch_weights(cfg)  # before the data is read: offline, a download fails at once
        students.fetch(cfg)
        if dataset is None:
            from kd_core.data.sources import resolve_dataset

            dataset = resolve_dataset(cfg)
        cfg.check_hidden_class(dataset.num_classes)
        return Run(cfg, dataset, None)
    cfg.validate(len(CLASSES[cfg.dataset]) if cfg.dataset in CLASSES else None)
    students.fetch(cfg)  # pretrained weights asked for and not to be had: one line, before any data is read
    path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    digest, meta = checkpoints.inspect(path)
    checkpoints.check_teacher_fits(path, cfg.dataset, meta)  # before any data is loaded or downloaded
    return Run(cfg, dataset or load_dataset(cfg.dataset), Teacher(path, digest, meta, cfg.teacher))


def prepare(run: Run, device: str | torch.device = "cpu", *, on_event: Callable[[object], None] = lambda e: None,
            should_stop: Callable[[], bool] = lambda: False, recipe: TeacherRecipe = RECIPE) -> Run:
    """`run` with its teacher prepared: trained on the data first when asked (a `TeacherEpoch` event per epoch, a
    `TeacherProgress` at most every second between them), saved as a checkpoint, and its logits computed
    (`LogitsProgress` events). `should_stop()` is asked at every batch; `Stopped` ends the work there. A prepared
    run comes back as it is."""
    if run.prepared:
        return run
    cfg = run.config

    def logits(done: int, total: int) -> None:
        if should_stop():
            raise Stopped("the teacher's logits pass was stopped")
        on_event(LogitsProgress(done, total))

    if torch.device(device).type == "cpu":  # as the engine does: a 2nd thread on a busy machine ran 10-80× slower
        torch.set_num_threads(cfg.cpu_threads)
    resolved = teachers.resolve(cfg, run.dataset, device, on_event, recipe, logits, should_stop)
    digest, meta = checkpoints.inspect(resolved.path)
    teacher = Teacher(resolved.path, digest, meta, cfg.teacher, resolved.val_acc, resolved.train_seconds)
    ready = cfg.replace(teacher=str(resolved.path), teacher_epochs=0, teacher_pretrained=False)
    return Run(ready, run.dataset, teacher, run.notes + resolved.notes)


def as_run(run: Run | RunConfig, dataset: Dataset | None = None, device: str | torch.device = "cpu") -> Run:
    """A prepared Run from a Run, or from a RunConfig for scripts and tests that call the engine directly (they
    are where the request enters)."""
    if isinstance(run, RunConfig):
        run = resolve_run(run, dataset)
    return prepare(run, device)


__all__ = ["LogitsProgress", "Run", "Stopped", "Teacher", "TeacherEpoch", "TeacherProgress", "as_run", "prepare",
           "resolve_device", "resolve_run"]
