"""Training a teacher: the recipe (`TeacherRecipe`, the shipped teacher's defaults), `train_teacher` for the CLI's
`train-teacher`, and `fit_teacher`, the loop any teacher is trained with (the CLI's, and a run's own-data teacher).

The loop reports each epoch as a `TeacherEpoch` event (the engine's vocabulary, kd_core.engine.events) and asks
`should_stop()` before every batch: a visitor who presses Stop or closes the tab ends the teacher's training at the
next batch, exactly as the students' (`Stopped` is raised).
"""

from __future__ import annotations

import copy
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
    # a teacher trained on a run's own data (kd_core.teacher.sources): mirrored images only where validation says
    # they help (FLIP_CHECK), and training ends when validation accuracy has not improved for `patience` epochs
    flips: str = "check"
    patience: int = 3

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
        _check_choice("flips", self.flips, ("check", "on", "off"))
        _check_int("patience", self.patience, low=0, high=MAX_TEACHER_EPOCHS)
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
    test_acc: float | None  # None: the test set is read once, after the last epoch (fit_teacher's result)
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


FLIP_CHECK = "check"  # fit_teacher(flips=...): train the first epoch with and without flips, keep the better
RESIZE_ONCE_BYTES = 2**30  # a teacher's training images are resized once when the resized copy fits in this


def fit_teacher(model: nn.Module, dataset: Dataset, *, epochs: int, lr: float, batch_size: int,
                label_smoothing: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                flips: bool | str = True, patience: int = 0,
                on_epoch: Callable[[TeacherEpoch], None] | None = None,
                should_stop: Callable[[], bool] = lambda: False,
                on_progress: Callable[[TeacherProgress], None] | None = None,
                on_note: Callable[[str], None] | None = None) -> tuple[nn.Module, float]:
    """`train_teacher`'s loop on any model and Dataset: the fit split with random shifts (and flips), AdamW +
    OneCycle; `on_epoch` after each epoch with validation accuracy. Returns (the best epoch's model by validation
    accuracy, on CPU, its test accuracy): the test set is read once, at the end.

    `flips=FLIP_CHECK` mirrors images only where validation says it helps: the first epoch is trained twice from
    the same start, with and without flips, and flips are kept only when their validation accuracy is higher by
    more than one standard error (a mirrored digit or X-ray side is another class; ties keep the safe choice, no
    flips); a 1-epoch budget has no room for the check and trains without. `patience` > 0 ends training, once
    half the epochs are done, when validation accuracy (ties broken by validation loss) has not improved for that
    many epochs. `on_note` gets one line per decision.
    `should_stop()` is asked before every batch; when it says yes, `Stopped` is raised. `on_progress` gets a
    `TeacherProgress` at most every PROGRESS_S seconds of training."""
    device = torch.device(device)
    mixed = device.type == "cuda"  # bf16 autocast on GPUs
    model = model.to(device, memory_format=torch.channels_last)  # convolutions' fast layout, on CPUs too (~5 %)
    fit = dataset.fit_index  # the training set minus the validation split
    val_labels = dataset.train_labels[dataset.validation_index]
    images, labels = dataset.train_images[fit], dataset.train_labels[fit].to(device)
    val_images = dataset.train_images[dataset.validation_index]
    side = images.shape[-1]
    size = resize_once_size(model, images)  # the teacher's own size: resized here once, not in every batch
    if size:
        images, val_images = resized(images, size), resized(val_images, size)
    images = images.to(device)
    pad = 4 if side >= 32 else 2  # ±2 px made the shipped Fashion-MNIST teacher (in the data's pixels)
    pad = round(pad * (size or side) / side)
    checking = flips == FLIP_CHECK and epochs > 1
    if flips == FLIP_CHECK and not checking and on_note:
        on_note("flips: off (one teacher epoch leaves no room to check them on validation)")
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, epochs=epochs,
                                                   steps_per_epoch=steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    clock = {"start": time.perf_counter(), "reported": time.perf_counter(), "done": 0,
             "total": (epochs + checking) * steps_per_epoch}

    def train_epoch(epoch: int, flip: bool) -> float:
        model.train()
        order = torch.randperm(len(labels), generator=generator).to(device)
        total_loss = torch.zeros((), device=device)
        for first in range(0, len(labels), batch_size):
            index = order[first:first + batch_size]
            if len(index) < 2:  # one image would break BatchNorm; it is reshuffled into the next epoch
                continue
            if should_stop():
                raise Stopped("the teacher's training was stopped")
            batch = augment(images[index], generator, pad=pad, flip=flip)
            with torch.autocast("cuda", torch.bfloat16, enabled=mixed):
                out = model(dataset.normalize(batch).contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(out.float(), labels[index], label_smoothing=label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.detach()
            clock["done"] += 1
            if on_progress and time.perf_counter() - clock["reported"] >= PROGRESS_S:
                clock["reported"] = time.perf_counter()
                rate = clock["done"] / (clock["reported"] - clock["start"])  # steps/s so far (evaluations included)
                on_progress(TeacherProgress(epoch, clock["done"], clock["total"], rate * batch_size,
                                            (clock["total"] - clock["done"]) / rate))
        return total_loss.item() / steps_per_epoch

    def validate() -> tuple[float, float]:
        """(validation accuracy, its cross-entropy): the loss tells apart epochs a small split scores alike."""
        logits = predict_logits(model, dataset, val_images, device)
        return (logits.argmax(1) == val_labels).float().mean().item(), F.cross_entropy(logits, val_labels).item()

    first_epoch = None
    if checking:
        before = _state(model, optimizer, schedule, generator)
        with_flips = (train_epoch(1, True), validate(), _state(model, optimizer, schedule, generator))
        _restore(before, model, optimizer, schedule, generator)
        without = (train_epoch(1, False), validate())
        accuracy = without[1][0]
        margin = math.sqrt(max(accuracy * (1 - accuracy), 1e-4) / len(val_labels))  # one standard error
        flips = with_flips[1][0] > accuracy + margin
        if flips:
            _restore(with_flips[2], model, optimizer, schedule, generator)
        first_epoch = with_flips[:2] if flips else without
        if on_note:
            on_note(f"flips: {'on' if flips else 'off'} (checked on the validation split after one epoch: "
                    f"{with_flips[1][0]:.1%} with mirrored images, {accuracy:.1%} without)")
    best, best_score, waited = None, (-1.0, 0.0), 0
    for epoch in range(1, epochs + 1):
        loss, (val_acc, val_loss) = first_epoch if epoch == 1 and first_epoch else (train_epoch(epoch, bool(flips)),
                                                                                    validate())
        if on_epoch:
            on_epoch(TeacherEpoch(epoch, loss, val_acc, None, time.perf_counter() - clock["start"]))
        if (val_acc, -val_loss) > best_score:  # accuracy first; on a tie, the lower validation loss
            best, best_score, waited = {k: v.detach().clone() for k, v in model.state_dict().items()}, \
                (val_acc, -val_loss), 0
        else:
            waited += 1
        # not in the first half: OneCycle's learning rate is still high there, and accuracy wanders
        if patience and waited >= patience and 2 * epoch > epochs and epoch < epochs:
            if on_note:
                on_note(f"teacher: validation accuracy did not improve for {waited} epochs; stopped after epoch "
                        f"{epoch} of {epochs}, keeping epoch {epoch - waited} ({best_score[0]:.1%})")
            break
    model.load_state_dict(best)
    test = predict_logits(model, dataset, dataset.test_images, device)
    acc = (test.argmax(1) == dataset.test_labels).float().mean().item()
    return model.cpu().to(memory_format=torch.contiguous_format).eval(), acc  # as it came: savers want contiguous


def resize_once_size(model: nn.Module, images: torch.Tensor) -> int:
    """The side a Preprocessed teacher resizes `images` to, when resizing them all once fits RESIZE_ONCE_BYTES;
    else 0 (the teacher resizes each batch itself)."""
    from kd_core.models.external import Preprocessed

    size = int(model.size) if isinstance(model, Preprocessed) else 0
    if not size or size == images.shape[-1] or len(images) * images.shape[1] * size * size > RESIZE_ONCE_BYTES:
        return 0
    return size


def resized(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """uint8 [N, C, size, size]: bilinear, as `Preprocessed` resizes (rounded back to uint8)."""
    return torch.cat([F.interpolate(images[i:i + chunk].float(), size=(size, size), mode="bilinear",
                                    align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                      for i in range(0, len(images), chunk)]) if len(images) else images


def _state(model: nn.Module, optimizer, schedule, generator: torch.Generator) -> tuple:
    return ({k: v.detach().clone() for k, v in model.state_dict().items()}, copy.deepcopy(optimizer.state_dict()),
            copy.deepcopy(schedule.state_dict()), generator.get_state())


def _restore(state: tuple, model: nn.Module, optimizer, schedule, generator: torch.Generator) -> None:
    model.load_state_dict(state[0])
    optimizer.load_state_dict(copy.deepcopy(state[1]))
    schedule.load_state_dict(state[2])
    generator.set_state(state[3])
