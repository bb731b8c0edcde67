"""Where a teacher comes from: one resolver from `--teacher` to a kd_core checkpoint the engine can use.

`cfg.teacher` may be a kd_core checkpoint (a path, or "default" for the shipped one), `timm:NAME` (a timm
architecture, from scratch or with `cfg.teacher_pretrained` its pretrained weights), `hf-hub:ORG/NAME` (a timm
model on the Hugging Face Hub), `local-dir:PATH` (the folder `timm.models.save_for_hf` writes) or
`torchvision:NAME` (with `cfg.teacher_pretrained`, its ImageNet weights). `resolve` (called by kd_core.run.prepare,
in a training slot) turns any of them into a checkpoint (saved under `$KD_CACHE_DIR/teachers/`, keyed by the source,
the data's fingerprint and the preprocessing): a `Preprocessed` network (kd_core.models.external) that resizes the
run's images to the teacher's size (`cfg.teacher_image_size`, else its pretrained config's, else the student's) and
normalises them its way. With `cfg.teacher_epochs` it is first trained on the run's training split (its head
replaced to the data's classes when they differ) and its validation accuracy reported. Every teacher is then
checked against the data (channels, classes, input size) and must beat chance on the validation split, else one
ValueError. The run then reads the checkpoint's path, hash and metadata (kd_core.run.Teacher).
Downloads fail within OFFLINE_CHECK_S seconds when the host cannot be reached (kd_core.models.weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kd_core.data.datasets import Dataset
from kd_core.models import checkpoints, external, weights
from kd_core.models import zoo as models
from kd_core.models.students import new_head
from kd_core.teacher.logits import cache_dir, teacher_logits
from kd_core.teacher.training import RECIPE, TeacherEpoch, TeacherProgress, TeacherRecipe, fit_teacher

SOURCES = ("timm:", "hf-hub:", "local-dir:", "torchvision:", "zoo:")
OFFLINE_CHECK_S = weights.OFFLINE_CHECK_S


@dataclass(frozen=True)
class Resolved:
    path: Path  # the kd_core checkpoint the run uses
    id: str  # what the user asked for (cfg.teacher)
    val_acc: float  # on the validation split
    train_seconds: float | None  # when it was trained first (this run, or the cached run that made it)
    notes: tuple[str, ...] = ()


def needs_preparing(cfg) -> bool:
    """Whether the engine must call `prepare` first (an outside teacher, a teacher to train, or user data)."""
    return bool(cfg.data or cfg.teacher_epochs or cfg.teacher.startswith(SOURCES))


def resolve(cfg, dataset: Dataset, device: str | torch.device = "cpu",
            on_epoch: Callable[[TeacherEpoch | TeacherProgress], None] | None = None, recipe: TeacherRecipe = RECIPE,
            on_logits: Callable[[int, int], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> Resolved:
    """The teacher of `cfg` for `dataset` as a checkpoint (trained first with cfg.teacher_epochs: `on_epoch` gets
    each TeacherEpoch and, between them, TeacherProgress), checked against the data; `on_logits(done, total)`
    follows its logits pass; `should_stop()` is asked at every batch (`Stopped`)."""
    with models.INIT_LOCK, torch.random.fork_rng(devices=[]):  # a fresh network's weights follow cfg.seed
        torch.manual_seed(cfg.seed)
        net, native = (_outside_network if cfg.teacher.startswith(SOURCES) else _checkpoint_network)(cfg, dataset)
    notes: tuple[str, ...] = ()
    if net is None:  # a kd_core checkpoint used as it is
        path, seconds = native, None
    else:
        path, seconds, notes = _materialise(cfg, dataset, net, native, device, on_epoch, recipe, should_stop)
    meta = check_fits(path, dataset)
    if net is None:
        external.input_check(checkpoints.load_model(path)[0], dataset.image_shape, f"teacher {path.name}")
    if meta.get("classes") and list(meta["classes"]) != list(dataset.classes):
        notes += (f"the teacher's classes ({', '.join(meta['classes'])}) are not named as the data's "
                  f"({', '.join(dataset.classes)}): its outputs are read in that order",)
    acc = validation_accuracy(path, dataset, device, on_logits)
    check_better_than_chance(acc, dataset, cfg.teacher, cfg.teacher_epochs)
    return Resolved(path, cfg.teacher, acc, seconds if seconds is not None else meta.get("teacher_train_seconds"),
                    notes)


# ------------------------------------------------------------------------------------------ sources

def _checkpoint_network(cfg, dataset: Dataset):
    """(None, path) for a checkpoint used as it is; (network to train, its preprocessing) with teacher_epochs."""
    path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    if not cfg.teacher_epochs:
        return None, path
    model, meta = checkpoints.load_model(path)
    if meta["in_shape"][0] != dataset.image_shape[0]:
        check_fits(path, dataset)  # the channel message
    if meta["num_classes"] != dataset.num_classes:
        model = _with_head(meta["arch"], model, meta["in_shape"], dataset.num_classes)
    mean, std = dataset.mean, dataset.std  # a zoo model reads the run's normalised images directly
    return model, {"arch": meta["arch"], "size": 0, "mean": mean, "std": std, "bare": True}


def _with_head(arch: str, model: nn.Module, in_shape, num_classes: int) -> nn.Module:
    """`arch` for `num_classes` with `model`'s weights everywhere but the layers whose shapes changed."""
    fresh = models.build(arch, tuple(in_shape), num_classes)
    own = fresh.state_dict()
    kept = {k: v for k, v in model.state_dict().items() if k in own and own[k].shape == v.shape}
    fresh.load_state_dict({**own, **kept})
    return fresh


def _outside_network(cfg, dataset: Dataset):
    """(bare network, its preprocessing {arch, size, mean, std}) for a timm / Hub / local-dir / torchvision id."""
    source, _, name = cfg.teacher.partition(":")
    channels, classes = dataset.image_shape[0], dataset.num_classes
    if source == "zoo":  # a fresh zoo architecture: reads the run's normalised images directly
        net = models.build(name, dataset.image_shape, classes)
        return net, {"arch": name, "size": 0, "mean": dataset.mean, "std": dataset.std, "bare": True}
    if source == "torchvision":
        return _torchvision_network(name, cfg, dataset)
    import timm

    if source == "timm":
        options = {}
        if cfg.teacher_pretrained:
            options = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(_hub_file(_timm_hub_id(name)))}}
        net = external.network(cfg.teacher, channels, classes, **options)
        arch = cfg.teacher
    else:
        folder = _hub_folder(name) if source == "hf-hub" else Path(name)
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} has no config.json: not a folder written by timm's save_for_hf")
        net = timm.create_model(f"local-dir:{folder}", pretrained=True, in_chans=channels)
        arch = "timm:" + json.loads((folder / "config.json").read_text())["architecture"]
        if net.num_classes != classes:
            if not cfg.teacher_epochs:
                raise ValueError(f"teacher {cfg.teacher} predicts {net.num_classes} classes but the data has "
                                 f"{classes}; pass --teacher-epochs N to train a new head on the data")
            net.reset_classifier(classes)
    pretrained = cfg.teacher_pretrained or source != "timm"
    config = net.pretrained_cfg if pretrained else {}
    size = (config["input_size"][-1] if pretrained else 0)
    mean, std = (config["mean"], config["std"]) if pretrained else (dataset.mean, dataset.std)
    if len(mean) != channels:  # timm adapted the first layer to the data's channels: average its statistics
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return net, {"arch": arch, "size": size, "mean": tuple(mean), "std": tuple(std)}


def _torchvision_network(name: str, cfg, dataset: Dataset):
    from torchvision import models as tv_models

    if not cfg.teacher_pretrained:
        net = external.network(cfg.teacher, dataset.image_shape[0], dataset.num_classes)
        return net, {"arch": cfg.teacher, "size": 0, "mean": dataset.mean, "std": dataset.std}
    external.network(cfg.teacher, dataset.image_shape[0], 2)  # the name and the channels, before a download
    tv_weights = _torchvision_weights(name)
    net = tv_models.get_model(name, weights=tv_weights)
    preset = tv_weights.transforms()
    if len(tv_weights.meta["categories"]) != dataset.num_classes:
        if not cfg.teacher_epochs:
            raise ValueError(f"teacher torchvision:{name} predicts {len(tv_weights.meta['categories'])} classes but "
                             f"the data has {dataset.num_classes}; pass --teacher-epochs N to train a new head")
        net = new_head(net, dataset.num_classes)  # a torchvision network: its last Linear replaced
    return net, {"arch": cfg.teacher, "size": preset.crop_size[0], "mean": tuple(preset.mean),
                 "std": tuple(preset.std)}


# ------------------------------------------------------------------------------------------ downloads

def fetch_weights(cfg) -> None:
    """Bring the weights a Hub or pretrained teacher needs into the local caches (or fail in one line, fast)."""
    source, _, name = cfg.teacher.partition(":")
    if source == "hf-hub":
        _hub_folder(name)
    elif source == "timm" and cfg.teacher_pretrained:
        _hub_file(_timm_hub_id(name))
    elif source == "torchvision" and cfg.teacher_pretrained:
        _torchvision_weights(name)


_timm_hub_id, _torchvision_weights = weights.timm_hub_id, weights.torchvision_weights
_hub_folder, _hub_file, _reachable_or_cached = weights.hub_folder, weights.hub_file, weights.reachable_or_cached


# ------------------------------------------------------------------------------------------ checkpoint

def _materialise(cfg, dataset: Dataset, net: nn.Module, native: dict, device, on_epoch, recipe: TeacherRecipe,
                 should_stop: Callable[[], bool] = lambda: False):
    """Save `net` (trained first with cfg.teacher_epochs) as a checkpoint keyed by everything it depends on;
    a checkpoint already made under the same key is reused. (path, training seconds or None, notes)."""
    size = cfg.teacher_image_size or native["size"] or dataset.image_shape[-1]
    key = _key(cfg, dataset, native, size, recipe)
    path = cache_dir() / "teachers" / f"{cfg.teacher.replace('/', '_').replace(':', '-')[-60:]}-{key}.safetensors"
    if path.is_file():
        made = checkpoints.read_metadata(path).get("teacher_recipe_notes") or []
        return path, None, (*made, f"reusing the teacher prepared earlier: {path}")
    model = net if native.get("bare") else external.Preprocessed(net, dataset.image_shape[0]).set_preprocessing(
        dataset.mean, dataset.std, native["mean"], native["std"], size)
    external.input_check(model, dataset.image_shape, f"teacher {cfg.teacher} at {size}×{size}")
    meta = {"arch": native["arch"], "dataset": dataset.name, "in_shape": list(dataset.image_shape),
            "num_classes": dataset.num_classes, "classes": list(dataset.classes), "mean": list(dataset.mean),
            "std": list(dataset.std), "teacher": cfg.teacher, "teacher_image_size": size,
            "teacher_mean": list(native["mean"]), "teacher_std": list(native["std"]), "test_acc": None}
    seconds, notes = None, []
    if cfg.teacher_epochs:
        start = time.perf_counter()
        flips = {"on": True, "off": False}.get(recipe.flips, recipe.flips)
        model, acc = fit_teacher(model, dataset, epochs=cfg.teacher_epochs, lr=recipe.lr, batch_size=recipe.batch_size,
                                 label_smoothing=recipe.label_smoothing, seed=cfg.seed, device=device, flips=flips,
                                 patience=recipe.patience, on_epoch=on_epoch, should_stop=should_stop,
                                 on_progress=on_epoch, on_note=notes.append)
        seconds = time.perf_counter() - start
        meta.update(test_acc=round(acc, 4), teacher_epochs=cfg.teacher_epochs,
                    teacher_train_seconds=round(seconds, 1), teacher_recipe_notes=notes)
    checkpoints.save_model(path, model.cpu().eval(), meta)
    return path, seconds, (*notes, f"teacher saved to {path}")


def _key(cfg, dataset: Dataset, native: dict, size: int, recipe: TeacherRecipe) -> str:
    from kd_core.data.sources import fingerprint

    parts = {"teacher": cfg.teacher, "pretrained": cfg.teacher_pretrained, "epochs": cfg.teacher_epochs,
             "seed": cfg.seed if cfg.teacher_epochs else None, "data": fingerprint(dataset),
             "recipe": [recipe.lr, recipe.batch_size, recipe.label_smoothing, recipe.flips, recipe.patience, 2]
             if cfg.teacher_epochs else None,  # 2: the recipe's version (the best epoch kept, flips checked)
             "mean": list(dataset.mean), "std": list(dataset.std), "size": size,
             "native": {k: list(v) if isinstance(v, tuple) else v for k, v in native.items()}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def check_fits(path: Path, dataset: Dataset) -> dict:
    """The teacher checkpoint's metadata if its channels and classes fit `dataset`, else one ValueError."""
    meta = checkpoints.read_metadata(path)
    shape, colours = meta.get("in_shape"), {1: "grey", 3: "RGB"}
    if not isinstance(shape, list) or len(shape) != 3 or "num_classes" not in meta:
        raise ValueError(f"teacher {path} does not record its in_shape and num_classes")
    if shape[0] != dataset.image_shape[0]:
        raise ValueError(f"teacher {path.name} takes {colours.get(shape[0], shape[0])} images but the data is "
                         f"{colours.get(dataset.image_shape[0], dataset.image_shape[0])}; use a teacher made for "
                         f"it, or timm:NAME with --teacher-epochs")
    if meta["num_classes"] != dataset.num_classes:
        raise ValueError(f"teacher {path.name} predicts {meta['num_classes']} classes but the data has "
                         f"{dataset.num_classes}; pass --teacher-epochs N to train a new head on the data")
    return meta


def validation_accuracy(path: Path, dataset: Dataset, device, on_logits=None) -> float:
    """The teacher's accuracy on the validation split, from its logits (computed now and cached for the run)."""
    logits = teacher_logits(path, dataset, device, on_progress=on_logits)
    val = dataset.validation_index
    return (logits.train[val].argmax(1) == dataset.train_labels[val]).float().mean().item()


def check_better_than_chance(acc: float, dataset: Dataset, teacher: str, epochs: int = 0) -> None:
    """ValueError when `acc` is within two standard errors of always guessing the commonest class."""
    labels = dataset.train_labels[dataset.validation_index]
    chance = torch.bincount(labels).max().item() / len(labels)
    bar = chance + 2 * math.sqrt(chance * (1 - chance) / len(labels))
    if acc <= bar:
        advice = (f"after {epochs} epochs of training; train it longer or pick another architecture" if epochs
                  else "train it first with --teacher-epochs N")
        raise ValueError(f"teacher {teacher} is no better than chance on the validation split ({acc:.1%}, "
                         f"chance {chance:.1%}); {advice}")
