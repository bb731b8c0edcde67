"""ONNX export of any teacher or student, with its input normalisation built in, and the round-trip check.

The exported graph is the model behind its dataset's normalisation, so a caller needs no preprocessing
code and no mean / std — only the images, in the contract below (`INPUT_CONTRACT`):

    input  "images": uint8 [B, C, H, W], pixel values 0..255 as stored in the dataset
                     (Fashion-MNIST / MNIST: C=1, H=W=28, white object on black; CIFAR-10: C=3, H=W=32, RGB);
                     B is dynamic (any batch size >= 1)
    output "logits": float32 [B, K], raw class scores; softmax(logits) gives probabilities and the class
                     names, in order, are in the model's metadata ("kd_playground" -> "classes")

Inside, the graph computes `(images / 255 - mean) / std` with the dataset's per-channel mean and std (the
same operations in the same order as `Dataset.normalize`), then the model in eval mode. Images scaled to
[0, 1] floats must be multiplied by 255 and rounded to uint8 first; the graph refuses other dtypes.

Export uses `torch.onnx.export` (torch 2.14: `dynamo=True` is the default; it traces with `torch.export`
and needs the `onnx` and `onnxscript` packages) with a dynamic batch dimension; `check_round_trip` runs the
file with ONNX Runtime on CPU and compares its logits with PyTorch's. `onnx`, `onnxruntime` and
`onnxscript` are in requirements.txt (the app's export, its in-browser student and Publish use them), yet
training and prediction never import them: an install without them still trains, and when one is missing
`require_onnx` raises `ExportUnavailable` with the one line that says how to install.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kd_core.models.checkpoints import atomic_write

ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install -r requirements.txt  (or: pip install onnx onnxruntime onnxscript)"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
INPUT_CONTRACT = ("images: uint8 [B, C, H, W], pixel values 0..255, B dynamic; "
                  "logits: float32 [B, K]; normalisation is inside the graph")
META_KEY = "kd_playground"  # the ONNX model's metadata_props entry, JSON, like the safetensors checkpoints
MAX_BATCH = 1 << 16  # the dynamic batch dimension's upper bound during tracing (any runtime size works)
ATOL, RTOL = 1e-4, 1e-4  # logits agree with PyTorch's to |onnx - torch| <= ATOL + RTOL * |torch|


class ExportUnavailable(RuntimeError):
    """An ONNX package is not installed; the message names it and how to install."""


class ExportMismatch(ValueError):
    """The exported model's logits differ from PyTorch's beyond tolerance."""


def require_onnx() -> None:
    """Import-check onnx, onnxruntime and onnxscript; ExportUnavailable names whichever are missing."""
    missing = []
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportUnavailable(f"ONNX export needs the package(s) {', '.join(missing)}; "
                                f"install with: {INSTALL_HINT}")


# --------------------------------------------------------------------------------------- the graph

class Normalised(nn.Module):
    """uint8 images [B, C, H, W] -> the wrapped model's logits, normalisation included."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.float().div(255.0).sub(self.mean).div(self.std))


def normalised(model: nn.Module, meta: Mapping) -> Normalised:
    """A CPU copy of `model`, in eval mode, behind the normalisation its metadata (`mean`, `std`) names.

    A copy, so the caller's model keeps its device and training mode."""
    return Normalised(copy.deepcopy(model).cpu().eval(), tuple(meta["mean"]), tuple(meta["std"])).eval()


def onnx_metadata(meta: Mapping) -> dict:
    """What the .onnx file records about itself: enough to use it without kd_core."""
    keep = ("arch", "role", "dataset", "classes", "in_shape", "num_classes", "mean", "std", "test_acc",
            "seed", "recipe", "params", "bytes")
    return {**{key: meta[key] for key in keep if key in meta}, "input_contract": INPUT_CONTRACT}


def to_onnx(model: nn.Module, meta: Mapping):
    """The model with its normalisation as an `onnx.ModelProto` (weights inside, batch dimension dynamic)."""
    require_onnx()
    wrapped = normalised(model, meta)
    example = torch.zeros(2, *meta["in_shape"], dtype=torch.uint8)  # batch 2: torch.export specialises 1
    program = torch.onnx.export(
        wrapped, (example,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
        dynamic_shapes={INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}},
        external_data=False, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(onnx_metadata(meta), sort_keys=True)
    return proto


def export_onnx(model: nn.Module, meta: Mapping, path: str | Path) -> Path:
    """Write `model` as a self-contained .onnx file (atomically, checked by `onnx.checker`); its path."""
    import onnx

    proto = to_onnx(model, meta)
    onnx.checker.check_model(proto)
    return atomic_write(path, lambda tmp: onnx.save_model(proto, tmp))


def read_onnx_metadata(path: str | Path) -> dict:
    """The `kd_playground` metadata an exported file carries (class names, normalisation, recipe, …)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    return json.loads(props[META_KEY])


# ------------------------------------------------------------------------------ running and checking

def onnx_session(model: str | Path | bytes, threads: int = 1):
    """An ONNX Runtime CPU session for a file path or serialised model, on `threads` intra-op threads."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def onnx_logits(session, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float32 logits [N, K] from an ONNX Runtime session, in batches."""
    parts = [session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(chunk.numpy())})[0]
             for chunk in images.split(batch_size)]
    return torch.from_numpy(np.concatenate(parts))


def torch_logits(wrapped: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The same through PyTorch: uint8 [N, C, H, W] -> float32 logits [N, K]."""
    with torch.inference_mode():
        return torch.cat([wrapped(chunk) for chunk in images.split(batch_size)]).float()


@dataclass(frozen=True)
class RoundTrip:
    images: int  # how many images were compared
    max_abs_diff: float  # largest |onnx - torch| over all logits
    top1_agreement: float  # fraction of images whose top-1 class is the same in both
    within_tolerance: bool  # every logit within ATOL + RTOL * |torch|

    def summary(self) -> dict:
        return {"checked_images": self.images, "max_abs_diff": self.max_abs_diff,
                "top1_agreement": self.top1_agreement, "within_tolerance": self.within_tolerance}


def check_round_trip(onnx_model: str | Path | bytes, model: nn.Module, meta: Mapping,
                     images: torch.Tensor, batch_size: int = 1024) -> RoundTrip:
    """Compare the exported model's logits with PyTorch's on `images` (uint8 [N, C, H, W])."""
    ours = torch_logits(normalised(model, meta), images, batch_size)
    theirs = onnx_logits(onnx_session(onnx_model), images, batch_size)
    if theirs.shape != ours.shape:
        raise ExportMismatch(f"ONNX logits have shape {tuple(theirs.shape)}, PyTorch's {tuple(ours.shape)}")
    diff = (theirs - ours).abs()
    return RoundTrip(images=len(images), max_abs_diff=diff.max().item(),
                     top1_agreement=(theirs.argmax(1) == ours.argmax(1)).float().mean().item(),
                     within_tolerance=bool((diff <= ATOL + RTOL * ours.abs()).all()))
