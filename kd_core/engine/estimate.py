"""A run's training FLOPs estimated before anything is read or downloaded: the CLI's up-front CPU refusal.

`check_cpu_up_front(cfg)` (kd_core.cli.runs, before the data is loaded and any weights are fetched) counts, for a
built-in dataset, every student's training (≈ 3 × forward per image and epoch) and its evaluations (the validation
split, the test set, the live subset), and an outside teacher's fine-tuning (`teacher_epochs`) and logits pass, each
network at the input side it sees (a pretrained network's own, from its pretrained config: no weights needed). Above
CLI_CPU_MAX_TFLOP on a CPU the run is refused in one line with the estimate: the seed notebook's experiment (an
ImageNet ResNet-50 teacher, a ResNet-18 student, 224×224, CIFAR-10) needs thousands of TFLOP, days on a CPU.
`kd_core.engine.budget.check_cpu_budget` is the app's tighter check on a resolved run.
"""

from __future__ import annotations

import json
from pathlib import Path

from kd_core.config import CPU_TFLOP_PER_S, RunConfig, is_outside_student
from kd_core.data.datasets import IMAGE_SHAPES, TRAIN_SET_SIZES, VALIDATION_SIZE
from kd_core.engine.run_data import LIVE_VALIDATION
from kd_core.models import external, students
from kd_core.models import zoo as models

CLI_CPU_MAX_TFLOP = 1000.0  # about 4 hours at the CPU speed measured here (config.CPU_TFLOP_PER_S)
TEST_SET_SIZE = 10_000  # every built-in dataset's


def check_cpu_up_front(cfg: RunConfig, max_tflop: float = CLI_CPU_MAX_TFLOP) -> None:
    """ValueError with the estimate when the run of `cfg` on a CPU needs more than `max_tflop` TFLOP (built-in
    datasets only: a user's data is sized once it is read)."""
    if cfg.data or cfg.dataset not in TRAIN_SET_SIZES:
        return
    needed = estimate_tflop(cfg)
    if needed > max_tflop:
        raise ValueError(f"this run needs about {needed:,.0f} TFLOP, at least {needed / CPU_TFLOP_PER_S / 3600:,.0f} "
                         f"hours on a CPU (over the CLI's CPU limit of {max_tflop:,.0f} TFLOP); run it on a GPU "
                         f"(--device cuda), or pick smaller models, fewer epochs, seeds or images")


def estimate_tflop(cfg: RunConfig) -> float:
    shape, classes = IMAGE_SHAPES[cfg.dataset], 10
    train = TRAIN_SET_SIZES[cfg.dataset]
    fit = train - VALIDATION_SIZE
    labelled = min(cfg.train_size or fit, fit)
    per_seed = (1 + len(cfg.methods))
    student = network_flops(cfg.student, cfg.student_pretrained or students.pretrained(cfg), shape, classes)
    evaluations = LIVE_VALIDATION * (cfg.evaluations + 1) + VALIDATION_SIZE + TEST_SET_SIZE
    flops = per_seed * cfg.repeats * student * (3 * (labelled + cfg.unlabeled) * cfg.epochs + evaluations)
    if cfg.teacher.startswith(("timm:", "torchvision:", "zoo:")):
        arch = cfg.teacher.removeprefix("zoo:")
        teacher = network_flops(arch, cfg.teacher_pretrained, shape, classes, cfg.teacher_image_size)
        flops += teacher * (3 * fit * cfg.teacher_epochs + train + TEST_SET_SIZE)
    return flops / 1e12


def network_flops(spec: str, pretrained: bool, shape: tuple[int, int, int], classes: int, size: int = 0) -> int:
    """Forward FLOPs per image of a freshly built `spec` (no weights) at the side it would see."""
    if not is_outside_student(spec):
        return models.flops_per_sample(models.build(spec, shape, classes), shape)
    source, _, name = spec.partition(":")
    if source == "hf-hub" or (source == "local-dir" and not (Path(name) / "config.json").is_file()):
        return 0  # its architecture is in files not read yet: counted once they are (check_cpu_budget)
    if source == "local-dir":
        config = json.loads((Path(name) / "config.json").read_text())
        spec = "timm:" + config["architecture"]
        size = size or config.get("pretrained_cfg", {}).get("input_size", [0])[-1]
    elif pretrained and not size:
        size = native_size(source, name)
    with models.INIT_LOCK:
        net = external.build(spec, (3 if source == "torchvision" else shape[0],) + shape[1:], classes)
    net.set_preprocessing(0.0, 1.0, 0.0, 1.0, size)
    return models.flops_per_sample(net, (net.data_mean.numel(),) + shape[1:])


def native_size(source: str, name: str) -> int:
    """The input side of a timm or torchvision model's default pretrained weights (from their config alone)."""
    if source == "timm":
        import timm

        return timm.models.get_pretrained_cfg(name).input_size[-1] if timm.is_model(name) else 0
    from torchvision import models as tv_models

    if name not in tv_models.list_models(module=tv_models):
        raise ValueError(f"torchvision has no classification model {name!r}")
    return tv_models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
