"""Hub datasets, save_to_disk folders and parquet files (kd_core.data.hub): the same images as an ImageFolder give the
same tensors, fingerprint and run; splits are mapped, columns found or named, ClassLabel names kept, the limits
applied, and a Hub id fails in one line at once offline."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from datasets import ClassLabel, Image, Value
from test_sources import export_fashion, png, run_cli, table_with, write_images

from kd_core.data import hub, sources

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}  # ImageFolder's folder -> the Hub's split


def rows_of(folder: Path) -> dict[str, dict[str, list]]:
    """An ImageFolder's files as table columns per split, in the folder loader's order (class, then file name)."""
    classes = sorted(p.name for p in (folder / "train").iterdir())
    splits = {}
    for split in sorted(p.name for p in folder.iterdir()):
        files = [(k, file) for k, name in enumerate(classes) for file in sorted((folder / split / name).iterdir())]
        splits[SPLIT_NAMES[split]] = {"image": [{"bytes": file.read_bytes(), "path": file.name} for _, file in files],
                                      "label": [k for k, _ in files], "id": list(range(len(files)))}
    return splits


def save_forms(folder: Path, root: Path) -> tuple[Path, Path]:
    """The ImageFolder as a DatasetDict.save_to_disk folder and as parquet files (data/SPLIT-00000-of-00001.parquet),
    each in a folder of the ImageFolder's name; an `id` column besides, so the label column must be found."""
    classes = sorted(p.name for p in (folder / "train").iterdir())
    features = datasets.Features({"image": Image(), "label": ClassLabel(names=classes), "id": Value("int64")})
    splits = {name: datasets.Dataset.from_dict(columns, features=features) for name, columns in rows_of(folder).items()}
    disk, parquet = root / "disk" / folder.name, root / "parquet" / folder.name / "data"
    datasets.DatasetDict(splits).save_to_disk(str(disk))
    parquet.mkdir(parents=True)
    for name, split in splits.items():
        split.to_parquet(str(parquet / f"{name}-00000-of-00001.parquet"))
    return disk, parquet.parent


def assert_same_data(a: sources.FolderDataset, b: sources.FolderDataset) -> None:
    for name in ("train_images", "train_labels", "test_images", "test_labels", "validation_index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert (a.classes, a.mean, a.std, a.name) == (b.classes, b.mean, b.std, b.name)
    assert sources.fingerprint(a) == sources.fingerprint(b)


def test_the_same_images_in_three_forms_give_the_same_data_fingerprint_and_per_seed_accuracies(fashion, tmp_path,
                                                                                                capsys):
    """Acceptance: Fashion-MNIST images as an ImageFolder, a save_to_disk folder and parquet files (each in a folder
    named fm) decode to equal tensors with one fingerprint, and distil to the same per-seed accuracies."""
    folder = tmp_path / "folder" / "fm"
    export_fashion(fashion, folder, 800, 200)
    disk, parquet = save_forms(folder, tmp_path)
    loaded = [sources.load_folder(path) for path in (folder, disk, parquet)]
    for other in loaded[1:]:
        assert_same_data(loaded[0], other)
    summaries = []
    for path in (folder, disk, parquet):
        code, summary, err = run_cli(["distill", "--data", str(path), "--epochs", "1", "--repeats", "2",
                                      "--train-size", "300", "--json"], capsys)
        assert code == 0, err
        assert summary["data"] == {"source": str(path), "fingerprint": sources.fingerprint(loaded[0])}
        summaries.append(summary)
    accuracies = [[(row["ce_acc"], row["kd_acc"]) for row in summary["per_seed"]] for summary in summaries]
    assert accuracies[0] == accuracies[1] == accuracies[2] and len(accuracies[0]) == 2
    assert {summary["config"]["dataset"] for summary in summaries} == {"folder:fm"}


def test_a_validation_split_is_the_validation_split_and_a_missing_test_split_is_carved_as_for_a_folder(tmp_path):
    for split, count in (("train", 20), ("val", 4)):
        write_images(tmp_path / "folder" / "d" / split, {"p": count, "q": count, "r": count}, size=10)
    disk, parquet = save_forms(tmp_path / "folder" / "d", tmp_path)
    folder = sources.load_folder(tmp_path / "folder" / "d")
    assert len(folder.test_labels) == 12 and folder.validation_index.tolist() == list(range(48, 60))
    assert_same_data(folder, sources.load_folder(disk))
    assert_same_data(folder, sources.load_folder(parquet))
    assert sources.load_folder(disk).note.startswith("test split: 12 images (20% of each class, fixed seed)")


def test_other_splits_and_unlabelled_splits_are_ignored_with_a_note(tmp_path):
    columns = {"image": images(10), "label": [0, 1] * 5}
    features = {"image": Image(), "label": ClassLabel(names=["a", "b"])}
    unlabelled = {**columns, "label": [-1] * 10}
    splits = {name: datasets.Dataset.from_dict(value, features=datasets.Features(features))
              for name, value in (("train", columns), ("unsupervised", columns), ("test", unlabelled))}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "d"))
    dataset = sources.load_folder(tmp_path / "d")
    assert len(dataset.train_labels) + len(dataset.test_labels) == 10
    assert dataset.note.startswith("split 'unsupervised' ignored (only train, validation and test are used); "
                                   "split 'test' ignored: it has no labels; test split: 2 images")


# ------------------------------------------------------------------------------------------ columns and classes

def table(tmp_path: Path, columns: dict, features: dict, name: str = "t") -> Path:
    return table_with(tmp_path / name, columns, features)


def images(count: int, shade: int = 90) -> list[dict]:
    """`count` grey 8×8 PNGs of one shade, as an Image column's rows."""
    import io

    from PIL import Image as Picture

    buffer = io.BytesIO()
    Picture.new("L", (8, 8), shade).save(buffer, "PNG")
    return [{"bytes": buffer.getvalue(), "path": None}] * count


def test_the_image_column_is_found_or_named(tmp_path):
    two = table(tmp_path, {"left": images(6), "right": images(6, 200), "label": [0, 1] * 3},
                {"left": Image(), "right": Image(), "label": ClassLabel(names=["a", "b"])})
    with pytest.raises(ValueError, match=r"has several image columns \(left, right\); name one with --image-column"):
        sources.load_folder(two)
    assert sources.load_folder(two, image_column="right").train_images.unique().tolist() == [200]
    assert sources.load_folder(two, image_column="left").train_images.unique().tolist() == [90]
    with pytest.raises(ValueError, match=r"has no column 'photo' \(its columns: left, right, label\)"):
        sources.load_folder(two, image_column="photo")
    with pytest.raises(ValueError, match=r"column 'label' holds int64, not images"):
        sources.load_folder(two, image_column="label")
    preferred = table(tmp_path, {"mask": images(6, 200), "image": images(6), "label": [0, 1] * 3},
                      {"mask": Image(), "image": Image(), "label": ClassLabel(names=["a", "b"])}, "p")
    assert sources.load_folder(preferred).train_images.unique().tolist() == [90]  # `image` among several


def test_the_label_column_is_found_or_named_and_class_names_come_from_the_class_label(tmp_path):
    two = table(tmp_path, {"image": images(12), "coarse": [0, 1] * 6, "fine": [0, 1, 2] * 4},
                {"image": Image(), "coarse": ClassLabel(names=["x", "y"]),
                 "fine": ClassLabel(names=["zebra", "ant", "mole"])})
    with pytest.raises(ValueError, match=r"has several label columns \(coarse, fine\); name one with --label-column"):
        sources.load_folder(two)
    fine = sources.load_folder(two, label_column="fine")
    assert fine.classes == ("zebra", "ant", "mole")  # the ClassLabel's order, not sorted
    assert sorted(torch.cat([fine.train_labels, fine.test_labels]).tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert sources.load_folder(two, label_column="coarse").classes == ("x", "y")
    strings = table(tmp_path, {"image": images(6), "species": ["owl", "cat"] * 3},
                    {"image": Image(), "species": Value("string")}, "s")
    with pytest.raises(ValueError, match=r"has no label column \(its columns: image, species\); name one with "
                                         r"--label-column"):
        sources.load_folder(strings)
    assert sources.load_folder(strings, label_column="species").classes == ("cat", "owl")
    numbers = table(tmp_path, {"image": images(6), "label": [10, 2] * 3}, {"image": Image(), "label": Value("int64")},
                    "n")
    assert sources.load_folder(numbers).classes == ("2", "10")  # a plain integer label: its values, in order


def test_the_column_flags_reach_the_data_from_the_cli(tmp_path, capsys):
    two = table(tmp_path, {"left": images(30), "right": images(30, 200), "label": [0, 1] * 15},
                {"left": Image(), "right": Image(), "label": ClassLabel(names=["a", "b"])})
    code, _, err = run_cli(["distill", "--data", str(two), "--teacher", "zoo:cnn-tiny"], capsys)
    assert code == 2 and err.startswith("error: ") and "name one with --image-column" in err
    code, _, err = run_cli(["distill", "--data", str(two), "--image-column", "right", "--label-column", "nope",
                            "--teacher", "zoo:cnn-tiny"], capsys)
    assert code == 2 and err.count("\n") == 1 and "has no column 'nope' (its columns: left, right, label)" in err
    out = str(tmp_path / "t.safetensors")
    code, _, err = run_cli(["train-teacher", "--data", str(two), "--image-column", "right", "--label-column", "nope",
                            "--arch", "cnn-tiny", "--out", out], capsys)
    assert code == 2 and "has no column 'nope' (its columns: left, right, label)" in err
    code, _, err = run_cli(["train-teacher", "--label-column", "label", "--out", out], capsys)
    assert (code, err) == (2, "error: --image-column and --label-column need --data\n")


# ------------------------------------------------------------------------------------------ limits

def test_the_zip_limits_apply(tmp_path):
    path = table(tmp_path, {"image": images(6) + [{"bytes": png(40), "path": None}] * 2, "label": [0, 1, 2, 0] * 2},
                 {"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    with pytest.raises(ValueError, match="has 8 images; the limit here is 7"):
        sources.load_folder(path, limits=sources.Limits(images=7))
    with pytest.raises(ValueError, match="has 3 classes; the limit here is 2"):
        sources.load_folder(path, limits=sources.Limits(classes=2))
    with pytest.raises(ValueError, match=r"train row 7 is 40×40 pixels; the limit here is 100 pixels per image"):
        sources.load_folder(path, limits=sources.Limits(pixels=100), image_size=8)
    with pytest.raises(ValueError, match=r"holds 0 MB of files; the limit here is 0 MB"):
        sources.load_folder(path, limits=sources.Limits(unpacked_bytes=1000))


# ------------------------------------------------------------------------------------------ the Hub

class StandInBuilder:
    """What `datasets.load_dataset_builder` returns, for a Hub dataset made here: its metadata and its splits."""

    def __init__(self, splits: datasets.DatasetDict, download_size: int | None):
        self.splits, self.prepared = splits, False
        self.info = SimpleNamespace(download_size=download_size,
                                    splits={k: SimpleNamespace(num_examples=v.num_rows) for k, v in splits.items()})

    def download_and_prepare(self):
        self.prepared = True

    def as_dataset(self):
        return self.splits


@pytest.fixture
def stand_in_hub(tmp_path, monkeypatch):
    """The Hub's side of `datasets` replaced by a builder over local splits; the calls it got."""
    calls = []
    picture = tmp_path / "on-this-machine.png"
    picture.write_bytes(png(8))
    columns = {"image": images(10), "label": [0, 1] * 5}
    features = datasets.Features({"image": Image(), "label": ClassLabel(names=["a", "b"])})
    builder = StandInBuilder(datasets.DatasetDict(train=datasets.Dataset.from_dict(columns, features=features)),
                             download_size=10_000)

    def load_dataset_builder(path, name=None, **options):
        calls.append((path, name, options))
        return builder

    monkeypatch.setattr(hub, "_check_online", lambda data: None)
    monkeypatch.setattr(datasets, "load_dataset_builder", load_dataset_builder)
    return SimpleNamespace(calls=calls, builder=builder, picture=picture, features=features)


def test_a_hub_id_is_asked_of_the_hub_with_its_config_and_anonymously_on_the_space(stand_in_hub):
    dataset = sources.load_folder("hf:org/name:small")
    assert dataset.name == "hf:org/name:small" and dataset.classes == ("a", "b") and len(dataset.test_labels) == 2
    assert stand_in_hub.calls == [("hf://datasets/org/name", "small", {"token": None})]  # never a local folder
    sources.load_folder("hf:org/other", limits=sources.SPACE_LIMITS)
    assert stand_in_hub.calls[-1] == ("hf://datasets/org/other", None, {"token": False})


def test_a_hub_dataset_over_the_limits_is_refused_before_its_download(stand_in_hub):
    with pytest.raises(ValueError, match=r"hf:org/big is a 0 MB download; the limit here is 0 MB"):
        sources.load_folder("hf:org/big", limits=sources.Limits(upload_bytes=1000))
    with pytest.raises(ValueError, match=r"hf:org/many has 10 images; the limit here is 9"):
        sources.load_folder("hf:org/many", limits=sources.Limits(images=9))
    assert not stand_in_hub.builder.prepared


def test_without_a_download_size_in_its_card_the_repository_s_files_are_counted(stand_in_hub, monkeypatch):
    import huggingface_hub

    asked = []

    def dataset_info(self, repo_id, files_metadata=False, token=None):
        asked.append((repo_id, files_metadata, token))
        return SimpleNamespace(siblings=[SimpleNamespace(size=600), SimpleNamespace(size=500)])

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", dataset_info)
    stand_in_hub.builder.info.download_size = None
    with pytest.raises(ValueError, match=r"hf:org/unsized is a 0 MB download; the limit here is 0 MB"):
        sources.load_folder("hf:org/unsized", limits=sources.Limits(upload_bytes=1000, private_hub=False))
    assert asked == [("org/unsized", True, False)] and not stand_in_hub.builder.prepared
    assert sources.load_folder("hf:org/unsized", limits=sources.Limits(upload_bytes=1100)).classes == ("a", "b")


def test_a_hub_row_naming_a_path_is_never_read_from_this_machine(stand_in_hub):
    rows = {"image": [{"bytes": None, "path": str(stand_in_hub.picture)}] * 10, "label": [0, 1] * 5}
    train = datasets.Dataset.from_dict(rows, features=stand_in_hub.features)
    stand_in_hub.builder.splits = datasets.DatasetDict(train=train.cast_column("image", Image(decode=False)))
    with pytest.raises(ValueError, match=r"hf:org/paths: train row 0 holds no image bytes"):
        sources.load_folder("hf:org/paths")


def test_offline_a_hub_id_is_one_line_within_seconds(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = run_cli(["distill", "--data", "hf:uoft-cs/cifar10", "--epochs", "1"], capsys)
    assert code == 2 and err.startswith("error: cannot get hf:uoft-cs/cifar10")
    assert err.count("\n") == 1 and time.perf_counter() - start < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def hang(*args, **kwargs):  # a host that never answers (the library alone retries for about 20 s)
        time.sleep(10)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    code, _, err = run_cli(["distill", "--data", "hf:uoft-cs/cifar10", "--epochs", "1"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "huggingface.co did not answer within 1.5 s (offline?)" in err
    assert time.perf_counter() - start < 8
