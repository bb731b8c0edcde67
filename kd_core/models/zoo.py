"""The model zoo, chosen by name: teachers and students for 28×28 grey or 32×32 colour images.

Every builder takes the dataset's image shape `(C, H, W)` and number of classes, so the same names
work on Fashion-MNIST, MNIST and CIFAR-10. `TEACHERS` and `STUDENTS` are plain dicts of builders;
`build(name, …)` looks a name up in both and raises a `ValueError` listing the valid ones.
`describe(model)` gives the parameter count and the size in bytes shown in the UI.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

Shape = tuple[int, int, int]


def mlp(in_shape: Shape, num_classes: int, hidden: tuple[int, ...], *,
        batchnorm: bool = False, dropout: tuple[float, ...] = ()) -> nn.Sequential:
    """Flatten -> [Linear -> (BatchNorm) -> ReLU -> (Dropout)] per hidden width -> Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_shape[0] * in_shape[1] * in_shape[2]
    for i, out in enumerate(hidden):
        layers.append(nn.Linear(width, out))
        if batchnorm:
            layers.append(nn.BatchNorm1d(out))
        layers.append(nn.ReLU())
        if i < len(dropout) and dropout[i] > 0:
            layers.append(nn.Dropout(dropout[i]))
        width = out
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def cnn(in_shape: Shape, num_classes: int, widths: tuple[int, ...], *,
        pool_after: tuple[int, ...], dropout: float = 0.0) -> nn.Sequential:
    """3×3 conv + BN + ReLU blocks, 2×2 max-pool after the listed blocks, global average pool, Linear."""
    layers: list[nn.Module] = []
    c_in = in_shape[0]
    for i, width in enumerate(widths):
        layers += conv_bn(c_in, width)
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(c_in, num_classes))
    return nn.Sequential(*layers)


def resnet(depth: int, in_shape: Shape, num_classes: int, *, cifar_stem: bool) -> nn.Module:
    """torchvision's ResNet-18/50. `cifar_stem`: 3×3 stride-1 first conv and no max-pool, the usual
    CIFAR variant for 32×32 inputs; otherwise the ImageNet stem behind a resize to 224×224 (the seed's)."""
    from torchvision.models import resnet18, resnet50  # deferred: torchvision is slow to import

    model = {18: resnet18, 50: resnet50}[depth](weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(in_shape[0], 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model
    if in_shape[0] != 3:
        model.conv1 = nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False)
    return nn.Sequential(nn.Upsample(size=(224, 224), mode="bilinear", align_corners=False), model)


def load_pretrained(name: str, model: nn.Module) -> str:
    """Copy torchvision's ImageNet weights into `model`'s body; return what happened.

    The final layer (and, for a CIFAR stem, the first conv) keep their fresh initialisation. When the weights
    cannot be had (offline, say), a ValueError says so within seconds (kd_core.models.weights): a run asked to
    start pretrained never starts from random initialisation instead.
    """
    from kd_core.models import weights

    if name not in PRETRAINED:
        raise ValueError(f"{name} has no ImageNet weights; only {', '.join(PRETRAINED)} do")
    state = weights.torchvision_weights(name.split("-")[0]).get_state_dict(progress=False)
    body = model[1] if isinstance(model, nn.Sequential) else model
    own = body.state_dict()
    usable = {k: v for k, v in state.items()
              if k in own and own[k].shape == v.shape and not k.startswith("fc.")}
    body.load_state_dict(usable, strict=False)
    return f"loaded ImageNet weights for {len(usable)} of {len(own)} tensors of {name}"


Builder = Callable[[Shape, int], nn.Module]

TEACHERS: dict[str, Builder] = {
    # the seed script's teacher: 784 -> 2048 -> 1024 -> 512 -> 10 with BatchNorm and dropout
    "mlp-teacher": lambda shape, k: mlp(shape, k, (2048, 1024, 512), batchnorm=True,
                                        dropout=(0.3, 0.3, 0.2)),
    # four conv blocks, 28 -> 14 -> 7 -> 7 -> global pool; 0.39M params, 44 MFLOP per image
    "cnn-teacher": lambda shape, k: cnn(shape, k, (32, 64, 128, 256), pool_after=(0, 1), dropout=0.2),
    # CIFAR-10 track (GPU-sized): ResNet-50 with a 3×3 stem for 32×32 inputs, or the seed's 224 resize
    "resnet50-cifar": lambda shape, k: resnet(50, shape, k, cifar_stem=True),
    "resnet50": lambda shape, k: resnet(50, shape, k, cifar_stem=False),
}

STUDENTS: dict[str, Builder] = {
    "mlp-tiny": lambda shape, k: mlp(shape, k, (32,)),  # 784 -> 32 -> 10, ~25k params
    "mlp-small": lambda shape, k: mlp(shape, k, (128,)),  # 784 -> 128 -> 10, ~0.1M params
    "mlp-medium": lambda shape, k: mlp(shape, k, (256, 128)),  # 784 -> 256 -> 128 -> 10, ~0.24M
    "cnn-tiny": lambda shape, k: cnn(shape, k, (8, 16, 32), pool_after=(0, 1)),  # ~6k params
    "resnet18-cifar": lambda shape, k: resnet(18, shape, k, cifar_stem=True),  # 11.2M params
    "resnet18": lambda shape, k: resnet(18, shape, k, cifar_stem=False),  # ImageNet stem, 224 resize
}
SMALL_STUDENTS = ("mlp-tiny", "mlp-small", "mlp-medium", "cnn-tiny")  # fit a CPU demo
PRETRAINED = ("resnet18-cifar", "resnet18", "resnet50-cifar", "resnet50")  # torchvision has ImageNet weights


# layers initialise from torch's one global generator. Every build holds this lock, so that a seeded build
# (engine.new_student: seed, then build, under the lock) never sees another thread's build draw in between: the
# app's CPU-budget check and checkpoint loading build models too (measured without it: 18 of 200 seeded builds
# differed from the seed's weights while another thread built teachers; tests/test_engine.py)
INIT_LOCK = threading.RLock()


def build(name: str, in_shape: Shape = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A freshly initialised model called `name` (a teacher or a student)."""
    from kd_core.models import external

    if external.is_external(name):
        with INIT_LOCK:
            return external.build(name, tuple(in_shape), num_classes)
    builder = TEACHERS.get(name) or STUDENTS.get(name)
    if builder is None:
        names = ", ".join([*TEACHERS, *STUDENTS])
        raise ValueError(f"unknown model {name!r}; choose one of {names}")
    with INIT_LOCK:
        return builder(tuple(in_shape), num_classes)


def classifier(model: nn.Module) -> nn.Linear:
    """The model's final Linear layer. Its input is what the feature methods (hint, cosine) call the model's
    *penultimate features*: the last hidden layer of an MLP (mlp-tiny 32, mlp-small 128, mlp-medium 128
    wide, the teacher MLP 512), the global average pool of a CNN (cnn-tiny 32, cnn-teacher 256) or of a
    ResNet (512 or 2048)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear layer, so no penultimate features")
    return layers[-1]


def with_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass -> (penultimate features [B, F], logits [B, K]): the input of `classifier(model)`."""
    captured: list[torch.Tensor] = []
    hook = classifier(model).register_forward_pre_hook(lambda layer, args: captured.append(args[0]))
    try:
        logits = model(x)
    finally:
        hook.remove()
    return captured[-1].flatten(1), logits


def describe(model: nn.Module) -> dict[str, int]:
    """{'params': trainable parameter count, 'bytes': parameters and buffers as stored}."""
    params = sum(p.numel() for p in model.parameters())
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return {"params": params, "bytes": size}


def flops_per_sample(model: nn.Module, in_shape: Shape) -> int:
    """Multiply-accumulates ×2 of one forward pass for one sample (Linear and Conv2d layers only)."""
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += 2 * kernel * output[0].numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.Conv2d))]
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(1, *in_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total
