"""Training a teacher: the recipe (`TeacherRecipe`, the shipped teacher's defaults), `train_teacher` for the CLI's
`train-teacher`, and `fit_teacher`, the loop any teacher is trained with (the CLI's, and a run's own-data teacher).

The loop reports each epoch as a `TeacherEpoch` event (the engine's vocabulary, kd_core.engine.events) and asks
`should_stop()` before every batch: a visitor who presses Stop or closes the tab ends the teacher's training at the
next batch, exactly as the students' (`Stopped` is raised).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.config import DATASETS, MAX_BATCH_SIZE, MAX_TEACHER_EPOCHS, _check_choice, _check_int, _check_number
from kd_core.data.datasets import Dataset, augment, load_dataset
from kd_core.models import zoo as models
from kd_core.teacher.logits import predict_logits

PROGRESS_S = 1.0  # seconds between TeacherProgress events


class Stopped(Exception):
    """The work's reader left (Stop, a closed tab): a teacher's training or logits pass ends at its next batch."""



@dataclass(frozen=True)
class TeacherRecipe:
    """How `train_teacher` trains: its defaults, the CLI's, and the shipped teacher's recipe
    (checkpoints/README.md). Change a default here and nowhere else."""

    dataset: str = "fashion-mnist"  # one of config.DATASETS
    arch: str = "cnn-teacher"  # a name from kd_core.models.zoo
    epochs: int = 10  # the shipped teacher's recipe (checkpoints/README.md)
    lr: float = 3e-3  # peak OneCycle learning rate (AdamW, weight decay 5e-4)
    batch_size: int = 128
    label_smoothing: float = 0.0  # 0 keeps the wrong-class probabilities that distillation transfers
    seed: int = 0  # seeds the initialisation, the batch order and the augmentation

    def validate(self) -> TeacherRecipe:
        """Return self, or raise ValueError naming the first bad field and its allowed range."""
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("arch", self.arch, (*models.TEACHERS, *models.STUDENTS))
        _check_int("epochs", self.epochs, low=1, high=MAX_TEACHER_EPOCHS)
        _check_number("lr", self.lr, low=0.0, high=1.0, low_open=True)
        _check_int("batch_size", self.batch_size, low=1, high=MAX_BATCH_SIZE)
        smoothing = self.label_smoothing  # at 1 every target is uniform: nothing left to learn
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < 1:
            raise ValueError(f"label_smoothing must be a number in [0, 1); got {smoothing!r}")
        _check_int("seed", self.seed, low=0, high=2**63 - 1)
        return self


RECIPE = TeacherRecipe()


@dataclass(frozen=True)
class TeacherProgress:
    """A teacher's training between epochs, at most every PROGRESS_S: what a visitor or the CLI sees meanwhile (an
    epoch of a big teacher can take minutes), and what lets a closed stream stop the work between epochs."""

    epoch: int  # 1-based, in progress
    step: int  # steps done so far, over all epochs
    total_steps: int
    images_per_s: float
    eta_s: float  # at the speed so far: until the last step (evaluations excluded)


@dataclass(frozen=True)
class TeacherEpoch:
    epoch: int
    train_loss: float
    val_acc: float  # on the validation split (never trained on): what chooses a recipe
    test_acc: float  # reported only
    seconds: float  # wall time since training started


def train_teacher(dataset_name: str = RECIPE.dataset, arch: str = RECIPE.arch, *, epochs: int = RECIPE.epochs,
                  lr: float = RECIPE.lr, batch_size: int = RECIPE.batch_size,
                  label_smoothing: float = RECIPE.label_smoothing, seed: int = RECIPE.seed,
                  device: str | torch.device = "cpu", pretrained: bool = False,
                  on_epoch: Callable[[TeacherEpoch], None] | None = None,
                  on_note: Callable[[str], None] | None = None,
                  on_progress: Callable[[TeacherProgress], None] | None = None) -> tuple[nn.Module, float]:
    """Train `arch` on `dataset_name` with AdamW + OneCycle and random shifts (+ flips except MNIST).

    The options are checked first (`TeacherRecipe.validate`: one ValueError naming the bad one), before
    any data is loaded. The validation split (`Dataset.validation_index`) is held out: the teacher trains
    on the rest, and each epoch reports validation accuracy (which chooses the recipe) beside test
    accuracy (reported only). Label smoothing is off by default: it raises accuracy a little but flattens
    the wrong-class probabilities that distillation transfers (Müller et al. 2019, "When does label
    smoothing help?").

    Returns (model in eval mode on CPU, final test accuracy).
    """
    TeacherRecipe(dataset_name, arch, epochs, lr, batch_size, label_smoothing, seed).validate()
    if pretrained and arch not in models.PRETRAINED:
        raise ValueError(f"--pretrained needs one of {', '.join(models.PRETRAINED)}; "
                         f"{arch} has no ImageNet weights")
    dataset = load_dataset(dataset_name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.build(arch, dataset.image_shape, dataset.num_classes)
    if pretrained:
        note = models.load_pretrained(arch, model)
        if on_note:
            on_note(note)
    flips = dataset_name != "mnist"  # a mirrored digit is another symbol; a mirrored shoe is a shoe
    return fit_teacher(model, dataset, epochs=epochs, lr=lr, batch_size=batch_size, label_smoothing=label_smoothing,
                       seed=seed, device=device, flips=flips, on_epoch=on_epoch, on_progress=on_progress)


def fit_teacher(model: nn.Module, dataset: Dataset, *, epochs: int, lr: float, batch_size: int,
                label_smoothing: float = 0.0, seed: int = 0, device: str | torch.device = "cpu", flips: bool = True,
                on_epoch: Callable[[TeacherEpoch], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False,
                on_progress: Callable[[TeacherProgress], None] | None = None) -> tuple[nn.Module, float]:
    """`train_teacher`'s loop on any model and Dataset: the fit split with random shifts (and flips), AdamW +
    OneCycle; `on_epoch` after each epoch with validation and test accuracy. (model on CPU, test accuracy).
    `should_stop()` is asked before every batch; when it says yes, `Stopped` is raised. `on_progress` gets a
    `TeacherProgress` at most every PROGRESS_S seconds of training."""
    device = torch.device(device)
    mixed = device.type == "cuda"  # bf16 autocast + channels_last on GPUs
    model = model.to(device, memory_format=torch.channels_last) if mixed else model.to(device)
    pad = 4 if dataset.image_shape[-1] >= 32 else 2  # ±2 px made the shipped Fashion-MNIST teacher
    fit = dataset.fit_index  # the training set minus the validation split
    images, labels = dataset.train_images[fit].to(device), dataset.train_labels[fit].to(device)
    val_images, val_labels = dataset.train_images[dataset.validation_index], \
        dataset.train_labels[dataset.validation_index]
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    start, acc = time.perf_counter(), 0.0
    total_steps, done, reported = epochs * steps_per_epoch, 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        for first in range(0, len(labels), batch_size):
            index = order[first:first + batch_size]
            if len(index) < 2:  # one image would break BatchNorm; it is reshuffled into the next epoch
                continue
            if should_stop():
                raise Stopped("the teacher's training was stopped")
            batch = augment(images[index], generator, pad=pad, flip=flips)
            with torch.autocast("cuda", torch.bfloat16, enabled=mixed):
                out = model(dataset.normalize(batch))
            loss = F.cross_entropy(out.float(), labels[index], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach()
            done += 1
            if on_progress and time.perf_counter() - reported >= PROGRESS_S:
                reported = time.perf_counter()
                rate = done / (reported - start)  # steps per second so far (its evaluations included)
                on_progress(TeacherProgress(epoch, done, total_steps, rate * batch_size, (total_steps - done) / rate))
        val = predict_logits(model, dataset, val_images, device)
        val_acc = (val.argmax(1) == val_labels).float().mean().item()
        test = predict_logits(model, dataset, dataset.test_images, device)
        acc = (test.argmax(1) == dataset.test_labels).float().mean().item()
        if on_epoch:
            on_epoch(TeacherEpoch(epoch, total_loss.item() / steps_per_epoch, val_acc, acc,
                                  time.perf_counter() - start))
    return model.cpu().eval(), acc
