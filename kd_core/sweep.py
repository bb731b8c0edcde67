"""A T × α grid of KD students, plus the CE baseline, trained together in one batched pass.

Every student starts from the same initialisation and sees the same batches in the same order as a
`distill` run with the same seed, so each grid cell equals the KD student that `distill` would train
for its (T, α), within float noise (tests/test_sweep.py checks the weights). Instead of S sequential
runs, `StudentStack` keeps the S students' parameters stacked along a new first dimension and runs
each layer once for all of them: the first Linear (all students read the same batch) is one wide
matmul, later Linears are one `baddbmm`, and convolutions are one grouped conv whose groups are the
students (BatchNorm is per channel, so per student: cnn-tiny works too). The per-student losses come
from one vectorised `grid_loss` (T and α as [S] tensors) and are summed before one backward: the
students' graphs are disjoint, so each gets exactly its own gradient, and Adam, being per element,
over the stacked parameters is S independent Adams. Student 0 is the CE baseline (α = 0 is exactly
cross-entropy); students 1… are the grid, row-major over temperatures × alphas.

`sweep(cfg, temperatures, alphas)` yields `SweepStarted`, `SweepStep`* (at most one per
`cfg.event_interval_s`), `SweepEvaluated` after every epoch and `SweepFinished(result)`;
`run_sweep` returns the `SweepResult`, whose `.summary()` is the CLI's JSON and `.frame()` a
pandas DataFrame for plots.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints
from .config import RunConfig
from .data import Dataset, load_dataset, student_indices
from .teacher import teacher_logits
from .train import TrainingDiverged, new_student, resolve_device

MAX_GRID = 25  # KD students per sweep (the CE baseline comes on top): bounds memory and a Space's CPU
# bytes of one layer's activations for the students run together (see StudentStack.parts): 17 cnn-tiny
# students at once ([256, 17·8, 28, 28] fp32, 109 MB a layer) ran 1.9× slower per student here than 2–4
# at a time (over a third of the CPU time went to the kernel); MLP students' layers are narrow enough to
# run all students at once
ACTIVATION_BYTES = 2**24


# ------------------------------------------------------------------------------------------ events

@dataclass(frozen=True)
class SweepStarted:
    config: RunConfig
    device: str
    grid: list[tuple[float, float]]  # (T, α) per KD student, row-major over temperatures × alphas
    teacher_acc: float
    total_steps: int
    train_samples: int  # samples per epoch every student sees
    steps_per_epoch: int
    logits_seconds: float  # time to get the teacher's logits (0 when already in memory)


@dataclass(frozen=True)
class SweepStep:
    epoch: int  # 1-based epoch this step belongs to
    step: int  # steps done so far, over all epochs
    total_steps: int
    elapsed_s: float  # training wall time so far (evaluation excluded)
    ce_loss: float  # the CE baseline's loss, mean over the steps since the previous SweepStep
    kd_loss: list[float]  # each grid student's full loss, same averaging and order as the grid


@dataclass(frozen=True)
class SweepEvaluated:
    epoch: int  # epochs completed
    step: int
    ce_acc: float  # the CE baseline's test accuracy, fraction in [0, 1]
    kd_acc: list[float]  # per grid student, same order as SweepStarted.grid
    elapsed_s: float
    ce_hidden_acc: float | None = None  # accuracy on the hidden class's test images, when one is hidden
    kd_hidden_acc: list[float] | None = None


@dataclass(frozen=True, eq=False)
class SweepResult:
    config: RunConfig
    device: str
    temperatures: list[float]
    alphas: list[float]
    teacher_acc: float
    ce_acc: float
    kd_acc: list[float]  # row-major over temperatures × alphas
    ce_hidden_acc: float | None  # None unless cfg.hide_class is set
    kd_hidden_acc: list[float] | None
    epochs: int  # epochs completed (fewer than asked when cfg.max_seconds stopped the sweep)
    seconds: float  # training wall time (evaluation excluded)
    samples_per_s: float  # training samples per second, each sample counted once for all students
    stopped: str  # "" when all epochs ran, else why training stopped early
    students: StudentStack = field(repr=False)  # on CPU: 0 is the CE baseline, then the grid

    @property
    def grid(self) -> list[dict]:
        cells = [(t, a) for t in self.temperatures for a in self.alphas]
        hidden = self.kd_hidden_acc or [None] * len(cells)
        return [{"T": t, "alpha": a, "kd_acc": acc, "kd_hidden_acc": h}
                for (t, a), acc, h in zip(cells, self.kd_acc, hidden, strict=True)]

    def summary(self) -> dict:
        """The CLI's JSON (DESIGN.md): {"ce_acc", "grid": [{"T", "alpha", "kd_acc"}], "seconds", …}."""
        return {"ce_acc": self.ce_acc, "grid": self.grid, "seconds": self.seconds,
                "teacher_acc": self.teacher_acc, "ce_hidden_acc": self.ce_hidden_acc,
                "epochs": self.epochs, "samples_per_s": self.samples_per_s, "students": self.students.copies,
                "stopped": self.stopped, "device": self.device, "config": self.config.__dict__.copy()}

    def frame(self):
        """The grid as a pandas DataFrame, columns T, alpha, kd_acc, kd_hidden_acc (one row per cell)."""
        import pandas as pd

        return pd.DataFrame(self.grid, columns=["T", "alpha", "kd_acc", "kd_hidden_acc"])

    def kd_student(self, T: float, alpha: float) -> nn.Module:
        """The trained KD student of one grid cell, as an ordinary module (CPU, eval mode)."""
        cells = [(t, a) for t in self.temperatures for a in self.alphas]
        if (T, alpha) not in cells:
            raise ValueError(f"(T={T:g}, alpha={alpha:g}) is not in this sweep's grid")
        return self.students.module(1 + cells.index((T, alpha)))

    def ce_student(self) -> nn.Module:
        return self.students.module(0)


@dataclass(frozen=True)
class SweepFinished:
    result: SweepResult


SweepEvent = SweepStarted | SweepStep | SweepEvaluated | SweepFinished


# ---------------------------------------------------------------------------------- the stack

STACKABLE = (nn.Flatten, nn.Linear, nn.ReLU, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)


class StudentStack:
    """S copies of one `nn.Sequential` student, their tensors stacked along a new first dimension.

    `stack(x, part=slice(a, b))` maps one shared batch [B, C, H, W] to the logits of students a … b−1,
    [b − a, K, B] — classes before the batch, because a CPU log-softmax (forward + backward) over a
    non-last dimension of size 10 ran 10× faster here than over the last one. Inside, activations are
    "shared" [B, …] until the first layer with weights, "channels" [B, S·C, H, W] (student s owns
    channels s·C … s·C + C − 1) in the conv part, and "features" [S, F, B] in the Linear part.
    `parts(B)` splits the students into groups whose activations stay within ACTIVATION_BYTES.
    """

    def __init__(self, student: nn.Module, copies: int, in_shape: tuple[int, int, int]):
        layers = list(student.named_children()) if isinstance(student, nn.Sequential) else []
        odd = [type(layer).__name__ for _, layer in layers if not isinstance(layer, STACKABLE)]
        if not layers or odd or any(getattr(layer, "groups", 1) != 1 for _, layer in layers):
            raise ValueError(f"sweeps need a student built from {', '.join(t.__name__ for t in STACKABLE)} "
                             f"layers (mlp-tiny, mlp-small, mlp-medium, cnn-tiny); this one has "
                             f"{', '.join(odd) or type(student).__name__}")
        self.template = copy.deepcopy(student).cpu().eval()
        self.layers = list(self.template.named_children())  # read for their settings only
        self.copies = copies
        with torch.no_grad():  # the widest activation of one student for one sample, in bytes
            h, widest, own = torch.zeros(1, *in_shape), 0, False
            for layer in self.template:
                h = layer(h)
                own = own or any(True for _ in layer.parameters())  # before that, all share the input
                widest = max(widest, h.numel() * 4 if own else 0)
        self.widest_bytes = max(widest, 4)

        def stacked(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().unsqueeze(0).repeat(copies, *[1] * tensor.dim()).contiguous()

        self.params = {name: stacked(p).requires_grad_() for name, p in student.named_parameters()}
        self.buffers = {name: stacked(b) for name, b in student.named_buffers()}

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def parts(self, batch: int) -> list[slice]:
        """Consecutive groups of students whose widest activation for `batch` samples fits
        ACTIVATION_BYTES (at least one student each)."""
        size = max(1, ACTIVATION_BYTES // (batch * self.widest_bytes))
        return [slice(first, min(first + size, self.copies)) for first in range(0, self.copies, size)]

    def predict(self, inputs: torch.Tensor, batch: int) -> torch.Tensor:
        """Top-1 class of every student for every input, [S, N], using the running BatchNorm
        statistics; students in the groups of `parts(batch)`, inputs in chunks that fit likewise."""
        rows = []
        with torch.inference_mode():
            for part in self.parts(batch):
                chunk = max(1, ACTIVATION_BYTES // ((part.stop - part.start) * self.widest_bytes))
                rows.append(torch.cat([self(inputs[i:i + chunk], train=False, part=part).argmax(1)
                                       for i in range(0, len(inputs), chunk)], dim=1))
        return torch.cat(rows)

    def to(self, device: torch.device | str) -> StudentStack:
        """Move every stacked tensor to `device`; returns self (an earlier optimizer keeps the old ones)."""
        self.params = {n: p.detach().to(device).requires_grad_() for n, p in self.params.items()}
        self.buffers = {n: b.to(device) for n, b in self.buffers.items()}
        return self

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        """Student `index`'s tensors under the template's state-dict names (detached, CPU)."""
        return {name: value[index].detach().cpu() for name, value in {**self.params, **self.buffers}.items()}

    def module(self, index: int) -> nn.Module:
        """Student `index` as an ordinary module of the template's class (CPU, eval mode)."""
        model = copy.deepcopy(self.template)
        model.load_state_dict(self.state_dict(index))
        return model.eval()

    def __call__(self, x: torch.Tensor, *, train: bool, part: slice = slice(None)) -> torch.Tensor:
        """[B, C, H, W] -> logits [S, K, B] of the students in `part`; `train` picks BatchNorm's batch
        statistics (and updates the running ones) over the running statistics."""
        whole = range(self.copies)[part] == range(self.copies)  # slicing costs a full-size gradient copy

        def take(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return tensor if tensor is None or whole else tensor[part]

        S, B = len(range(self.copies)[part]), len(x)
        h, layout = x, "shared"
        for name, layer in self.layers:
            w, b = take(self.params.get(f"{name}.weight")), take(self.params.get(f"{name}.bias"))
            if isinstance(layer, nn.Flatten):
                if layout == "shared":
                    h = h.flatten(1)
                elif layout == "channels":  # [B, S·C, H, W] -> [S, C·H·W, B], nn.Flatten's order per student
                    h, layout = h.reshape(B, S, -1).permute(1, 2, 0), "features"
            elif isinstance(layer, nn.Linear):
                if layout == "channels":
                    raise ValueError("a sweep student needs a Flatten between its convolutions and Linears")
                if layout == "shared":  # all S first layers as one [S·out, in] @ [in, B] matmul
                    flat = w.reshape(-1, w.shape[-1])
                    h = (flat @ h.T if b is None else torch.addmm(b.reshape(-1, 1), flat, h.T)).view(S, -1, B)
                else:  # [S, out, in] @ [S, in, B]
                    h = torch.bmm(w, h) if b is None else torch.baddbmm(b.unsqueeze(-1), w, h)
                layout = "features"
            elif isinstance(layer, nn.Conv2d):  # one grouped conv; shared input needs no groups
                groups = 1 if layout == "shared" else S
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), None if b is None else b.reshape(-1),
                             layer.stride, layer.padding, layer.dilation, groups)
                layout = "channels"
            elif isinstance(layer, nn.BatchNorm2d):  # per channel = per student and channel
                h = F.batch_norm(h, take(self.buffers[f"{name}.running_mean"]).view(-1),
                                 take(self.buffers[f"{name}.running_var"]).view(-1),
                                 None if w is None else w.reshape(-1), None if b is None else b.reshape(-1),
                                 training=train, momentum=layer.momentum, eps=layer.eps)
                if train:
                    take(self.buffers[f"{name}.num_batches_tracked"]).add_(1)
            elif isinstance(layer, nn.ReLU):
                h = F.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(h, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                                 ceil_mode=layer.ceil_mode)
            else:
                h = F.adaptive_avg_pool2d(h, layer.output_size)
        if layout != "features":
            raise ValueError("a sweep student must end with a Linear layer")
        return h


def grid_loss(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
              T: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per student s: kd_loss(logits[s].T, teacher, labels, T=T[s], alpha=alpha[s]) -> [S].

    α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y), KL batchmean, as losses.kd_loss.
    logits [S, K, B] (class-major, see StudentStack); teacher [B, K]; labels [B]; T, alpha [S].
    """
    scale = T.view(-1, 1, 1)
    log_student = F.log_softmax(logits / scale, dim=1)
    log_teacher = F.log_softmax(teacher.T.unsqueeze(0) / scale, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(1).mean(1)
    target = labels.view(1, 1, -1).expand(len(T), 1, -1)
    ce = -F.log_softmax(logits, dim=1).gather(1, target).view(len(T), -1).mean(1)
    return alpha * T * T * kl + (1 - alpha) * ce


def check_grid(temperatures: list[float], alphas: list[float]) -> None:
    """ValueError unless both lists are non-empty, without repeats, valid and the grid is capped."""
    if len(temperatures) == 0 or len(alphas) == 0:
        raise ValueError("a sweep needs at least one temperature and at least one alpha")
    for name, values in (("temperatures", temperatures), ("alphas", alphas)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat a value; got {list(values)}")
    for T in temperatures:
        RunConfig(temperature=T).validate()
    for alpha in alphas:
        RunConfig(alpha=alpha).validate()
    size = len(temperatures) * len(alphas)
    if size > MAX_GRID:
        raise ValueError(f"a sweep trains at most {MAX_GRID} KD students; {len(temperatures)} "
                         f"temperatures × {len(alphas)} alphas = {size}")


# ------------------------------------------------------------------------------------------- loop

def sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float], dataset: Dataset | None = None):
    """Train the CE baseline and one KD student per (T, α) of `cfg`'s run together; yields events.

    `cfg.temperature` and `cfg.alpha` are ignored (the grid replaces them); every other field means
    what it means for `distill`. Closing the generator stops training at the next event.
    """
    check_grid(temperatures, alphas)
    if cfg.augment:
        raise ValueError("sweeps train on the un-augmented training set (cached teacher logits); "
                         "turn augment off")
    dataset = dataset or load_dataset(cfg.dataset)
    cfg.validate(dataset.num_classes)
    device = resolve_device(cfg.device)
    logits = teacher_logits(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), dataset, device)
    grid = [(float(t), float(a)) for t in temperatures for a in alphas]
    T = torch.tensor([1.0] + [t for t, _ in grid], device=device)
    alpha = torch.tensor([0.0] + [a for _, a in grid], device=device)

    index = student_indices(dataset.train_labels, train_size=cfg.train_size,
                            hide_class=cfg.hide_class, seed=cfg.seed)
    if len(index) == 0:
        raise ValueError("no training samples left after train_size / hide_class")
    students = StudentStack(new_student(cfg.student, dataset, cfg.seed), len(grid) + 1,
                            dataset.image_shape).to(device)
    inputs = dataset.normalize(dataset.train_images[index].to(device))  # [n, C, H, W] float32
    labels = dataset.train_labels[index].to(device)
    soft_targets = logits.train[index].to(device)  # cached teacher logits [n, K]
    test_inputs = dataset.normalize(dataset.test_images.to(device))
    test_labels = dataset.test_labels.to(device)
    n = len(labels)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    mixed = device.type == "cuda"  # bf16 autocast on GPUs, as distill; plain fp32 on CPU
    # fused: one kernel per step instead of ~10 passes over the stacked tensors (10× faster here)
    optimizer = torch.optim.Adam(students.parameters(), lr=cfg.lr, fused=True)
    order_rng = torch.Generator().manual_seed(cfg.seed)

    parts = students.parts(cfg.batch_size)

    def evaluate(epoch: int, step: int, elapsed: float) -> SweepEvaluated:
        with torch.autocast("cuda", torch.bfloat16, enabled=mixed):
            pred = students.predict(test_inputs, cfg.batch_size)  # [S, M]
        acc = (pred == test_labels).float().mean(1).tolist()
        hidden = None
        if cfg.hide_class is not None:
            hidden = (pred[:, test_labels == cfg.hide_class] == cfg.hide_class).float().mean(1).tolist()
        return SweepEvaluated(epoch, step, acc[0], acc[1:], elapsed,
                              None if hidden is None else hidden[0], None if hidden is None else hidden[1:])

    def pin_threads() -> None:  # per OS thread, and a consumer may resume us from another (see distill)
        if device.type == "cpu":
            torch.set_num_threads(cfg.cpu_threads)

    try:
        yield SweepStarted(cfg, str(device), grid, logits.test_acc, total_steps, n, steps_per_epoch,
                           logits.seconds)
        pin_threads()
        train_seconds, step, samples, epochs_done, stopped = 0.0, 0, 0, 0, ""
        loss_sums = torch.zeros(len(grid) + 1, device=device)  # per student, since the last SweepStep
        steps_in_sum, last_event = 0, -math.inf
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            order = torch.randperm(n, generator=order_rng).to(device)
            for first in range(0, n, cfg.batch_size):
                batch = order[first:first + cfg.batch_size]
                if len(batch) < 2 and n > 1:
                    continue  # as in distill: a batch of one would break BatchNorm students
                x, teacher_out, y = inputs[batch], soft_targets[batch], labels[batch]
                optimizer.zero_grad(set_to_none=True)
                for part in parts:  # one part (all students) for MLPs
                    with torch.autocast("cuda", torch.bfloat16, enabled=mixed):
                        out = students(x, train=True, part=part)
                    losses = grid_loss(out.float(), teacher_out, y, T[part], alpha[part])
                    losses.sum().backward()  # disjoint graphs: each student gets only its own gradient
                    loss_sums[part] += losses.detach()
                optimizer.step()
                step += 1
                samples += len(batch)
                steps_in_sum += 1
                now = time.perf_counter()
                if now - last_event >= cfg.event_interval_s or step == total_steps:
                    train_seconds += now - started
                    means = (loss_sums / steps_in_sum).tolist()
                    if not all(math.isfinite(m) for m in means):
                        raise TrainingDiverged(f"a sweep student diverged at step {step} (its loss became "
                                               f"NaN or infinite); lower the learning rate (now {cfg.lr:g})")
                    yield SweepStep(epoch, step, total_steps, train_seconds, means[0], means[1:])
                    pin_threads()
                    loss_sums.zero_()
                    steps_in_sum, last_event = 0, time.perf_counter()
                    started = last_event
                if cfg.max_seconds and train_seconds + (time.perf_counter() - started) > cfg.max_seconds:
                    stopped = f"time limit of {cfg.max_seconds:g} s reached in epoch {epoch}"
                    break
            train_seconds += time.perf_counter() - started
            epochs_done = epoch
            evaluated = evaluate(epoch, step, train_seconds)
            yield evaluated
            pin_threads()
            if stopped:
                break

        yield SweepFinished(SweepResult(
            config=cfg, device=str(device), temperatures=[t for t, _ in grid[::len(alphas)]],
            alphas=[a for _, a in grid[:len(alphas)]], teacher_acc=logits.test_acc,
            ce_acc=evaluated.ce_acc, kd_acc=evaluated.kd_acc, ce_hidden_acc=evaluated.ce_hidden_acc,
            kd_hidden_acc=evaluated.kd_hidden_acc, epochs=epochs_done, seconds=train_seconds,
            samples_per_s=samples / train_seconds if train_seconds > 0 else 0.0, stopped=stopped,
            students=students.to("cpu")))
    finally:
        inputs = labels = soft_targets = test_inputs = test_labels = None  # drop device copies now
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run_sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float],
              dataset: Dataset | None = None) -> SweepResult:
    """Run `sweep` to the end and return its result (for the CLI, scripts and tests)."""
    for event in sweep(cfg, temperatures, alphas, dataset):
        if isinstance(event, SweepFinished):
            return event.result
    raise RuntimeError("sweep ended without a SweepFinished event")

