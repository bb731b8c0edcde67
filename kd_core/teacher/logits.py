"""The frozen teacher: loading it, caching its logits, and training one.

A teacher never changes during distillation, so its logits on the un-augmented training and test
sets are computed once per (checkpoint, dataset) and reused by every run: in memory for the process,
and on disk as safetensors. One key names them, `logits_cache_key`: a hash of everything the logits
depend on (the checkpoint file, the training and test images and labels, the normalisation, and
CACHE_FORMAT). Disk copies are looked for beside the checkpoint (`<name>.logits.safetensors`, shipped
with the repo so a fresh Space starts at once) and in `$KD_CACHE_DIR` (default `~/.cache/kd_playground`).
The teacher's penultimate features (for the hint and cosine methods) are cached the same way and under
the same key, in `$KD_CACHE_DIR` only, row by row as runs need them (`teacher_features`).
A cache file whose key, shapes or values do not check out is ignored and rebuilt, never trusted.
The contracts (cache, checkpoints, CLI) are written down in docs/contracts.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kd_core.data.datasets import Dataset
from kd_core.models import checkpoints
from kd_core.models import zoo as models

LOGITS_BATCH = 256  # images per batch of the logits pass: faster on CPUs than 1,024 (bench/RESULTS.md, "Wave 4")
CACHE_FORMAT = 2  # bump when what a logits file holds, or how it is keyed, changes: old files then mismatch


@dataclass(frozen=True, eq=False)
class TeacherLogits:
    train: torch.Tensor  # float32 [N, K] on CPU, un-augmented training set
    test: torch.Tensor  # float32 [M, K] on CPU
    test_acc: float  # the teacher's test accuracy, from `test`
    seconds: float  # time spent getting them (compute or disk read)
    source: str  # "memory", "disk" or "computed"


_memory: dict[str, TeacherLogits] = {}
_memory_lock = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("KD_CACHE_DIR", Path.home() / ".cache" / "kd_playground"))


@dataclass(frozen=True)
class LogitsProgress:
    """The teacher's logits pass: `done` of `total` images (an event of the run's stream, at most every PROGRESS_S)."""

    done: int
    total: int


def logits_cache_key(checkpoint: Path, dataset: Dataset, checkpoint_hash: str | None = None) -> str:
    """The one key of a teacher's cached logits: a hash of everything they depend on.

    The checkpoint file (its SHA-256 prefix), the dataset's training and test images and labels
    (`Dataset.fingerprint`), the normalisation applied before the teacher (mean, std) and CACHE_FORMAT.
    Change any of them and the key changes, so stale logits are never served from memory or disk.
    """
    checkpoint_hash = checkpoint_hash or checkpoints.file_hash(checkpoint)  # a resolved run knows it (kd_core.run)
    parts = {"format": CACHE_FORMAT, "checkpoint": checkpoint_hash,
             "data": dataset.fingerprint, "mean": [float(m) for m in dataset.mean],
             "std": [float(s) for s in dataset.std]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def logits_paths(checkpoint: Path, key: str) -> list[Path]:
    """Where logits with `key` may be stored, first match wins: beside the checkpoint, then the cache dir."""
    return [checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".logits.safetensors"),
            cache_dir() / f"teacher-{key}.logits.safetensors"]


def teacher_logits(checkpoint: str | Path, dataset: Dataset, device: torch.device | str = "cpu",
                   *, batch_size: int = LOGITS_BATCH, on_progress: Callable[[int, int], None] | None = None,
                   checkpoint_hash: str | None = None) -> TeacherLogits:
    """The teacher's logits on `dataset` from memory, disk, or computed (then saved to the cache dir);
    `on_progress(done, total)` every PROGRESS_S seconds while they are computed."""
    checkpoint = Path(checkpoint)
    key = logits_cache_key(checkpoint, dataset, checkpoint_hash)
    with _memory_lock:
        if key in _memory:
            cached = _memory[key]
            return TeacherLogits(cached.train, cached.test, cached.test_acc, 0.0, "memory")
    start = time.perf_counter()
    found = next((logits for path in logits_paths(checkpoint, key)
                  if (logits := _read_logits(path, key, dataset)) is not None), None)
    if found is None:
        teacher, _ = checkpoints.load_model(checkpoint, device)
        # rounded through fp16 like the disk copy, so a run never depends on where its logits came from
        first, total = len(dataset.train_images), len(dataset.train_images) + len(dataset.test_images)
        progress = [on_progress and (lambda done, _, offset=offset: on_progress(offset + done, total))
                    for offset in (0, first)]
        train, test = (predict_logits(teacher, dataset, images, device, batch_size=batch_size,
                                      on_progress=report).half().float()
                       for images, report in zip((dataset.train_images, dataset.test_images), progress, strict=True))
        found, source = (train, test), "computed"
        _write_logits(logits_paths(checkpoint, key)[-1], key, train, test)
    else:
        source = "disk"
    train, test = found
    acc = (test.argmax(1) == dataset.test_labels).float().mean().item()
    result = TeacherLogits(train, test, acc, time.perf_counter() - start, source)
    with _memory_lock:
        _memory[key] = result
    return result


def logits_cached(checkpoint: str | Path, dataset: Dataset, checkpoint_hash: str | None = None) -> bool:
    """Whether `teacher_logits` would find these logits in memory or on disk, without running the model."""
    checkpoint = Path(checkpoint)
    key = logits_cache_key(checkpoint, dataset, checkpoint_hash)
    with _memory_lock:
        if key in _memory:
            return True
    return any(_read_logits(path, key, dataset) is not None for path in logits_paths(checkpoint, key))


def save_logits_beside(checkpoint: str | Path, dataset: Dataset, logits: TeacherLogits) -> Path:
    """Write `logits` next to the checkpoint (the copy that ships with the repo)."""
    checkpoint = Path(checkpoint)
    key = logits_cache_key(checkpoint, dataset)
    path = logits_paths(checkpoint, key)[0]
    _write_logits(path, key, logits.train, logits.test)
    return path


def _write_cache(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    try:
        checkpoints.save_tensors(path, tensors, metadata)
    except OSError:
        pass  # a read-only cache directory only costs the next process a recompute


def _read_cache(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A cache file's (tensors, metadata); ({}, {}) when it is missing or unreadable."""
    if not path.is_file():
        return {}, {}
    try:
        return checkpoints.load_tensors(path)
    except checkpoints.CheckpointError:
        return {}, {}


def _write_logits(path: Path, key: str, train: torch.Tensor, test: torch.Tensor) -> None:
    # fp16 halves the file (60k×10 -> 1.2 MB); logits of a trained net are O(10), well inside its range
    _write_cache(path, {"train": train.half(), "test": test.half()}, {"key": key, "format": CACHE_FORMAT})


def _read_logits(path: Path, key: str, dataset: Dataset):
    tensors, meta = _read_cache(path)
    train, test = tensors.get("train"), tensors.get("test")
    expected = {"train": (len(dataset.train_labels), dataset.num_classes),
                "test": (len(dataset.test_labels), dataset.num_classes)}
    if meta.get("key") != key or train is None or test is None:
        return None
    if tuple(train.shape) != expected["train"] or tuple(test.shape) != expected["test"]:
        return None
    if not (torch.isfinite(train).all() and torch.isfinite(test).all()):
        return None
    return train.float(), test.float()


PROGRESS_S = 3.0  # seconds between progress reports of a long logits pass


def predict_logits(model: nn.Module, dataset: Dataset, images: torch.Tensor, device: torch.device | str, *,
                   batch_size: int = LOGITS_BATCH,
                   on_progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """float32 [N, K] logits on CPU for uint8 `images`, in eval mode, in batches. A network with convolutions runs
    channels_last (oneDNN's fast layout on CPUs, the tensor cores' on GPUs) and is given back in its own layout."""
    model = model.to(device).eval()
    convolutional = any(isinstance(module, nn.Conv2d) for module in model.modules())
    was_channels_last = any(p.dim() == 4 and not p.is_contiguous()  # (a 1-channel kernel is both: it tells nothing)
                            and p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters())
    if convolutional:
        model.to(memory_format=torch.channels_last)
    outputs, reported = [], time.perf_counter()
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = dataset.normalize(images[start:start + batch_size].to(device))
                if convolutional:
                    batch = batch.contiguous(memory_format=torch.channels_last)
                outputs.append(model(batch).float().cpu())
                if on_progress and time.perf_counter() - reported > PROGRESS_S:
                    on_progress(start + len(batch), len(images))
                    reported = time.perf_counter()
    finally:
        if convolutional and not was_channels_last:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(outputs)


def clear_memory_cache() -> None:
    with _memory_lock:
        _memory.clear()
    with _features_lock:
        _features.clear()


# ------------------------------------------------------------------------------ penultimate features

@dataclass(frozen=True, eq=False)
class TeacherFeatures:
    rows: torch.Tensor  # float32 [len(index), F] on CPU: the asked training images' features, in that order
    seconds: float  # time spent getting them
    source: str  # "memory", "disk" or "computed" (some rows had to be computed now)
    computed: int  # rows computed now


_features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # key -> (float16 [N, F], rows known: bool [N])
_features_lock = threading.Lock()


def features_path(key: str) -> Path:
    return cache_dir() / f"teacher-{key}.features.safetensors"


def teacher_features(checkpoint: str | Path, dataset: Dataset, index: torch.Tensor,
                     device: torch.device | str = "cpu", *, batch_size: int = 1024,
                     checkpoint_hash: str | None = None) -> TeacherFeatures:
    """The teacher's penultimate features (the input of `models.classifier`) on the training images `index`.

    Cached like the logits and under the same key (`logits_cache_key`): in memory, and in the cache dir as
    `teacher-<key>.features.safetensors` holding the rows known so far (their indices, and float16 [n, F]).
    Rows are computed when a run first needs them, so a run on 1,000 images does not pay for 60,000; the
    file grows to 60,000 × 256 × 2 bytes = 30.7 MB for the shipped teacher, too big to ship in the repo (the
    logits, 1.2 MB, are shipped). Features of a trained net are O(1), well inside float16's range.
    """
    checkpoint = Path(checkpoint)
    key = logits_cache_key(checkpoint, dataset, checkpoint_hash)
    start = time.perf_counter()
    with _features_lock:  # concurrent runs: one computes a row, the others then read it
        stored, source = _features.get(key), "memory"
        if stored is None:
            stored, source = _read_features(features_path(key), key, dataset), "disk"
        wanted = index.unique()
        missing = wanted if stored is None else wanted[~stored[1][wanted]]
        if len(missing):
            teacher, _ = checkpoints.load_model(checkpoint, device)
            new = penultimate_features(teacher, dataset, dataset.train_images[missing], device, batch_size=batch_size)
            if stored is None:
                stored = (torch.zeros(len(dataset.train_labels), new.shape[1], dtype=torch.float16),
                          torch.zeros(len(dataset.train_labels), dtype=torch.bool))
            stored[0][missing], stored[1][missing] = new.half(), True
            _write_features(features_path(key), key, *stored)
            source = "computed"
        _features[key] = stored
        rows = stored[0][index].float()
    return TeacherFeatures(rows, time.perf_counter() - start, source, len(missing))


def penultimate_features(model: nn.Module, dataset: Dataset, images: torch.Tensor, device: torch.device | str, *,
                         batch_size: int = 1024) -> torch.Tensor:
    """float32 [N, F] penultimate features on CPU for uint8 `images`, in eval mode, in large batches."""
    model = model.to(device).eval()
    with torch.inference_mode():
        return torch.cat([models.with_features(model, dataset.normalize(images[i:i + batch_size].to(device)))[0]
                          .float().cpu() for i in range(0, len(images), batch_size)])


def _write_features(path: Path, key: str, features: torch.Tensor, known: torch.Tensor) -> None:
    index = known.nonzero().flatten()
    _write_cache(path, {"index": index, "train": features[index]},
                 {"key": key, "format": CACHE_FORMAT, "rows": len(known)})


def _read_features(path: Path, key: str, dataset: Dataset):
    """(float16 [N, F] with zeros where unknown, bool [N] known) from a features file that checks out, else None."""
    tensors, meta = _read_cache(path)
    rows, index, n = tensors.get("train"), tensors.get("index"), len(dataset.train_labels)
    if meta.get("key") != key or meta.get("rows") != n or rows is None or index is None or rows.dim() != 2:
        return None
    if rows.dtype != torch.float16 or index.dtype != torch.int64 or tuple(index.shape) != (len(rows),):
        return None
    if len(index) and (index.min() < 0 or index.max() >= n) or not torch.isfinite(rows).all():
        return None
    features, known = torch.zeros(n, rows.shape[1], dtype=torch.float16), torch.zeros(n, dtype=torch.bool)
    features[index], known[index] = rows, True
    return features, known
