"""A T × α grid of KD students trained in one batched pass, plus the CE baseline.

All students start from one shared initialisation and see the same batches in the same order (the
order `distill` uses), so each grid cell equals the KD student a separate `distill` run would train,
within float noise. Instead of S sequential runs, the S students' parameters are stacked
(`torch.func.stack_module_state`) and evaluated with `vmap`, so every layer is one batched matmul over
all students; the loss is computed per student with T and α as [S] tensors and summed before one
backward (the students' graphs are disjoint, so each gets exactly its own gradient). One Adam over the
stacked parameters equals S independent Adams, since Adam is per element.

The generator `sweep(cfg, temperatures, alphas)` yields `SweepStarted`, `SweepStep`* (rate-limited),
`SweepEvaluated` per epoch and `SweepFinished`; `run_sweep` returns the `SweepResult`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from . import checkpoints
from .config import RunConfig
from .data import Dataset, load_dataset, student_indices
from .losses import check_kd_params
from .teacher import teacher_logits
from .train import new_student, resolve_device

MAX_GRID = 25  # KD students per sweep (the CE baseline comes on top): bounds memory and a Space's CPU


@dataclass(frozen=True)
class SweepStarted:
    config: RunConfig
    device: str
    grid: list[tuple[float, float]]  # (T, α) per KD student, row-major over temperatures × alphas
    teacher_acc: float
    total_steps: int


@dataclass(frozen=True)
class SweepStep:
    epoch: int
    step: int
    total_steps: int
    elapsed_s: float  # training wall time so far


@dataclass(frozen=True)
class SweepEvaluated:
    epoch: int  # epochs completed
    ce_acc: float  # the CE baseline's test accuracy
    kd_acc: list[float]  # per grid student, same order as SweepStarted.grid
    elapsed_s: float


@dataclass(frozen=True)
class SweepResult:
    config: RunConfig
    device: str
    temperatures: list[float]
    alphas: list[float]
    teacher_acc: float
    ce_acc: float
    kd_acc: list[float]  # row-major over temperatures × alphas
    epochs: int
    seconds: float  # training wall time (evaluation excluded)
    samples_per_s: float  # training samples per second, each sample counted once for all students

    @property
    def grid(self) -> list[dict]:
        cells = [(t, a) for t in self.temperatures for a in self.alphas]
        return [{"T": t, "alpha": a, "kd_acc": acc} for (t, a), acc in zip(cells, self.kd_acc, strict=True)]

    def summary(self) -> dict:
        """The CLI's JSON (DESIGN.md): {"ce_acc", "grid": [{"T", "alpha", "kd_acc"}], "seconds", …}."""
        return {"ce_acc": self.ce_acc, "grid": self.grid, "seconds": self.seconds,
                "teacher_acc": self.teacher_acc, "epochs": self.epochs,
                "samples_per_s": self.samples_per_s, "students": len(self.kd_acc) + 1,
                "device": self.device, "config": self.config.__dict__.copy()}

    def frame(self):
        """The grid as a pandas DataFrame with columns T, alpha, kd_acc (for heatmaps and line plots)."""
        import pandas as pd

        return pd.DataFrame(self.grid)


@dataclass(frozen=True, eq=False)
class SweepFinished:
    result: SweepResult
    students: Stacked  # the trained stack: index 0 is the CE baseline, then the grid in order


def check_grid(temperatures: list[float], alphas: list[float]) -> None:
    """ValueError unless both lists are non-empty, valid (T > 0, α in [0, 1]) and the grid is capped."""
    if not temperatures or not alphas:
        raise ValueError("give at least one temperature and one alpha")
    for T in temperatures:
        for alpha in alphas:
            check_kd_params(T, alpha)
    size = len(temperatures) * len(alphas)
    if size > MAX_GRID:
        raise ValueError(f"a sweep trains at most {MAX_GRID} KD students; {len(temperatures)} "
                         f"temperatures × {len(alphas)} alphas = {size}")


class Stacked:
    """S copies of one module, their parameters stacked along a new first dimension."""

    def __init__(self, module: nn.Module, copies: int):
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
            raise ValueError("sweeps support students without BatchNorm (mlp-tiny, mlp-small, "
                             "mlp-medium); cnn-tiny needs per-student running statistics")
        self.params, self.buffers = stack_module_state([copy.deepcopy(module) for _ in range(copies)])
        self.base = copy.deepcopy(module).to("meta")

        def forward(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._forward_shared = vmap(forward, in_dims=(0, 0, None))  # same batch for every student

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """[B, ...] -> logits [S, B, K]."""
        return self._forward_shared(self.params, self.buffers, x)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())


def grid_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
              T: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Sum over students of kd_loss(logits[s], teacher, labels, T=T[s], alpha=alpha[s]).

    logits [S, B, K]; teacher [B, K]; labels [B]; T, alpha [S]. Same formula as losses.kd_loss.
    """
    students, batch, classes = logits.shape
    scale = T.view(-1, 1, 1)
    log_student = F.log_softmax(logits / scale, dim=-1)
    log_teacher = F.log_softmax(teacher.unsqueeze(0) / scale, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1).mean(-1)  # batchmean, [S]
    ce = F.cross_entropy(logits.reshape(-1, classes), labels.repeat(students),
                         reduction="none").view(students, batch).mean(-1)
    return (alpha * T * T * kl + (1 - alpha) * ce).sum()


def sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float], dataset: Dataset | None = None):
    """Train the CE baseline and a KD student per (T, α) together; yields sweep events."""
    check_grid(temperatures, alphas)
    dataset = dataset or load_dataset(cfg.dataset)
    cfg.validate(dataset.num_classes)
    device = resolve_device(cfg.device)
    logits = teacher_logits(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), dataset, device)
    grid = [(float(t), float(a)) for t in temperatures for a in alphas]
    # student 0 is the CE baseline (α = 0 is exactly cross-entropy); the grid follows
    T = torch.tensor([1.0] + [t for t, _ in grid], device=device)
    alpha = torch.tensor([0.0] + [a for _, a in grid], device=device)

    index = student_indices(dataset.train_labels, train_size=cfg.train_size,
                            hide_class=cfg.hide_class, seed=cfg.seed)
    inputs = dataset.normalize(dataset.train_images[index].to(device))
    labels = dataset.train_labels[index].to(device)
    soft_targets = logits.train[index].to(device)
    test_inputs = dataset.normalize(dataset.test_images.to(device))
    test_labels = dataset.test_labels.to(device)
    n = len(labels)
    total_steps = math.ceil(n / cfg.batch_size) * cfg.epochs

    students = Stacked(new_student(cfg.student, dataset, cfg.seed).to(device), len(grid) + 1)
    optimizer = torch.optim.Adam(students.parameters(), lr=cfg.lr)
    order_rng = torch.Generator().manual_seed(cfg.seed)

    def accuracies() -> list[float]:
        with torch.inference_mode():
            correct = sum((students(test_inputs[i:i + 2000]).argmax(-1) == test_labels[i:i + 2000]).sum(1)
                          for i in range(0, len(test_labels), 2000))
        return (correct.float() / len(test_labels)).tolist()

    if device.type == "cpu":
        torch.set_num_threads(cfg.cpu_threads)
    yield SweepStarted(cfg, str(device), grid, logits.test_acc, total_steps)
    train_seconds, step, samples, last_event = 0.0, 0, 0, -math.inf
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(n, generator=order_rng).to(device)
        for first in range(0, n, cfg.batch_size):
            batch = order[first:first + cfg.batch_size]
            if len(batch) < 2 and n > 1:
                continue  # as in distill: a batch of one is skipped
            loss = grid_loss(students(inputs[batch]), soft_targets[batch], labels[batch], T, alpha)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            samples += len(batch)
            now = time.perf_counter()
            if now - last_event >= cfg.event_interval_s:
                train_seconds += now - started
                if not math.isfinite(loss.item()):
                    raise ValueError(f"a sweep student diverged at step {step}; lower the learning "
                                     f"rate (now {cfg.lr:g})")
                yield SweepStep(epoch, step, total_steps, train_seconds)
                if device.type == "cpu":
                    torch.set_num_threads(cfg.cpu_threads)
                started = last_event = time.perf_counter()
        train_seconds += time.perf_counter() - started
        accs = accuracies()
        yield SweepEvaluated(epoch, accs[0], accs[1:], train_seconds)
        if device.type == "cpu":
            torch.set_num_threads(cfg.cpu_threads)

    yield SweepFinished(SweepResult(
        config=cfg, device=str(device), temperatures=[float(t) for t in temperatures],
        alphas=[float(a) for a in alphas], teacher_acc=logits.test_acc, ce_acc=accs[0],
        kd_acc=accs[1:], epochs=cfg.epochs, seconds=train_seconds,
        samples_per_s=samples / train_seconds if train_seconds > 0 else 0.0), students)


def run_sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float],
              dataset: Dataset | None = None) -> SweepResult:
    """Run `sweep` to the end and return its result."""
    for event in sweep(cfg, temperatures, alphas, dataset):
        if isinstance(event, SweepFinished):
            return event.result
    raise RuntimeError("sweep ended without a SweepFinished event")


def student_weights(students: Stacked, index: int) -> dict[str, torch.Tensor]:
    """The state dict of one student out of a stack (for tests and export)."""
    return {name: value[index].detach() for name, value in {**students.params, **students.buffers}.items()}
