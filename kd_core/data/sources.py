"""A user's images: an ImageFolder (a folder or a .zip of one), or a Hub dataset, a `save_to_disk` folder or parquet
files (kd_core.data.hub), decoded once into a `data.Dataset`.

Layout (Hugging Face's imagefolder convention): one subfolder per class, its name the class's name; optional
split folders `train/` (or `training/`), `val/` (`valid/`, `validation/`, `dev/`) and `test/` (`testing/`,
`eval/`) each holding the class folders. A single top-level folder around it all (what zipping a folder
makes) is stepped into. Without a `test/` folder, TEST_SHARE of every class's training images become the test
split (drawn with TEST_SEED); without a `val/` folder the validation split is `Dataset.validation_index` (a
tenth of the training images, at most 5,000, class-stratified, fixed), as for the built-in datasets.

Images (JPEG, PNG, WebP, BMP, GIF) are decoded to uint8 [N, C, H, W]: grey (C = 1) when every image is grey,
else RGB; resized to `image_size` × `image_size` when given, else they must all share one size. Hidden
files and `__MACOSX/` are ignored; any other file that is not a decodable image is refused (one line naming
it), so a run never trains on a silently shrunk data set. `Limits` bounds what one source may hold (the CLI's
are generous, the public Space's are SPACE_LIMITS); a zip is checked entry by entry before anything is
decoded (paths inside the archive only, no bomb). The `datasets` library's forms give rows of encoded images by
split and class, which go through the same splits, checks and decoding as a folder's files. `resolve_dataset(cfg)`
is the one way a run gets its data.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from kd_core.data import hub
from kd_core.data.datasets import VALIDATION_SEED, Dataset, load_dataset, stratified_subset, validation_indices

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "dev"),
               "test": ("test", "testing", "eval")}
TEST_SHARE = 0.2  # of each class's images, when there is no test/ folder
TEST_SEED = VALIDATION_SEED + 1
MAX_ZIP_RATIO = 100  # an entry inflating more than this (and over 1 MB) is refused as a zip bomb
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


@dataclass(frozen=True)
class Limits:
    """What one data source may hold; over any of them is one ValueError saying which."""

    upload_bytes: int = 4 * 2**30  # the file or zip as given
    unpacked_bytes: int = 8 * 2**30  # a zip's entries, inflated
    images: int = 1_000_000
    classes: int = 1000
    pixels: int = 4096 * 4096  # per image, read from its header before decoding
    private_hub: bool = True  # a Hub dataset may be read with this machine's token (never on a public Space)


SPACE_LIMITS = Limits(upload_bytes=50 * 2**20, unpacked_bytes=200 * 2**20, images=20_000, classes=100,
                      pixels=1024 * 1024, private_hub=False)


@dataclass(frozen=True, eq=False)
class FolderDataset(Dataset):
    """A Dataset read from an ImageFolder; `val_index`, when the folder has a val/ split, is its validation
    split (those images sit at the end of the training tensors)."""

    val_index: torch.Tensor | None = None
    note: str = ""  # how the splits were made, for the user

    @functools.cached_property
    def validation_index(self) -> torch.Tensor:
        return super().validation_index if self.val_index is None else self.val_index


def resolve_dataset(cfg) -> Dataset:
    """The run's data: `cfg.data` (a folder, a zip, hf:ID, a save_to_disk folder or parquet files) when set, else
    the built-in `cfg.dataset`."""
    if not cfg.data:
        return load_dataset(cfg.dataset)
    return load_folder(cfg.data, cfg.image_size, image_column=cfg.image_column, label_column=cfg.label_column)


_loaded: dict[tuple, tuple[Limits, FolderDataset]] = {}  # (path, size, mtime, image_size, columns) -> decoded
_loaded_lock = threading.Lock()
KEEP_LOADED = 4


def dataset_of(meta: dict) -> Dataset:
    """The data a checkpoint was made on, from its metadata: its `config`'s folder, else the built-in dataset."""
    config = meta.get("config") or {}
    if config.get("data"):
        return load_folder(config["data"], config.get("image_size", 0), image_column=config.get("image_column", ""),
                           label_column=config.get("label_column", ""))
    return load_dataset(meta["dataset"])


def load_folder(path: str | Path, image_size: int = 0, limits: Limits = Limits(), *, image_column: str = "",
                label_column: str = "") -> FolderDataset:
    """Decode the data at `path` (an ImageFolder, a .zip of one, hf:ID, a save_to_disk folder or parquet files;
    the columns name a table's image and label columns), once per process: kept per (path, its size and time,
    image_size, columns), and served again to any caller whose limits are no stricter than those it passed."""
    columns = (image_column, label_column)
    if str(path).startswith(hub.HUB_PREFIX):
        key = (str(path), 0, 0, image_size, columns)
    else:
        path = Path(path)
        if not path.exists():
            raise ValueError(f"data not found: {path}")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, image_size, columns)
    with _loaded_lock:
        if key in _loaded and _within(_loaded[key][0], limits):
            return _loaded[key][1]
    dataset = _decode(key[0], image_size, limits, columns)
    with _loaded_lock:
        _loaded[key] = (limits, dataset)
        while len(_loaded) > KEEP_LOADED:
            _loaded.pop(next(iter(_loaded)))
    return dataset


def _within(checked: Limits, asked: Limits) -> bool:
    return all(getattr(checked, name) <= getattr(asked, name) for name in Limits.__dataclass_fields__)


def _decode(path: str, image_size: int, limits: Limits, columns: tuple[str, str] = ("", "")) -> FolderDataset:
    if hub.is_table_source(path):
        table = hub.read_table(path, limits, _split_of, *columns)
        splits, classes, name, notes = table.splits, table.classes, table.name, table.notes
    elif any(columns):
        raise ValueError("--image-column and --label-column need a Hub dataset, a save_to_disk folder or parquet "
                         "files; an ImageFolder's labels are its folders")
    else:
        files = _zip_files(Path(path), limits) if path.endswith(".zip") else _folder_files(Path(path), limits)
        (splits, classes), name, notes = _splits(files, path), f"folder:{Path(path).name}", []
    if len(classes) > limits.classes:
        raise ValueError(f"{path} has {len(classes)} classes; the limit here is {limits.classes}")
    count = sum(len(items) for split in splits.values() for items in split.values())
    if count > limits.images:
        raise ValueError(f"{path} has {count:,} images; the limit here is {limits.images:,}")
    decoded = {name: _decode_split(split, classes, image_size, limits) for name, split in splits.items()}
    grey = all(is_grey for _, _, is_grey in decoded.values())
    tensors = {name: (_stack(images, grey), labels) for name, (images, labels, _) in decoded.items()}
    sizes = {tuple(images.shape[2:]) for images, _ in tensors.values() if len(images)}
    if len(sizes) > 1:
        raise ValueError(f"{path}: the splits' images have different sizes {sorted(sizes)}; pass --image-size N")
    return _assemble(path, tensors, classes, name, notes)


def _assemble(path: str, tensors: dict, classes: tuple[str, ...], name: str, notes: list[str]) -> FolderDataset:
    train_images, train_labels = tensors["train"]
    if "test" in tensors:
        test_images, test_labels = tensors["test"]
    else:
        test = stratified_subset(train_labels, torch.arange(len(train_labels)),
                                 round(TEST_SHARE * len(train_labels)), TEST_SEED)
        keep = torch.ones(len(train_labels), dtype=torch.bool)
        keep[test] = False
        test_images, test_labels = train_images[test], train_labels[test]
        train_images, train_labels = train_images[keep], train_labels[keep]
        notes.append(f"test split: {len(test):,} images ({TEST_SHARE:.0%} of each class, fixed seed)")
    val_index = None
    if "val" in tensors:
        val_images, val_labels = tensors["val"]
        val_index = torch.arange(len(train_labels), len(train_labels) + len(val_labels))
        train_images, train_labels = torch.cat([train_images, val_images]), torch.cat([train_labels, val_labels])
    if len(test_labels) == 0 or len(train_labels) < 2 * len(classes):
        raise ValueError(f"{path} has too few images: {len(train_labels)} for training and {len(test_labels)} "
                         f"for testing, over {len(classes)} classes")
    scaled = train_images.float().div_(255)
    mean = tuple(round(v, 4) for v in scaled.mean((0, 2, 3)).tolist())
    std = tuple(max(round(v, 4), 1e-3) for v in scaled.std((0, 2, 3)).tolist())
    validation = len(val_index) if val_index is not None else len(validation_indices(train_labels))
    notes.append(f"validation split: {validation:,} images" + (" (val/ folder or split)" if val_index is not None
                                                                else " (class-stratified, fixed seed)"))
    return FolderDataset(name, train_images, train_labels, test_images, test_labels, classes, mean, std, path,
                         val_index=val_index, note="; ".join(notes))


# -------------------------------------------------------------------------------------- reading files

def _folder_files(root: Path, limits: Limits) -> dict[str, Path | None]:
    """Relative POSIX path -> file (None for a folder), for everything under `root` (hidden ones left out)."""
    if not root.is_dir():
        raise ValueError(f"--data must be a folder or a .zip of one; got {root}")
    files: dict[str, Path | None] = {}
    for file in sorted(root.rglob("*")):
        relative = file.relative_to(root).as_posix()
        if not _ignored(relative):
            files[relative] = file if file.is_file() else None
    total = sum(file.stat().st_size for file in files.values() if file is not None)
    if total > limits.unpacked_bytes:
        raise ValueError(f"{root} holds {total / 2**20:,.0f} MB of files; the limit here is "
                         f"{limits.unpacked_bytes / 2**20:,.0f} MB")
    return files


def _zip_files(path: Path, limits: Limits) -> dict[str, bytes | None]:
    """Relative POSIX path -> bytes of every file in the zip (None for a folder entry), after checking every
    entry's name and size."""
    if path.stat().st_size > limits.upload_bytes:
        raise ValueError(f"{path.name} is {path.stat().st_size / 2**20:.1f} MB; the limit here is "
                         f"{limits.upload_bytes / 2**20:.0f} MB")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path.name} is not a readable zip file ({error})") from error
    with archive:
        for info in archive.infolist():
            _check_entry(info, path.name)
        entries = [info for info in archive.infolist() if not info.is_dir()]
        total = sum(info.file_size for info in entries)
        if total > limits.unpacked_bytes:
            raise ValueError(f"{path.name} unpacks to {total / 2**20:,.0f} MB; the limit here is "
                             f"{limits.unpacked_bytes / 2**20:,.0f} MB")
        files: dict[str, bytes | None] = {info.filename.rstrip("/"): None for info in archive.infolist()
                                          if info.is_dir() and not _ignored(info.filename)}
        for info in entries:
            if _ignored(info.filename):
                continue
            with archive.open(info) as member:  # never more than the header says, whatever the stream holds
                data = member.read(info.file_size + 1)
            if len(data) > info.file_size:
                raise ValueError(f"{path.name}: entry {info.filename} holds more than its header says")
            files[info.filename] = data
    return files


def _check_entry(info: zipfile.ZipInfo, name: str) -> None:
    parts = PurePosixPath(info.filename.replace("\\", "/")).parts
    if info.filename.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise ValueError(f"{name}: entry {info.filename!r} points outside the archive; refused")
    if info.file_size > 2**20 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        raise ValueError(f"{name}: entry {info.filename!r} inflates {info.file_size // max(info.compress_size, 1):,}"
                         f"-fold (a zip bomb?); refused")


def _ignored(relative: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(relative).parts)


def _splits(files: dict, source: str) -> tuple[dict[str, dict[str, list]], tuple[str, ...]]:
    """({split: {class: [(path, file)]}}, classes) from the paths (folders map to None); steps into one
    wrapping folder."""
    paths = {PurePosixPath(relative): file for relative, file in files.items()}
    while (len({p.parts[0] for p in paths}) == 1 and not _split_of(next(iter(paths)).parts[0])
           and any(file is not None and len(p.parts) > 2 for p, file in paths.items())):
        paths = {PurePosixPath(*p.parts[1:]): file for p, file in paths.items() if len(p.parts) > 1}
    images = {p: file for p, file in paths.items() if file is not None}
    if not images:
        raise ValueError(f"{source} holds no images")
    has_splits = any(len(p.parts) == 3 and _split_of(p.parts[0]) for p in images)
    depth = 3 if has_splits else 2
    for folder in (p for p, file in paths.items() if file is None and len(p.parts) == depth - 1):
        if not any(p.parent == folder for p in images):
            raise ValueError(f"{source}: class folder {folder}/ is empty")
    splits: dict[str, dict[str, list]] = {}
    for p, file in sorted(images.items()):
        split = (_split_of(p.parts[0]) if has_splits else "train") if len(p.parts) == depth else None
        if split is None:
            raise ValueError(f"{source}: {p} is not inside a class folder"
                             + (" of a train/, val/ or test/ folder" if has_splits else ""))
        if not p.name.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{p} is not an image ({', '.join(IMAGE_SUFFIXES)}); remove it from the data")
        splits.setdefault(split, {}).setdefault(p.parts[-2], []).append((str(p), file))
    if "train" not in splits:
        raise ValueError(f"{source} has split folders but no train/ folder")
    classes = tuple(sorted(splits["train"]))
    if len(classes) < 2:
        raise ValueError(f"{source} has one class ({classes[0]}); distillation needs at least two")
    for split, by_class in splits.items():
        unknown = sorted(set(by_class) - set(classes))
        if unknown:
            raise ValueError(f"{source}: {split}/ has classes that train/ lacks: {', '.join(unknown)}")
    return splits, classes


def _split_of(name: str) -> str | None:
    return next((split for split, names in SPLIT_NAMES.items() if name.lower() in names), None)


# -------------------------------------------------------------------------------------- decoding

def _decode_split(by_class: dict[str, list], classes: tuple[str, ...], image_size: int, limits: Limits):
    """(list of PIL images, labels int64 [N], whether all are grey) for one split."""
    images, labels = [], []
    for label, name in enumerate(classes):
        for relative, file in by_class.get(name, []):
            images.append(_open_image(relative, file, image_size, limits))
            labels.append(label)
    grey = all(image.mode in GREY_MODES for image in images)
    return images, torch.tensor(labels, dtype=torch.int64), grey


def _open_image(relative: str, file, image_size: int, limits: Limits):
    """One image file (bytes from a zip, or a path) decoded, or one ValueError naming it: the one place a user's
    images are decoded, so every source (folder, zip, Hub dataset) refuses the same files the same way."""
    from PIL import Image, UnidentifiedImageError  # deferred: only folder runs decode images

    try:
        with warnings.catch_warnings():  # Pillow's own bomb check fires in open(), before ours can read the size
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(file if isinstance(file, bytes) else file.read_bytes()))
        if image.width * image.height > limits.pixels:
            raise ValueError(f"{relative} is {image.width}×{image.height} pixels; the limit here is "
                             f"{limits.pixels:,} pixels per image")
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        declared = re.search(r"\((\d+) pixels\)", str(error))  # Pillow names the size it read from the header
        size = f"declares {int(declared[1]):,} pixels" if declared else "declares too many pixels"
        raise ValueError(f"{relative} {size} (a decompression bomb?); the limit here is {limits.pixels:,} pixels "
                         f"per image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{relative} cannot be decoded as an image ({error}); remove or replace it") from error
    if image_size:
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return image


def _stack(images: list, grey: bool) -> torch.Tensor:
    """uint8 [N, C, H, W] from PIL images, converted to L or RGB."""
    import numpy as np

    mode = "L" if grey else "RGB"
    if not images:
        return torch.empty(0, 1 if grey else 3, 1, 1, dtype=torch.uint8)
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        examples = ", ".join(f"{w}×{h}" for w, h in sorted(sizes)[:3])
        raise ValueError(f"the images have {len(sizes)} different sizes (e.g. {examples}); pass --image-size N "
                         f"to resize them all")
    arrays = np.stack([np.asarray(image.convert(mode)) for image in images])
    tensor = torch.from_numpy(arrays)
    return (tensor.unsqueeze(1) if grey else tensor.permute(0, 3, 1, 2)).contiguous()


def fingerprint(dataset: Dataset) -> str:
    """The data's fingerprint (images, labels, class names): part of the JSON's `data` and the teacher cache."""
    digest = hashlib.sha256(dataset.fingerprint.encode())
    digest.update("\n".join(dataset.classes).encode())
    return digest.hexdigest()[:16]
