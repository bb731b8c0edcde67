"""`distill(cfg)`: a CE student and a KD student trained side by side, as a stream of events.

Both students start from the same initial weights and see the same batches in the same order, in
one loop, so any difference between them is the loss. The whole (possibly reduced) training set sits
on the device as a tensor and each batch is a slice of a permutation; the teacher's logits come from
`teacher.teacher_logits` (computed once per checkpoint and dataset, cached). The generator yields:

    Started  ->  Evaluated(epoch 0)  ->  { Step* (at most one per `event_interval_s`)  ->  Evaluated }
    per epoch  ->  Finished(result)

It never prints. Closing it (a consumer that stops iterating, a Gradio cancel) stops training at
the next event; `finally` releases the device tensors.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoints, models
from .config import CPU_MAX_TFLOP, CPU_TFLOP_PER_S, RunConfig
from .data import Dataset, augment, load_dataset, student_indices
from .losses import check_kd_params, kd_loss
from .teacher import logits_cached, teacher_logits


class TrainingDiverged(RuntimeError):
    """A student's loss became NaN or infinite; the message suggests what to change."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; asking for cuda without a GPU is a ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use auto or cpu")
    return torch.device(name)


# ----------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Started:
    config: RunConfig
    device: str
    teacher_acc: float
    train_samples: int  # samples per epoch the students see (after train_size / hide_class)
    steps_per_epoch: int
    total_steps: int
    logits_seconds: float  # time to get the teacher's logits (0 when already in memory)
    logits_source: str  # "memory", "disk" or "computed"
    notes: tuple[str, ...] = ()  # things to tell the user, e.g. that ImageNet weights were unavailable


@dataclass(frozen=True)
class Step:
    epoch: int  # 1-based epoch this step belongs to
    step: int  # steps done so far, over all epochs
    total_steps: int
    ce_loss: float  # CE student's cross-entropy, mean over the steps since the previous Step event
    kd_loss: float  # KD student's full loss (α·soft + (1−α)·CE), same averaging
    elapsed_s: float  # training wall time so far (evaluation excluded)


@dataclass(frozen=True)
class Evaluated:
    epoch: int  # epochs completed; 0 = before training
    step: int
    ce_acc: float  # test accuracy, fraction in [0, 1]
    kd_acc: float
    ce_hidden_acc: float | None  # accuracy on the hidden class's test images, when one is hidden
    kd_hidden_acc: float | None
    elapsed_s: float


@dataclass(frozen=True, eq=False)
class RunResult:
    config: RunConfig
    device: str
    teacher_acc: float
    ce_acc: float
    kd_acc: float
    ce_class_acc: list[float]  # per-class test accuracy
    kd_class_acc: list[float]
    teacher_class_acc: list[float]
    ce_agreement: float  # fraction of test images where the student's top-1 equals the teacher's
    kd_agreement: float
    epochs: int  # epochs completed (fewer than asked when a time limit stopped the run)
    seconds: float  # training wall time, evaluation and event handling excluded
    samples_per_s: float  # training samples per second, each sample seen by both students counted once
    logits_seconds: float
    stopped: str  # "" when all epochs ran, else why training stopped early
    ce_student: nn.Module = field(repr=False)  # on CPU, eval mode
    kd_student: nn.Module = field(repr=False)

    def summary(self) -> dict:
        """The CLI's JSON fields (DESIGN.md) plus per-class figures."""
        hidden = self.config.hide_class
        return {
            "teacher_acc": self.teacher_acc, "ce_acc": self.ce_acc, "kd_acc": self.kd_acc,
            "epochs": self.epochs, "seconds": self.seconds, "samples_per_s": self.samples_per_s,
            "device": self.device, "config": self.config.__dict__.copy(),
            "logits_seconds": self.logits_seconds, "stopped": self.stopped,
            "ce_agreement": self.ce_agreement, "kd_agreement": self.kd_agreement,
            "ce_hidden_acc": None if hidden is None else self.ce_class_acc[hidden],
            "kd_hidden_acc": None if hidden is None else self.kd_class_acc[hidden],
            "teacher_hidden_acc": None if hidden is None else self.teacher_class_acc[hidden],
        }


@dataclass(frozen=True)
class Finished:
    result: RunResult


Event = Started | Step | Evaluated | Finished


# ------------------------------------------------------------------------------------- evaluation

def predictions(model: nn.Module, dataset: Dataset, images: torch.Tensor,
                batch_size: int = 4096) -> torch.Tensor:
    """Top-1 class per image (int64 [N], on the images' device) in eval mode, large batches."""
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        out = torch.cat([model(dataset.normalize(images[i:i + batch_size])).argmax(1)
                         for i in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def class_accuracy(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    correct = torch.bincount(labels[predicted == labels], minlength=num_classes).float()
    total = torch.bincount(labels, minlength=num_classes).clamp(min=1).float()
    return (correct / total).tolist()


# ------------------------------------------------------------------------------------------- loop

def new_student(name: str, dataset: Dataset, seed: int) -> nn.Module:
    """A student initialised from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(name, dataset.image_shape, dataset.num_classes)


def distill(cfg: RunConfig, dataset: Dataset | None = None):
    """Train the CE and KD students of `cfg`; yields Started, Step, Evaluated and Finished events."""
    dataset = dataset or load_dataset(cfg.dataset)
    cfg.validate(dataset.num_classes)
    check_kd_params(cfg.temperature, cfg.alpha)
    device = resolve_device(cfg.device)
    teacher_path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    logits = teacher_logits(teacher_path, dataset, device)

    index = student_indices(dataset.train_labels, train_size=cfg.train_size,
                            hide_class=cfg.hide_class, seed=cfg.seed)
    if len(index) == 0:
        raise ValueError("no training samples left after train_size / hide_class")
    labels = dataset.train_labels[index].to(device)
    if cfg.augment:  # uint8 images stay on the device; each batch is augmented, then seen by the teacher too
        inputs = dataset.train_images[index].to(device)
        soft_targets = None
        teacher_model, _ = checkpoints.load_model(teacher_path, device)
        if device.type == "cuda":
            teacher_model = teacher_model.to(memory_format=torch.channels_last)
        augment_rng = torch.Generator().manual_seed(cfg.seed + 1)
        flip = dataset.name != "mnist"  # a mirrored digit is another symbol
        pad = dataset.image_shape[-1] // 8  # 4 pixels on 32×32, 3 on 28×28
    else:  # the students' whole training set, normalised once, on the device: [n, C, H, W] float32
        inputs = dataset.normalize(dataset.train_images[index].to(device))
        soft_targets = logits.train[index].to(device)  # cached teacher logits [n, K]
    mixed = device.type == "cuda"  # bf16 autocast + channels_last on GPUs; plain fp32 on CPU

    def get_batch(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(student input, teacher logits) for a batch of indices into the students' training set."""
        if soft_targets is not None:
            return inputs[batch], soft_targets[batch]
        x = dataset.normalize(augment(inputs[batch], augment_rng, pad=pad, flip=flip))
        if mixed:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=mixed):
            return x, teacher_model(x).float()
    test_images = dataset.test_images.to(device)
    test_labels = dataset.test_labels.to(device)
    n = len(labels)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs

    ce_student = new_student(cfg.student, dataset, cfg.seed)
    notes = (models.load_pretrained(cfg.student, ce_student),) if cfg.pretrained else ()
    ce_student = ce_student.to(device).train()
    if mixed:
        ce_student = ce_student.to(memory_format=torch.channels_last)
    kd_student = copy.deepcopy(ce_student)
    # one Adam over both students is two independent Adams (it is per-parameter) in fewer kernel calls;
    # fused: one kernel per step (with two other changes, +12% samples/s at batch 256 and +20% at 64:
    # bench/RESULTS.md)
    optimizer = torch.optim.Adam([*ce_student.parameters(), *kd_student.parameters()], lr=cfg.lr,
                                 fused=True)
    order_rng = torch.Generator().manual_seed(cfg.seed)
    teacher_test = logits.test.argmax(1)

    latest = {}  # the last evaluation's top-1 predictions; after the last epoch, the run's result

    def evaluate(epoch: int, step: int, elapsed: float) -> Evaluated:
        ce_pred = predictions(ce_student, dataset, test_images)
        kd_pred = predictions(kd_student, dataset, test_images)
        latest.update(ce=ce_pred, kd=kd_pred)
        ce_acc = (ce_pred == test_labels).float().mean().item()
        kd_acc = (kd_pred == test_labels).float().mean().item()
        hidden = cfg.hide_class
        if hidden is None:
            return Evaluated(epoch, step, ce_acc, kd_acc, None, None, elapsed)
        mask = test_labels == hidden
        return Evaluated(epoch, step, ce_acc, kd_acc, (ce_pred[mask] == hidden).float().mean().item(),
                         (kd_pred[mask] == hidden).float().mean().item(), elapsed)

    def pin_threads() -> None:
        # OpenMP thread counts are per OS thread, and a consumer may resume this generator from a
        # different thread each time (Gradio does), so this is re-applied after every yield
        if device.type == "cpu":
            torch.set_num_threads(cfg.cpu_threads)

    try:
        yield Started(cfg, str(device), logits.test_acc, n, steps_per_epoch, total_steps,
                      logits.seconds, logits.source, notes)
        yield evaluate(0, 0, 0.0)
        pin_threads()
        train_seconds, step, samples, epochs_done, stopped = 0.0, 0, 0, 0, ""
        loss_sums = torch.zeros(2, device=device)  # running [ce, kd] loss since the last Step event
        steps_in_sum, last_event = 0, -math.inf
        for epoch in range(1, cfg.epochs + 1):
            started = time.perf_counter()
            order = torch.randperm(n, generator=order_rng).to(device)
            for first in range(0, n, cfg.batch_size):
                batch = order[first:first + cfg.batch_size]
                if len(batch) < 2 and n > 1:
                    continue  # a batch of one would break BatchNorm students; it is reshuffled next epoch
                x, teacher_out = get_batch(batch)
                y = labels[batch]
                with torch.autocast("cuda", torch.bfloat16, enabled=mixed):
                    ce_logits, kd_logits = ce_student(x), kd_student(x)
                ce_loss = F.cross_entropy(ce_logits.float(), y)
                kd = kd_loss(kd_logits.float(), teacher_out, y, T=cfg.temperature, alpha=cfg.alpha)
                optimizer.zero_grad(set_to_none=True)
                (ce_loss + kd).backward()  # disjoint graphs: each student gets only its own gradient
                optimizer.step()
                loss_sums += torch.stack([ce_loss.detach(), kd.detach()])
                step += 1
                samples += len(batch)
                steps_in_sum += 1
                now = time.perf_counter()
                if now - last_event >= cfg.event_interval_s or step == total_steps:
                    train_seconds += now - started
                    ce_mean, kd_mean = (loss_sums / steps_in_sum).tolist()
                    if not (math.isfinite(ce_mean) and math.isfinite(kd_mean)):
                        raise TrainingDiverged(f"training diverged at step {step} (the loss became "
                                               f"NaN or infinite); lower the learning rate (now {cfg.lr:g})")
                    yield Step(epoch, step, total_steps, ce_mean, kd_mean, train_seconds)
                    pin_threads()
                    loss_sums.zero_()
                    steps_in_sum, last_event = 0, time.perf_counter()
                    started = last_event
                if cfg.max_seconds and train_seconds + (time.perf_counter() - started) > cfg.max_seconds:
                    stopped = f"time limit of {cfg.max_seconds:g} s reached in epoch {epoch}"
                    break
            train_seconds += time.perf_counter() - started
            epochs_done = epoch
            yield evaluate(epoch, step, train_seconds)
            pin_threads()
            if stopped:
                break

        optimizer.zero_grad(set_to_none=True)  # trained: free the gradients, as big as the weights
        ce_pred, kd_pred = latest["ce"].cpu(), latest["kd"].cpu()  # the weights have not changed since
        labels_cpu = dataset.test_labels
        k = dataset.num_classes
        yield Finished(RunResult(
            config=cfg, device=str(device), teacher_acc=logits.test_acc,
            ce_acc=(ce_pred == labels_cpu).float().mean().item(),
            kd_acc=(kd_pred == labels_cpu).float().mean().item(),
            ce_class_acc=class_accuracy(ce_pred, labels_cpu, k),
            kd_class_acc=class_accuracy(kd_pred, labels_cpu, k),
            teacher_class_acc=class_accuracy(teacher_test, labels_cpu, k),
            ce_agreement=(ce_pred == teacher_test).float().mean().item(),
            kd_agreement=(kd_pred == teacher_test).float().mean().item(),
            epochs=epochs_done, seconds=train_seconds,
            samples_per_s=samples / train_seconds if train_seconds > 0 else 0.0,
            logits_seconds=logits.seconds, stopped=stopped,
            ce_student=ce_student.cpu().eval(), kd_student=kd_student.cpu().eval()))
    finally:
        inputs = labels = soft_targets = test_images = test_labels = None  # drop device copies now
        teacher_model = None
        if device.type == "cuda":
            torch.cuda.empty_cache()


def student_metadata(result: RunResult, role: str, recipe: str = "") -> dict:
    """What a student checkpoint records besides its weights: enough to rebuild and use it."""
    cfg = result.config
    dataset = load_dataset(cfg.dataset)  # already in memory: the run loaded it
    return {"arch": cfg.student, "dataset": cfg.dataset, "role": f"{role}-student",
            "in_shape": list(dataset.image_shape), "num_classes": dataset.num_classes,
            "classes": list(dataset.classes), "mean": list(dataset.mean), "std": list(dataset.std),
            "test_acc": round(result.kd_acc if role == "kd" else result.ce_acc, 4), "seed": cfg.seed,
            "recipe": recipe, "config": cfg.__dict__}


def save_student(result: RunResult, role: str, path, recipe: str = ""):
    """Write the run's `role` ("ce" or "kd") student as a checkpoint; returns its path."""
    model = result.kd_student if role == "kd" else result.ce_student
    return checkpoints.save_model(path, model, student_metadata(result, role, recipe))


def run(cfg: RunConfig, dataset: Dataset | None = None) -> RunResult:
    """Run `distill(cfg)` to the end and return its result (for scripts and tests)."""
    for event in distill(cfg, dataset):
        if isinstance(event, Finished):
            return event.result
    raise RuntimeError("distill ended without a Finished event")


def check_cpu_budget(cfg: RunConfig, dataset: Dataset, device: torch.device,
                     max_tflop: float = CPU_MAX_TFLOP) -> None:
    """ValueError when a CPU run would need more than `max_tflop` TFLOP (the app's cap for big models).

    Counts both students' training (≈ 3 × forward each) over every sample and epoch, their forward
    passes over the test set (before training and after each epoch), a teacher
    forward per sample when augmenting, and the teacher's pass over the training and test sets when its
    logits are not cached yet. GPUs are not capped.
    """
    if device.type != "cpu":
        return
    samples = len(student_indices(dataset.train_labels, train_size=cfg.train_size,
                                  hide_class=cfg.hide_class, seed=cfg.seed)) * cfg.epochs
    student = models.build(cfg.student, dataset.image_shape, dataset.num_classes)
    forward = models.flops_per_sample(student, dataset.image_shape)
    evaluations = 2 * len(dataset.test_labels) * (cfg.epochs + 1)  # images through a student at test time
    student_flops = 6 * forward * samples + forward * evaluations
    teacher_path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    teacher_samples = samples if cfg.augment else 0
    if not logits_cached(teacher_path, dataset):
        teacher_samples += len(dataset.train_labels) + len(dataset.test_labels)
    teacher_flops = 0
    if teacher_samples:
        teacher, _ = checkpoints.load_model(teacher_path)
        teacher_flops = models.flops_per_sample(teacher, dataset.image_shape) * teacher_samples
    needed = (student_flops + teacher_flops) / 1e12
    if needed > max_tflop:
        raise ValueError(
            f"this run needs about {needed:,.1f} TFLOP, at least {needed / CPU_TFLOP_PER_S / 60:,.0f} "
            f"minutes on a CPU, over the CPU limit of {max_tflop:g} TFLOP; pick a smaller student or "
            f"teacher, fewer epochs or a smaller training set, or run it on a GPU")
