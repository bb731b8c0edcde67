"""Datasets as whole uint8 tensors in memory, with class names and normalisation.

Small image datasets fit in memory many times over, so each is loaded once into
`uint8 [N, C, H, W]` tensors and batches are slices of a permutation (no per-sample DataLoader).
Where the files come from, in order (docs/contracts.md):

1. `$KD_DATA_DIR` or `./data`, in torchvision's layout (`FashionMNIST/raw/…`, `cifar-10-batches-py/`);
2. Debian's `dataset-fashion-mnist` package (`/usr/share/datasets/fashion-mnist/*.gz`, read as idx);
3. torchvision's own download into the directory of step 1 (needs the internet);
4. otherwise `DatasetUnavailable`, whose message says how to get the data.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

CLASSES = {
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    "mnist": tuple(str(digit) for digit in range(10)),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"),
}
TRAIN_SET_SIZES = {"fashion-mnist": 60_000, "mnist": 60_000, "cifar10": 50_000}  # for labels, before loading
IMAGE_SHAPES = {"fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (C, H, W)
VALIDATION_SIZE = 5_000  # training images held out for every choice (defaults, presets, best cell, bias)
VALIDATION_SEED = 20_151_503  # fixed: the same validation split for every run, seed and teacher
# per-channel mean / std of the training images, scaled to [0, 1]
NORMALISATION = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetUnavailable(RuntimeError):
    """The dataset is neither on disk nor downloadable; the message says how to get it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train_images: torch.Tensor  # uint8 [N, C, H, W]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, C, H, W]
    test_labels: torch.Tensor  # int64 [M]
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, images scaled to [0, 1]
    std: tuple[float, ...]
    source: str  # where the files were read from, for display

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @functools.cached_property
    def fingerprint(self) -> str:
        """Short hash of the name, the training and the test images and labels (not the normalisation).

        Part of `teacher.logits_cache_key`: the teacher's cached logits cover both splits.
        """
        digest = hashlib.sha256(self.name.encode())
        for tensor in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    @functools.cached_property
    def validation_index(self) -> torch.Tensor:
        """The validation split: VALIDATION_SIZE training indices, class-stratified, fixed for the dataset.

        Students and the shipped teacher never train on these images; everything that *chooses* (the
        defaults, the presets, a sweep's best cell, the hidden-class bias) looks at them, and the test set
        only reports.
        """
        return validation_indices(self.train_labels)

    @functools.cached_property
    def fit_index(self) -> torch.Tensor:
        """The training indices outside the validation split (sorted): what students may learn from."""
        keep = torch.ones(len(self.train_labels), dtype=torch.bool)
        keep[self.validation_index] = False
        return keep.nonzero().flatten()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] on any device -> float32 normalised model input."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        # in place on the one float copy: the same operations in the same order as (x / 255 - mean) / std,
        # so the same values, without three more full-size temporaries
        return images.float().div_(255.0).sub_(mean).div_(std)


def data_root() -> Path:
    return Path(os.environ.get("KD_DATA_DIR", "data"))


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
# the files torchvision's loaders read under the data root: (folder, file names)
TORCHVISION_FILES = {
    "fashion-mnist": ("FashionMNIST/raw", IDX_FILES),
    "mnist": ("MNIST/raw", IDX_FILES),
    "cifar10": ("cifar-10-batches-py",
                (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
}


def available_datasets() -> tuple[str, ...]:
    """Names of the datasets whose files are on this machine, so they load without the internet.

    A quick look for the files (no hashing, no loading, no download) for pickers that should offer
    only what will load; `load_dataset` may still fetch the others when online.
    """
    root = data_root()
    return tuple(name for name in CLASSES if _files_present(name, root))


def _files_present(name: str, root: Path) -> bool:
    folder, files = TORCHVISION_FILES[name]
    if all((root / folder / file).is_file() for file in files):
        return True
    return name == "fashion-mnist" and all((DEBIAN_FASHION_MNIST / f"{file}.gz").is_file()
                                           for file in IDX_FILES)


def load_dataset(name: str = "fashion-mnist") -> Dataset:
    """Load `name` into memory once per process (cached by name and data root)."""
    if name not in CLASSES:
        raise ValueError(f"dataset must be one of {', '.join(CLASSES)}; got {name!r}")
    return _load_cached(name, str(data_root().resolve()))


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, root: str) -> Dataset:
    arrays = _from_torchvision(name, root, download=False)
    source = root
    if arrays is None and name == "fashion-mnist" and DEBIAN_FASHION_MNIST.is_dir():
        arrays = _from_idx_dir(DEBIAN_FASHION_MNIST)
        source = str(DEBIAN_FASHION_MNIST)
    if arrays is None:
        arrays = _download(name, root)
    mean, std = NORMALISATION[name]
    return Dataset(name, *arrays, classes=CLASSES[name], mean=mean, std=std, source=source)


def _download(name: str, root: str):
    try:
        arrays = _from_torchvision(name, root, download=True)
    except Exception as error:  # no network, proxy, disk full: all end the same way for the user
        hint = ("`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or "
                if name == "fashion-mnist" else "")
        raise DatasetUnavailable(
            f"{name} is not on this machine and could not be downloaded ({type(error).__name__}: "
            f"{error}). Get it with {hint}an internet connection once (it is saved under {root}), "
            f"or put torchvision's files there or in $KD_DATA_DIR."
        ) from error
    assert arrays is not None
    return arrays


def _from_torchvision(name: str, root: str, *, download: bool):
    """(train_images, train_labels, test_images, test_labels) via torchvision, or None if absent."""
    from torchvision import datasets  # deferred: torchvision is slow to import

    cls = {"fashion-mnist": datasets.FashionMNIST, "mnist": datasets.MNIST,
           "cifar10": datasets.CIFAR10}[name]
    try:
        splits = [cls(root, train=train, download=download) for train in (True, False)]
    except RuntimeError:
        if download:
            raise
        return None  # "Dataset not found": try the next place
    arrays = []
    for split in splits:
        images = torch.as_tensor(split.data)
        images = images.permute(0, 3, 1, 2) if images.ndim == 4 else images.unsqueeze(1)  # -> NCHW
        arrays += [images.contiguous(), torch.as_tensor(split.targets, dtype=torch.int64)]
    return tuple(arrays)


def _from_idx_dir(directory: Path):
    images_train, labels_train, images_test, labels_test = (
        read_idx(directory / f"{stem}.gz") for stem in IDX_FILES)
    return images_train.unsqueeze(1), labels_train.long(), images_test.unsqueeze(1), labels_test.long()


def read_idx(path: Path) -> torch.Tensor:
    """Read an idx file (LeCun's MNIST format, optionally gzipped) of unsigned bytes into a tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim:]), dtype=torch.uint8)
    if data.numel() != torch.Size(shape).numel():
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.numel()} bytes")
    return data.view(*shape)


def validation_indices(labels: torch.Tensor, size: int = VALIDATION_SIZE) -> torch.Tensor:
    """`size` class-stratified training indices drawn with VALIDATION_SEED (sorted): the validation split.
    A training set under ten times `size` (a test's stand-in) gives a tenth of itself instead."""
    return stratified_subset(labels, torch.arange(len(labels)), min(size, len(labels) // 10), VALIDATION_SEED)


def student_indices(labels: torch.Tensor, *, train_size: int = 0, hide_class: int | None = None,
                    seed: int = 0, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the labelled training samples the students may see (sorted).

    `exclude` (the validation split, for runs) is never included; `hide_class` drops every sample of
    that class; `train_size` > 0 then keeps a class-stratified random subset of that many samples
    (drawn with `seed`), so a 1k subset still has every class.
    """
    keep = torch.arange(len(labels))
    if exclude is not None:
        allowed = torch.ones(len(labels), dtype=torch.bool)
        allowed[exclude] = False
        keep = keep[allowed]
    if hide_class is not None:
        keep = keep[labels[keep] != hide_class]
    if not train_size or train_size >= len(keep):
        return keep
    return stratified_subset(labels, keep, train_size, seed)


def stratified_subset(labels: torch.Tensor, keep: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """`size` of the indices `keep`, every class getting its share (random within a class, by `seed`)."""
    if size >= len(keep):
        return keep.sort().values
    generator = torch.Generator().manual_seed(seed)
    shuffled = keep[torch.randperm(len(keep), generator=generator)]
    # stable sort by class, then take each class's share round-robin by rank within the class
    order = torch.argsort(labels[shuffled], stable=True)
    by_class = shuffled[order]
    sorted_labels = labels[by_class]
    first_of_class = torch.searchsorted(sorted_labels, sorted_labels, right=False)
    rank_in_class = torch.arange(len(by_class)) - first_of_class
    counts = torch.bincount(sorted_labels)[sorted_labels].float()
    spread = rank_in_class.float() / counts  # 0..1 within each class: equal shares across classes
    chosen = by_class[torch.argsort(spread, stable=True)[:size]]
    return chosen.sort().values


def augment(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4,
            flip: bool = True) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip, as batched tensor ops.

    uint8 [B, C, H, W] on any device -> same shape; randomness drawn from `generator` (on the CPU)
    so runs are reproducible on any device.
    """
    batch, _, height, width = images.shape
    device = images.device
    shifts = torch.randint(0, 2 * pad + 1, (2, batch), generator=generator).to(device)
    rows = torch.arange(height, device=device)[None, :] + shifts[0][:, None]  # [B, H] in padded coords
    cols = torch.arange(width, device=device)[None, :] + shifts[1][:, None]  # [B, W]
    if flip:
        mirrored = torch.rand(batch, generator=generator).to(device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    index = torch.arange(batch, device=device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return cropped.permute(0, 3, 1, 2).contiguous()
