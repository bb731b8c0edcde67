"""Where a student comes from: the zoo, or the sources a teacher may come from, pretrained or not.

`cfg.student` is a zoo name (kd_core.models.zoo.STUDENTS), `timm:NAME` or `torchvision:NAME` (from scratch, or with
`cfg.student_pretrained` their pretrained weights), `hf-hub:ORG/NAME` (a timm model on the Hub) or `local-dir:PATH`
(the folder `timm.models.save_for_hf` writes). A pretrained student keeps its body and gets a new head for the
data's classes, drawn from the seed; it sits behind its own preprocessing (`external.Preprocessed`: the run's images
resized to its input size and normalised with its mean and std, from its pretrained config), as a teacher does.
`initial(cfg, dataset, seeds)` gives one such student per seed: the engine copies seed i's into each of its roles,
so the CE and the KD student start from the same weights. Weights that cannot be had are one ValueError within
seconds (`fetch`, kd_core.models.weights), never a silent random start.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from kd_core.models import external, weights
from kd_core.models import zoo as models


def pretrained(cfg) -> bool:
    """Whether the run's students start from trained weights of an outside source (Hub and folders always do)."""
    return bool(cfg.student_pretrained) or cfg.student.startswith(("hf-hub:", "local-dir:"))


def fetch(cfg) -> None:
    """Bring the weights the students need into the local caches, or one ValueError within seconds."""
    source, _, name = cfg.student.partition(":")
    if cfg.pretrained:  # the zoo's ResNets
        weights.torchvision_weights(cfg.student.split("-")[0])
    elif source == "hf-hub":
        weights.hub_folder(name)
    elif source == "local-dir":
        _folder_config(Path(name))
    elif source == "timm" and cfg.student_pretrained:
        weights.hub_file(weights.timm_hub_id(name))
    elif source == "torchvision" and cfg.student_pretrained:
        weights.torchvision_weights(name)


def arch(cfg) -> str:
    """The architecture a student checkpoint records (what `models.build` rebuilds): hf-hub: and local-dir:
    students are timm models, recorded as timm:ARCH."""
    source, _, name = cfg.student.partition(":")
    if source == "hf-hub":
        return "timm:" + _folder_config(weights.hub_folder(name))["architecture"]
    if source == "local-dir":
        return "timm:" + _folder_config(Path(name))["architecture"]
    return cfg.student


def initial(cfg, image_shape: tuple[int, int, int], mean, std, num_classes: int,
            seeds: tuple[int, ...]) -> tuple[list[nn.Module], tuple[str, ...]]:
    """(one student per seed, notes). Zoo students and from-scratch outside ones are built from the seed; a
    pretrained student is its pretrained body (the same for every seed) with a head drawn from the seed."""
    if not pretrained(cfg):
        built = [fresh(cfg.student, image_shape, num_classes, seed) for seed in seeds]
        notes = tuple(models.load_pretrained(cfg.student, s) for s in built)[:1] if cfg.pretrained else ()
        return built, notes
    net, size, net_mean, net_std = _pretrained_network(cfg.student, image_shape[0])
    students = []
    for seed in seeds:
        with models.INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body = new_head(copy.deepcopy(net), num_classes)
        students.append(external.Preprocessed(body, image_shape[0]).set_preprocessing(
            mean, std, net_mean, net_std, size))
    params = models.describe(students[0])["params"]
    note = (f"student {cfg.student}: pretrained body, a new {num_classes}-class head; sees the images at "
            f"{size}×{size}, {params / 1e6:.1f}M parameters")
    return students, (note,)


def fresh(name: str, image_shape, num_classes: int, seed: int) -> nn.Module:
    """A student initialised from `seed`, leaving the global RNG as it was (under models.INIT_LOCK: two runs
    starting at once would otherwise draw from each other's seeded generator)."""
    with models.INIT_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return models.build(name, tuple(image_shape), num_classes)


def new_head(net: nn.Module, num_classes: int) -> nn.Module:
    """`net` with a freshly initialised final layer for `num_classes` (timm's reset_classifier, else its last
    Linear replaced)."""
    if hasattr(net, "reset_classifier"):
        net.reset_classifier(num_classes)
        return net
    last = models.classifier(net)
    for module in net.modules():
        for child_name, child in module.named_children():
            if child is last:
                setattr(module, child_name, nn.Linear(last.in_features, num_classes))
    return net


def _pretrained_network(spec: str, channels: int) -> tuple[nn.Module, int, tuple, tuple]:
    """(bare pretrained network for `channels`-channel images, its input side, mean, std)."""
    source, _, name = spec.partition(":")
    if source == "torchvision":
        from torchvision import models as tv_models

        external.network(spec, channels, 2)  # the name and the channels, before any download
        tv_weights = weights.torchvision_weights(name)
        preset = tv_weights.transforms()
        return (tv_models.get_model(name, weights=tv_weights), preset.crop_size[0], tuple(preset.mean),
                tuple(preset.std))
    import timm

    if source == "timm":
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r} (see timm.list_models())")
        file = weights.hub_file(weights.timm_hub_id(name))
        net = timm.create_model(name, pretrained=True, in_chans=channels, pretrained_cfg_overlay={"file": str(file)})
    else:
        folder = weights.hub_folder(name) if source == "hf-hub" else Path(name)
        _folder_config(folder)
        net = timm.create_model(f"local-dir:{folder}", pretrained=True, in_chans=channels)
    config = net.pretrained_cfg
    mean, std = tuple(config["mean"]), tuple(config["std"])
    if len(mean) != channels:  # timm adapted the first layer to the data's channels: average its statistics
        mean, std = (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
    return net, int(config["input_size"][-1]), mean, std


def _folder_config(folder: Path) -> dict:
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a folder written by timm's save_for_hf")
    return json.loads((folder / "config.json").read_text())
