"""Models from outside the zoo: timm and torchvision architectures, behind their own preprocessing.

`build("timm:resnet18", in_shape, num_classes)` (what `models.build` calls for a name with a prefix) makes a
`Preprocessed` network: it takes the run's input (the data's uint8 images normalised with the data's mean and
std, at the student's size, as every zoo model does) and gives the network what it was made for: the same
images resized to its own input size and normalised with its own mean and std. Those four values are buffers,
so a checkpoint holds them beside the weights and its file hash (the teacher cache's key) covers them.
A zoo-style student (`--student timm:NAME`) keeps the identity preprocessing. Pretrained weights are fetched
by `kd_core.teacher.sources`, which fails in under two seconds when offline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PREFIXES = ("timm:", "torchvision:")


class Preprocessed(nn.Module):
    """`net` behind a change of preprocessing: undo the data's normalisation, resize, normalise the net's way."""

    def __init__(self, net: nn.Module, channels: int):
        super().__init__()
        self.net = net
        for name, value in (("data_mean", 0.0), ("data_std", 1.0), ("mean", 0.0), ("std", 1.0)):
            self.register_buffer(name, torch.full((channels,), value))
        self.register_buffer("size", torch.zeros((), dtype=torch.int64))  # 0: keep the input's size
        self.side = 0  # `size` as a Python int: read by forward, which torch.export (ONNX) cannot read a tensor in

    def set_preprocessing(self, data_mean, data_std, mean, std, size: int) -> Preprocessed:
        with torch.no_grad():
            for buffer, value in ((self.data_mean, data_mean), (self.data_std, data_std), (self.mean, mean),
                                  (self.std, std)):
                buffer.copy_(torch.as_tensor(value, dtype=torch.float32))
            self.size.fill_(size)
        self.side = int(size)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.side = int(self.size)  # a checkpoint's size, loaded into the buffer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.side
        x = x * self.data_std.view(1, -1, 1, 1) + self.data_mean.view(1, -1, 1, 1)  # back to [0, 1]
        if size and tuple(x.shape[-2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return self.net((x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1))


def is_external(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES)


def build(name: str, in_shape: tuple[int, int, int], num_classes: int) -> Preprocessed:
    """A freshly initialised `timm:NAME` or `torchvision:NAME` network for `in_shape` images, identity
    preprocessing; ValueError for an unknown name or a torchvision network on grey images."""
    return Preprocessed(network(name, in_shape[0], num_classes), in_shape[0])


def network(name: str, channels: int, num_classes: int, **timm_options) -> nn.Module:
    """The bare network `name` (no preprocessing) for `channels`-channel images and `num_classes` outputs."""
    library, _, arch = name.partition(":")
    if library == "timm":
        import timm  # deferred: timm imports slowly and only these models need it

        if not timm.is_model(arch):
            raise ValueError(f"timm has no model {arch!r} (see timm.list_models())")
        return timm.create_model(arch, in_chans=channels, num_classes=num_classes, **timm_options)
    from torchvision import models as tv_models

    if arch not in tv_models.list_models(module=tv_models):
        raise ValueError(f"torchvision has no classification model {arch!r}")
    if channels != 3:
        raise ValueError(f"torchvision:{arch} takes RGB images but this data is grey (1 channel); use "
                         f"timm:{arch}, whose input channels follow the data")
    return tv_models.get_model(arch, weights=None, num_classes=num_classes)


def input_check(model: nn.Module, in_shape: tuple[int, int, int], what: str) -> None:
    """ValueError when `model` cannot take `in_shape` images (too small for its downsampling, say)."""
    was_training = model.training
    try:
        model.eval()
        with torch.inference_mode():
            model(torch.zeros(2, *in_shape))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0][:160]
        raise ValueError(f"{what} cannot take {in_shape[1]}×{in_shape[2]} images ({first}); pass a larger "
                         f"--image-size or --teacher-image-size") from error
    finally:
        model.train(was_training)
