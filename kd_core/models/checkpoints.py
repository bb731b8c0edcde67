"""Checkpoints as safetensors files with JSON metadata; atomic writes; no pickles.

A checkpoint stores a model's state dict plus one metadata entry, `kd_playground`, holding JSON:
`arch` (a name from kd_core.models.zoo), `dataset`, `in_shape`, `num_classes`, `classes`, `mean`, `std`,
`test_acc`, `recipe` (the command that made it), `seed`, and whatever else the writer adds.
Loading rebuilds the model by name and reads tensors only, so a checkpoint cannot run code.
Every write goes to a temporary file in the same directory and is renamed into place, so a crash
never leaves a half-written file under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from kd_core.models import zoo as models

META_KEY = "kd_playground"
CHECKPOINT_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupted or not one of ours; the message says which."""


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` then rename tmp -> path, so readers see the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp (and safetensors) make 0600; checkpoints are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
    """Atomically write `tensors` (made contiguous, on CPU) with `metadata` as JSON."""
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    header = {META_KEY: json.dumps(metadata, sort_keys=True)}
    return atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=header))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) from a safetensors file, or CheckpointError saying what is wrong."""
    metadata = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable KD Playground checkpoint ({error})") from error
    return tensors, metadata


def read_metadata(path: str | Path) -> dict:
    """A checkpoint's metadata alone, from the file's header (no tensors read), or CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        metadata = json.loads(header[META_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable KD Playground checkpoint ({error})") from error
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is not a readable KD Playground checkpoint (metadata is not a dict)")
    return metadata


def check_teacher_fits(path: str | Path, dataset_name: str) -> dict:
    """The teacher's metadata if it was made for `dataset_name`, else CheckpointError in one line.

    Compares the metadata's `dataset`, `in_shape` and `num_classes` with the dataset's known image shape
    and classes (data.IMAGE_SHAPES, data.CLASSES) before any data is loaded, downloaded or trained on.
    """
    from kd_core.data.datasets import CLASSES, IMAGE_SHAPES  # deferred: data is the heavier module

    meta = read_metadata(path)
    if dataset_name not in CLASSES:
        raise CheckpointError(f"unknown dataset {dataset_name!r}; choose one of {', '.join(CLASSES)}")
    missing = sorted({"dataset", "in_shape", "num_classes"} - meta.keys())
    if missing:
        raise CheckpointError(f"teacher {path} does not record its {', '.join(missing)}; "
                              f"it cannot be checked against {dataset_name}")
    shape, classes = list(IMAGE_SHAPES[dataset_name]), len(CLASSES[dataset_name])
    if meta["in_shape"] != shape:
        raise CheckpointError(f"teacher {path} takes {_shape(meta['in_shape'])} images, but {dataset_name}'s "
                              f"are {_shape(shape)}")
    if meta["num_classes"] != classes:
        raise CheckpointError(f"teacher {path} predicts {meta['num_classes']} classes, but {dataset_name} "
                              f"has {classes}")
    if meta["dataset"] != dataset_name:
        raise CheckpointError(f"teacher {path} was trained on {meta['dataset']}, not {dataset_name}; "
                              f"pass a {dataset_name} teacher")
    return meta


def _shape(shape) -> str:
    return "×".join(str(n) for n in shape) if isinstance(shape, list) else repr(shape)


def save_model(path: str | Path, model: nn.Module, metadata: dict) -> Path:
    """Save `model`'s state dict; `metadata` must name its `arch`, `in_shape` and `num_classes`."""
    missing = {"arch", "in_shape", "num_classes"} - metadata.keys()
    if missing:
        raise ValueError(f"checkpoint metadata lacks {sorted(missing)}")
    return save_tensors(path, model.state_dict(), {**metadata, **models.describe(model)})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model named in the metadata, load its weights, return (model in eval mode, metadata)."""
    tensors, metadata = load_tensors(path)
    try:
        model = models.build(metadata["arch"], tuple(metadata["in_shape"]), metadata["num_classes"])
        model.load_state_dict(tensors)
    except (KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path} does not match its metadata ({error})") from error
    return model.to(device).eval(), metadata


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256: keys caches derived from a checkpoint."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def default_teacher_path(dataset: str) -> Path:
    """The shipped teacher for `dataset`, or CheckpointError telling how to train one."""
    path = CHECKPOINT_DIR / f"cnn-teacher-{dataset}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"no default teacher is shipped for {dataset}; train one with "
            f"`python -m kd_core train-teacher --dataset {dataset} --arch cnn-teacher "
            f"--out checkpoints/cnn-teacher-{dataset}.safetensors`, or pass --teacher PATH")
    return path


def resolve_teacher(teacher: str, dataset: str) -> Path:
    """'default' -> the shipped teacher for `dataset`; else the given path, which must exist."""
    if teacher == "default":
        return default_teacher_path(dataset)
    path = Path(teacher)
    if not path.is_file():
        raise CheckpointError(f"teacher checkpoint not found: {path}")
    return path
