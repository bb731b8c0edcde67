"""A user's images in the `datasets` library's forms: a Hub dataset (`hf:ORG/NAME[:CONFIG]`), a folder written by
`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or `.parquet` files (one file, or a folder of them named by
split as on the Hub: `train-*.parquet`, `data/test.parquet`, …), read into the rows kd_core.data.sources decodes.

The image column is the one `Image` feature (or the one named `image`/`img` among several, or `--image-column`); the
label column the one `ClassLabel` (or `label`/`labels`, or `--label-column`), whose names are the classes; a plain
integer or string label column has its sorted values as classes. Splits keep the library's names and are mapped by
the caller (train; validation, val, valid or dev; test); others are ignored with a note, as is a split with no labels
at all (a Hub test split often has none). The images stay encoded here (bytes): the caller decodes them with the
folder's own function, so one set of checks (format, pixels, bombs) covers every source.

Limits are checked before bytes are read: the rows' count (before download when the Hub's metadata says it), the
download size (`Limits.upload_bytes`), the files' or images' bytes (`Limits.unpacked_bytes`). A Hub dataset is
fetched only after its host answers within OFFLINE_CHECK_S; with HF_HUB_OFFLINE set before the process started the
library's own cache serves it; otherwise offline it is one ValueError at once. `Limits.private_hub` False (the public
Space) reads the Hub anonymously, so a visitor cannot reach datasets the Space's own token can see.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from kd_core.models import weights

HUB_PREFIX = "hf:"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # ORG/NAME, as the Hub spells repository ids
IMAGE_COLUMNS = ("image", "img", "images", "picture", "photo")  # preferred, in order, among several image columns
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "category", "target")
OFFLINE_CHECK_S = weights.OFFLINE_CHECK_S  # the Hub must answer within this, else one line (as for teachers)
NO_LABEL = -1  # ClassLabel's value for an unlabelled row


@dataclass
class Table:
    """What a source holds, before decoding: {split: {class: [(row name, encoded image)]}} in row order."""

    splits: dict[str, dict[str, list[tuple[str, bytes]]]]
    classes: tuple[str, ...]
    name: str  # the Dataset's name: hf:ID for the Hub, folder:NAME for a local folder (as an ImageFolder's)
    notes: list[str] = field(default_factory=list)


def is_table_source(data: str) -> bool:
    """Whether `data` names one of this module's sources (else it is an ImageFolder or a zip)."""
    if data.startswith(HUB_PREFIX):
        return True
    path = Path(data)
    if path.is_file():
        return path.suffix == ".parquet"
    return path.is_dir() and (_saved_to_disk(path) or next(path.rglob("*.parquet"), None) is not None)


def read_table(data: str, limits, split_of: Callable[[str], str | None], image_column: str = "",
               label_column: str = "") -> Table:
    """The rows of `data` by split and class, every limit but the pixels checked; ValueError in one line."""
    splits, name, local = _open(data, limits)
    notes = []
    chosen: dict[str, object] = {}
    for given, rows in splits.items():
        split = split_of(given)
        if split is None:
            notes.append(f"split {given!r} ignored (only train, validation and test are used)")
        elif split in chosen:
            raise ValueError(f"{data} has two {split} splits ({', '.join(k for k in splits if split_of(k) == split)})")
        else:
            chosen[split] = (given, rows)
    if "train" not in chosen:
        raise ValueError(f"{data} has no train split (its splits: {', '.join(splits) or 'none'})")
    features = chosen["train"][1].features
    image = _image_column(features, image_column, data)
    label = _label_column(features, label_column, data, image)
    for given, rows in chosen.values():
        missing = [column for column in (image, label) if column not in rows.features]
        if missing:
            raise ValueError(f"{data}: split {given!r} has no column {missing[0]!r}")
    count = sum(rows.num_rows for _, rows in chosen.values())
    if count > limits.images:
        raise ValueError(f"{data} has {count:,} images; the limit here is {limits.images:,}")
    classes, labels = _classes(chosen, features[label], label, data)
    for split in [split for split in chosen if all(value is None for value in labels[split])]:
        notes.append(f"split {chosen[split][0]!r} ignored: it has no labels")
        del chosen[split]
    table = Table({}, classes, name, notes)
    total = 0
    for split, (given, rows) in chosen.items():
        unlabelled = sum(value is None for value in labels[split])
        if unlabelled:
            raise ValueError(f"{data}: {unlabelled:,} rows of split {given!r} have no label")
        by_class: dict[str, list[tuple[str, bytes]]] = {}
        for i, (encoded, value) in enumerate(zip(_encoded_images(rows, image), labels[split], strict=True)):
            content = _image_bytes(encoded, local, f"{given} row {i}", data)
            total += len(content)
            if total > limits.unpacked_bytes:
                raise ValueError(f"{data}'s images hold over {limits.unpacked_bytes / 2**20:,.0f} MB; the limit here "
                                 f"is {limits.unpacked_bytes / 2**20:,.0f} MB")
            by_class.setdefault(classes[value], []).append((f"{given} row {i}", content))
        table.splits[split] = by_class
    empty = [name for name in classes if name not in table.splits["train"]]
    if empty:
        raise ValueError(f"{data}: class {empty[0]!r} has no training images")
    return table


# -------------------------------------------------------------------------------------- opening a source

def _open(data: str, limits) -> tuple[dict, str, bool]:
    """({split name: datasets.Dataset}, the Dataset's name, whether the source is on this machine)."""
    if data.startswith(HUB_PREFIX):
        return _from_hub(data, limits), data, False
    datasets = _library(data)
    path = Path(data)
    total = sum(file.stat().st_size for file in ([path] if path.is_file() else path.rglob("*")) if file.is_file())
    if total > limits.unpacked_bytes:
        raise ValueError(f"{path} holds {total / 2**20:,.0f} MB of files; the limit here is "
                         f"{limits.unpacked_bytes / 2**20:,.0f} MB")
    try:
        with _quiet(datasets, bars=False):  # instant on local files: no bars
            splits = _local_splits(path, datasets)
    except (OSError, ValueError, TypeError, KeyError) as error:  # the library's ways to say a file is unreadable
        raise ValueError(f"{path} cannot be read as a dataset ({_first_line(error)})") from error
    return splits, f"folder:{path.name}", True


def _local_splits(path: Path, datasets) -> dict:
    if _saved_to_disk(path):
        saved = datasets.load_from_disk(str(path))
        return dict(saved) if isinstance(saved, datasets.DatasetDict) else {"train": saved}
    # parquet: the library's own split names from the files' names; its arrow copy lives only while we read
    with tempfile.TemporaryDirectory(prefix="kd-parquet-") as cache:
        files = {"data_files": {"train": str(path)}} if path.is_file() else {}
        return dict(datasets.load_dataset("parquet" if path.is_file() else str(path), **files, cache_dir=cache,
                                          keep_in_memory=True))


@contextmanager
def _quiet(datasets, bars: bool):
    """The library's log lines silenced (a CLI error is one line: ours) and, unless `bars`, its progress bars."""
    verbosity, shown = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    if not bars:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if shown:
            datasets.enable_progress_bars()


def _saved_to_disk(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _library(data: str):
    try:
        import datasets
    except ImportError as error:
        raise ValueError(f"{data} needs the `datasets` package: pip install datasets") from error
    return datasets


def _from_hub(data: str, limits) -> dict:
    """The Hub dataset's splits, after its host answered and its metadata is within the limits."""
    repo, _, config = data.removeprefix(HUB_PREFIX).partition(":")
    if not HUB_ID.fullmatch(repo):
        raise ValueError(f"a Hub dataset is hf:ORG/NAME or hf:ORG/NAME:CONFIG; got {data!r}")
    _check_online(data)  # before the library's import (2 s or so): offline, the line comes at once
    datasets = _library(data)
    token = None if limits.private_hub else False
    try:  # hf://datasets/: the Hub's, never a local folder of that name (the library looks on disk first)
        with _quiet(datasets, bars=True):
            builder = datasets.load_dataset_builder(f"hf://datasets/{repo}", config or None, token=token)
    except Exception as error:  # a wrong id, a private repo, a dropped connection: one line each
        raise ValueError(f"cannot get {data} ({_first_line(error)})") from error
    info = builder.info
    size = info.download_size or _repo_bytes(repo, token, data)
    if size > limits.upload_bytes:
        raise ValueError(f"{data} is a {size / 2**20:,.0f} MB download; the limit here is "
                         f"{limits.upload_bytes / 2**20:,.0f} MB")
    if info.splits and sum(split.num_examples or 0 for split in info.splits.values()) > limits.images:
        rows = sum(split.num_examples or 0 for split in info.splits.values())
        raise ValueError(f"{data} has {rows:,} images; the limit here is {limits.images:,}")
    try:
        with _quiet(datasets, bars=True):  # a download's bars show it moving
            builder.download_and_prepare()
            return dict(builder.as_dataset())
    except Exception as error:
        raise ValueError(f"cannot get {data} ({_first_line(error)})") from error


def _repo_bytes(repo: str, token, data: str) -> int:
    """The dataset repository's files' bytes (every config's: an upper bound), when its card does not give the
    download size."""
    from huggingface_hub import HfApi

    try:
        files = HfApi().dataset_info(repo, files_metadata=True, token=token).siblings or []
    except Exception as error:
        raise ValueError(f"cannot get {data} ({_first_line(error)})") from error
    return sum(file.size or 0 for file in files)


def _check_online(data: str) -> None:
    """Return when the Hub can be asked; else one ValueError within OFFLINE_CHECK_S (the library would retry for
    about 20 s before failing)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        if _library(data).config.HF_HUB_OFFLINE:  # set before the library was imported: it reads its cache alone
            return
        raise ValueError(f"cannot get {data}: HF_HUB_OFFLINE is set; offline, use a save_to_disk folder or parquet "
                         f"files")
    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443)
    if not weights.answers(host, port, OFFLINE_CHECK_S):
        raise ValueError(f"cannot get {data}: {host} did not answer within {OFFLINE_CHECK_S:g} s (offline?); "
                         f"with HF_HUB_OFFLINE=1 a dataset in the local cache loads, and so do save_to_disk folders "
                         f"and parquet files")


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:160]}" if text else type(error).__name__


# -------------------------------------------------------------------------------------- columns and classes

def _image_column(features, named: str, data: str) -> str:
    from datasets import Image

    images = [column for column, feature in features.items() if isinstance(feature, Image)]
    if named:
        if named not in features:
            raise ValueError(f"{data} has no column {named!r} (its columns: {', '.join(features)})")
        if not isinstance(features[named], Image):
            raise ValueError(f"{data}: column {named!r} holds {_kind(features[named])}, not images")
        return named
    if len(images) == 1:
        return images[0]
    preferred = [column for column in IMAGE_COLUMNS if column in images]
    if preferred:
        return preferred[0]
    if not images:
        raise ValueError(f"{data} has no image column (its columns: {', '.join(features)})")
    raise ValueError(f"{data} has several image columns ({', '.join(images)}); name one with --image-column")


def _label_column(features, named: str, data: str, image: str) -> str:
    from datasets import ClassLabel, Value

    if named:
        if named not in features:
            raise ValueError(f"{data} has no column {named!r} (its columns: {', '.join(features)})")
        if not isinstance(features[named], (ClassLabel, Value)) or named == image:
            raise ValueError(f"{data}: column {named!r} holds {_kind(features[named])}, not labels")
        return named
    class_labels = [column for column, feature in features.items() if isinstance(feature, ClassLabel)]
    if len(class_labels) == 1:
        return class_labels[0]
    candidates = class_labels or [column for column in LABEL_COLUMNS if isinstance(features.get(column), Value)]
    preferred = [column for column in LABEL_COLUMNS if column in candidates]
    if preferred:
        return preferred[0]
    if not candidates:
        raise ValueError(f"{data} has no label column (its columns: {', '.join(features)}); name one with "
                         f"--label-column")
    raise ValueError(f"{data} has several label columns ({', '.join(candidates)}); name one with --label-column")


def _kind(feature) -> str:
    return getattr(feature, "dtype", None) or type(feature).__name__


def _classes(chosen: dict, feature, label: str, data: str) -> tuple[tuple[str, ...], dict[str, list]]:
    """(class names, {split: class index or None per row}): a ClassLabel's names, else the sorted values."""
    from datasets import ClassLabel

    values = {split: list(rows[label]) for split, (_, rows) in chosen.items()}
    if isinstance(feature, ClassLabel):
        classes = tuple(feature.names)
        for split, column in values.items():
            outside = [v for v in column if v is not None and v != NO_LABEL and not 0 <= v < len(classes)]
            if outside:
                raise ValueError(f"{data}: split {chosen[split][0]!r} has label {outside[0]} outside its "
                                 f"{len(classes)} class names")
        labels = {split: [None if v is None or v == NO_LABEL else v for v in column]
                  for split, column in values.items()}
    else:
        present = {v for column in values.values() for v in column if v is not None}
        if any(isinstance(v, float) or isinstance(v, bool) for v in present):
            raise ValueError(f"{data}: column {label!r} holds {_kind(feature)}, not labels")
        ordered = sorted(present, key=lambda v: (isinstance(v, str), v))
        classes = tuple(str(v) for v in ordered)
        index = {v: i for i, v in enumerate(ordered)}
        labels = {split: [None if v is None else index[v] for v in column] for split, column in values.items()}
    if len(classes) < 2:
        raise ValueError(f"{data} has {len(classes)} class{'es' if len(classes) != 1 else ''}; distillation needs "
                         f"at least two")
    return classes, labels


# -------------------------------------------------------------------------------------- images

def _encoded_images(rows, column: str) -> list:
    """The column's images undecoded ({"bytes", "path"} each): decoding is the caller's, with its checks."""
    from datasets import Image

    return list(rows.cast_column(column, Image(decode=False))[column])


def _image_bytes(encoded, local: bool, row: str, data: str) -> bytes:
    """The row's encoded image; a path is read only for a source on this machine (a Hub row naming a path would
    make the Space read its own files)."""
    if isinstance(encoded, dict) and encoded.get("bytes"):
        return encoded["bytes"]
    path = encoded.get("path") if isinstance(encoded, dict) else None
    if local and path and Path(path).is_file():
        return Path(path).read_bytes()
    raise ValueError(f"{data}: {row} holds no image bytes" + (f" (its path {path} is not readable here)" if path
                                                                  else ""))
