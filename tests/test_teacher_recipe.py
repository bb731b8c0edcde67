"""The teacher recipe for a run's own data (kd_core.teacher.training.fit_teacher): mirrored images only where the
validation split says they help, the best epoch kept, training ended by patience, the test set read once."""

from __future__ import annotations

import re

import torch

from kd_core.data.datasets import Dataset
from kd_core.models import zoo as models
from kd_core.teacher.logits import predict_logits
from kd_core.teacher.training import FLIP_CHECK, fit_teacher

FOOTWEAR = (5, 7, 9)  # sandal, sneaker, ankle boot: Fashion-MNIST draws every one with its toe to the left


def mirror_sensitive(fashion, per_class: int = 300, test_per_class: int = 100) -> Dataset:
    """Each footwear class and its mirror image as two classes ("sneaker, toe left" / "sneaker, toe right"): a
    teacher trained on flipped images is taught that the two are the same thing."""
    def split(images, labels, count):
        chosen = []
        for k, label in enumerate(FOOTWEAR):
            shoes = images[labels == label][:count]
            chosen += [(shoes, 2 * k), (shoes.flip(-1), 2 * k + 1)]
        return (torch.cat([x for x, _ in chosen]),
                torch.cat([torch.full((len(x),), y, dtype=torch.int64) for x, y in chosen]))

    train = split(fashion.train_images, fashion.train_labels, per_class)
    test = split(fashion.test_images, fashion.test_labels, test_per_class)
    names = tuple(f"{fashion.classes[label]}, toe {side}" for label in FOOTWEAR for side in ("left", "right"))
    return Dataset("mirrored-footwear", *train, *test, names, fashion.mean, fashion.std, source="generated")


def test_a_mirror_sensitive_set_is_trained_without_flips(fashion):
    data = mirror_sensitive(fashion)
    torch.manual_seed(0)
    model = models.build("cnn-tiny", data.image_shape, data.num_classes)
    notes, epochs = [], []
    model, acc = fit_teacher(model, data, epochs=3, lr=3e-3, batch_size=64, flips=FLIP_CHECK, on_epoch=epochs.append,
                             on_note=notes.append)
    flip_note = next(note for note in notes if note.startswith("flips:"))
    assert flip_note.startswith("flips: off (checked on the validation split after one epoch: ")
    with_flips, without = (float(x) for x in re.findall(r"([\d.]+)% with(?:out)?\b", flip_note))
    assert with_flips < without  # the check saw it: flipped training confuses each shoe with its mirror image
    assert [e.epoch for e in epochs] == [1, 2, 3] and all(e.test_acc is None for e in epochs)  # test read once
    assert acc > 0.7  # the six classes (chance 1/6) are told apart, mirror images included


def test_the_best_epoch_by_validation_is_kept_and_patience_ends_training(fashion):
    data = mirror_sensitive(fashion, per_class=100, test_per_class=20)
    torch.manual_seed(0)
    model = models.build("cnn-tiny", data.image_shape, data.num_classes)
    notes, epochs = [], []
    # a learning rate far too high: validation accuracy soon stops improving, and patience 1 ends the run early
    model, _ = fit_teacher(model, data, epochs=12, lr=0.5, batch_size=32, flips=False, patience=1,
                           on_epoch=epochs.append, on_note=notes.append)
    val = data.validation_index
    kept = (predict_logits(model, data, data.train_images[val], "cpu").argmax(1) == data.train_labels[val])
    assert kept.float().mean().item() == max(e.val_acc for e in epochs)
    assert all(p.is_contiguous() for p in model.parameters())  # trained channels_last, given back as it came
    assert len(epochs) < 12 and any("did not improve for " in note for note in notes), notes


def test_a_teacher_s_images_are_resized_once_as_it_would_resize_them(fashion, monkeypatch):
    from kd_core.models import external
    from kd_core.teacher import training

    images = fashion.train_images[:64]
    once = training.resized(images, 32)
    per_batch = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    assert once.dtype == torch.uint8 and once.shape == (64, 1, 32, 32)
    assert (once.float() - per_batch).abs().max() <= 0.5  # the same pixels, rounded to uint8
    teacher = external.Preprocessed(models.build("cnn-tiny", (1, 32, 32), 10), 1).set_preprocessing(
        fashion.mean, fashion.std, fashion.mean, fashion.std, 32)
    assert training.resize_once_size(teacher, images) == 32
    assert training.resize_once_size(models.build("cnn-tiny", (1, 28, 28), 10), images) == 0  # resizes nothing
    monkeypatch.setattr(training, "RESIZE_ONCE_BYTES", 64 * 32 * 32 - 1)  # too big to hold: resized per batch
    assert training.resize_once_size(teacher, images) == 0
