"""Your own data (kd_core.data.sources) and teacher (kd_core.teacher.sources): folders and zips decode to the same
tensors
as the built-in data, a run on them equals the built-in run, outside teachers round-trip, and every bad input
ends in one `error:` line with exit code 2."""

from __future__ import annotations

import json
import socket
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.data import sources
from kd_core.data.datasets import Dataset
from kd_core.engine import train
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.teacher import sources as teachers


def export_fashion(fashion, root: Path, train_count: int, test_count: int) -> None:
    """The first images of Fashion-MNIST's splits as PNGs in train/ and test/, class folders '0-T-shirt-top', …
    (numbered, so the folders sort in the built-in class order)."""
    for split, images, labels in (("train", fashion.train_images[:train_count], fashion.train_labels[:train_count]),
                                  ("test", fashion.test_images[:test_count], fashion.test_labels[:test_count])):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / f"{label}-{fashion.classes[label].replace('/', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(folder / f"{i:05d}.png")


def same_order_builtin(fashion, train_count: int, test_count: int, mean, std) -> Dataset:
    """The built-in images the export holds, in the folder's order (by class, then by index)."""
    def by_class(labels):
        return torch.argsort(labels, stable=True)

    train_order = by_class(fashion.train_labels[:train_count])
    test_order = by_class(fashion.test_labels[:test_count])
    return Dataset("fashion-mnist", fashion.train_images[:train_count][train_order],
                   fashion.train_labels[:train_count][train_order], fashion.test_images[:test_count][test_order],
                   fashion.test_labels[:test_count][test_order], fashion.classes, mean, std, "built-in")


def write_images(root: Path, counts: dict[str, int], size: int = 12, mode: str = "L", seed: int = 0) -> Path:
    """Synthetic ImageFolder: class k's images are brighter in channel k % 3 (learnable), with noise."""
    generator = torch.Generator().manual_seed(seed)
    for k, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            channels = 1 if mode == "L" else 3
            pixels = torch.randint(0, 80, (size, size, channels), generator=generator)
            pixels[..., k % channels] += 60 + 100 * (k // channels) if mode == "L" else 150
            array = pixels.clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(array[..., 0] if mode == "L" else array, mode).save(root / name / f"{i:03d}.png")
    return root


def zip_folder(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, f"{folder.name}/{file.relative_to(folder)}")
    return out


def run_cli(args: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main(args)
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, json.loads(lines[-1]) if code == 0 and lines else None, captured.err


# ------------------------------------------------------------------------------------------ the data

def test_an_exported_fashion_mnist_folder_gives_the_built_in_run(fashion, tmp_path, capsys):
    """Acceptance: Fashion-MNIST exported to PNGs, run through --data with the shipped teacher, gives the same
    tensors, the same validation split and the same per-seed accuracies as the built-in path on those images
    (normalised alike: a folder's mean and std come from its own training images)."""
    export_fashion(fashion, tmp_path / "fm", 1500, 300)
    folder = sources.load_folder(tmp_path / "fm")
    builtin = same_order_builtin(fashion, 1500, 300, folder.mean, folder.std)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(folder, name), getattr(builtin, name)), name
    assert folder.classes == tuple(f"{k}-{c.replace('/', '-')}" for k, c in enumerate(fashion.classes))
    assert torch.equal(folder.validation_index, builtin.validation_index)
    options = ["--epochs", "2", "--repeats", "2", "--train-size", "500"]
    code, summary, err = run_cli(["distill", "--data", str(tmp_path / "fm"), *options, "--json"], capsys)
    assert code == 0, err
    # no T or α given with --data: both were chosen on the validation split; the run is the built-in one at them
    chosen = summary["chosen"]
    assert (chosen["T"], chosen["alpha"]) in [(row["T"], row["alpha"]) for row in chosen["grid"]]
    cfg = RunConfig(epochs=2, repeats=2, train_size=500, temperature=chosen["T"], alpha=chosen["alpha"])
    expected = train.run(cfg, builtin)
    assert [row["kd_acc"] for row in summary["per_seed"]] == expected.accuracies("kd")
    assert [row["ce_acc"] for row in summary["per_seed"]] == expected.accuracies("ce")
    assert summary["teacher_val_acc"] == pytest.approx(expected.stack.teacher_val_acc)
    assert summary["classes"] == list(folder.classes)
    assert summary["data"] == {"source": str(tmp_path / "fm"), "fingerprint": sources.fingerprint(folder)}
    assert summary["teacher"] == "default" and "teacher_train_seconds" not in summary
    assert summary["config"]["dataset"] == "folder:fm"  # the data it trained on, not the built-in default's name


def test_a_zip_decodes_to_the_folder_s_tensors(tmp_path):
    folder = write_images(tmp_path / "shapes", {"a": 12, "b": 12, "c": 12}, mode="RGB")
    archive = zip_folder(folder, tmp_path / "shapes.zip")
    from_folder, from_zip = sources.load_folder(folder), sources.load_folder(archive)
    assert torch.equal(from_folder.train_images, from_zip.train_images)
    assert torch.equal(from_folder.test_labels, from_zip.test_labels)
    assert from_zip.image_shape == (3, 12, 12) and from_zip.classes == ("a", "b", "c")


def test_without_split_folders_the_test_and_validation_splits_are_stratified_and_said(tmp_path):
    dataset = sources.load_folder(write_images(tmp_path / "d", {"x": 50, "y": 30}))
    assert torch.bincount(dataset.test_labels).tolist() == [10, 6]  # 20 % of each class
    assert len(dataset.train_labels) == 64 and dataset.image_shape == (1, 12, 12)
    assert torch.bincount(dataset.train_labels[dataset.validation_index]).tolist() == [4, 2]
    assert dataset.note == ("test split: 16 images (20% of each class, fixed seed); "
                            "validation split: 6 images (class-stratified, fixed seed)")


def test_a_val_folder_is_the_validation_split_and_image_size_resizes(tmp_path):
    for split, count in (("train", 8), ("validation", 3), ("test", 2)):
        write_images(tmp_path / "d" / split, {"p": count, "q": count}, size=20)
    dataset = sources.load_folder(tmp_path / "d", image_size=9)
    assert dataset.image_shape == (1, 9, 9) and len(dataset.test_labels) == 4
    assert dataset.validation_index.tolist() == [16, 17, 18, 19, 20, 21]
    assert dataset.train_labels[16:].tolist() == [0, 0, 0, 1, 1, 1]
    assert not set(dataset.fit_index.tolist()) & set(dataset.validation_index.tolist())


def test_space_limits_are_enforced(tmp_path):
    folder = write_images(tmp_path / "d", {"a": 6, "b": 6})
    with pytest.raises(ValueError, match="has 12 images; the limit here is 10"):
        sources.load_folder(folder, limits=sources.Limits(images=10))
    with pytest.raises(ValueError, match=r"is 12×12 pixels; the limit here is 100 pixels per image"):
        sources.load_folder(folder, limits=sources.Limits(pixels=100))
    with pytest.raises(ValueError, match="has 2 classes; the limit here is 1"):
        sources.load_folder(folder, limits=sources.Limits(classes=1))
    archive = zip_folder(folder, tmp_path / "d.zip")
    with pytest.raises(ValueError, match=r"d.zip is 0.0 MB; the limit here is 0 MB"):
        sources.load_folder(archive, limits=sources.Limits(upload_bytes=100))


# ------------------------------------------------------------------------------------------ teachers

@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    """An RGB ImageFolder of 40×40 images, three learnable classes."""
    return write_images(tmp_path_factory.mktemp("rgb") / "colours", {"red": 40, "green": 40, "blue": 40},
                        size=40, mode="RGB")


def test_an_rgb_folder_with_the_teacher_at_64_and_the_students_at_32(colours, capsys):
    seen = []
    code, summary, err = run_cli(["distill", "--data", str(colours), "--image-size", "32", "--teacher",
                                  "timm:resnet10t", "--teacher-epochs", "2", "--teacher-image-size", "64",
                                  "--epochs", "2", "--repeats", "2", "--json"], capsys)
    assert code == 0, err
    model, meta = checkpoints.load_model(summary["teacher_checkpoint"])
    assert meta["in_shape"] == [3, 32, 32] and meta["teacher_image_size"] == 64 and meta["teacher_epochs"] == 2
    model.net.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[1:])))
    model(torch.zeros(2, 3, 32, 32))
    assert seen == [(3, 64, 64)]
    assert summary["teacher"] == "timm:resnet10t" and summary["teacher_train_seconds"] > 0
    assert summary["classes"] == ["blue", "green", "red"] and len(summary["per_seed"]) == 2
    assert "teacher epoch 2/2" in err and summary["teacher_val_acc"] > 0.6


def test_local_dir_round_trip_gives_the_same_logits(colours, tmp_path):
    """A timm teacher saved with save_for_hf and loaded by the run (local-dir:) gives the logits the original
    network gives on the same images resized to its input size and normalised with its mean and std."""
    import timm
    from timm.models import save_for_hf

    from kd_core.teacher.logits import teacher_logits
    from kd_core.teacher.training import fit_teacher

    dataset = sources.load_folder(colours, image_size=32)
    net = timm.create_model("resnet10t", num_classes=3)
    wrapped = teachers.external.Preprocessed(net, 3).set_preprocessing(
        dataset.mean, dataset.std, net.pretrained_cfg["mean"], net.pretrained_cfg["std"], 48)
    fit_teacher(wrapped, dataset, epochs=1, lr=3e-3, batch_size=64)
    net.pretrained_cfg = {**net.pretrained_cfg, "input_size": (3, 48, 48)}
    save_for_hf(net.eval(), str(tmp_path / "saved"), safe_serialization=True)
    cfg = RunConfig(data=str(colours), image_size=32, teacher=f"local-dir:{tmp_path / 'saved'}")
    resolved = teachers.resolve(cfg, dataset)
    assert checkpoints.read_metadata(resolved.path)["teacher_image_size"] == 48
    loaded = teacher_logits(resolved.path, dataset).test
    x = torch.nn.functional.interpolate(dataset.test_images.float() / 255, size=(48, 48), mode="bilinear")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (net.pretrained_cfg["mean"], net.pretrained_cfg["std"]))
    with torch.inference_mode():
        direct = net((x - mean) / std)
    torch.testing.assert_close(loaded, direct.half().float(), atol=2e-2, rtol=1e-2)  # the cache stores fp16
    assert (loaded.argmax(1) == direct.argmax(1)).all()


def test_a_timm_student_trains_beside_the_zoo(colours, tmp_path):
    cfg = RunConfig(data=str(colours), image_size=32, student="timm:resnet10t", teacher="zoo:cnn-tiny",
                    teacher_epochs=3, epochs=1, repeats=1, batch_size=64, train_size=0)
    result = train.run(cfg)
    assert isinstance(result.kd_student, teachers.external.Preprocessed)
    assert 0 <= result.kd_acc <= 1 and result.config.teacher.endswith(".safetensors")


def test_hub_ids_fail_fast_offline(monkeypatch, capsys):
    """No 70-second retries: without a network (or with HF_HUB_OFFLINE) a Hub teacher is one line at once."""
    import huggingface_hub  # noqa: F401 (imported before the clock starts: an import is not a retry)
    import timm  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, _, err = run_cli(["distill", "--teacher", "hf-hub:timm/resnet18.a1_in1k"], capsys)
    assert code == 2 and err.startswith("error: cannot get hf-hub:timm/resnet18.a1_in1k")
    assert time.perf_counter() - start < 5  # before any data is read; timm alone retries for about 70 s
    monkeypatch.delenv("HF_HUB_OFFLINE")
    start = time.perf_counter()

    def hang(*args, **kwargs):  # a host that never answers (then fails, in the abandoned thread)
        time.sleep(10)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    code, _, err = run_cli(["distill", "--teacher", "timm:resnet18", "--teacher-pretrained"], capsys)
    assert code == 2 and "huggingface.co did not answer within 1.5 s" in err
    assert time.perf_counter() - start < 8  # a wait for the 10-s hang (or timm's ~70 s of retries) would exceed it


# ------------------------------------------------------------------------------------------ bad input

def zip_with(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def table_with(path: Path, columns: dict[str, list], features: dict) -> Path:
    """A `datasets` table at `path`: parquet when it ends in .parquet, else a save_to_disk folder (no progress bars:
    the bad-input table counts stderr's lines)."""
    import datasets

    datasets.disable_progress_bars()
    try:
        table = datasets.Dataset.from_dict(columns, features=datasets.Features(features) if features else None)
        table.to_parquet(str(path)) if path.suffix == ".parquet" else table.save_to_disk(str(path))
    finally:
        datasets.enable_progress_bars()
    return path


def parquet_with(path: Path, images: list[bytes], labels: list[int]) -> Path:
    """A parquet file of PNG bytes with a two-class ClassLabel."""
    from datasets import ClassLabel, Image

    return table_with(path, {"image": [{"bytes": b, "path": None} for b in images], "label": labels},
                      {"image": Image(), "label": ClassLabel(names=["a", "b"])})


def png(size: int = 28, mode: str = "L") -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new(mode, (size, size), 90).save(buffer, "PNG")
    return buffer.getvalue()


def pixel_bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header declares width × height pixels (900 million by default) and holds none: a few bytes that
    would ask for gigabytes if decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def folder_with(path: Path, entries: dict[str, bytes]) -> Path:
    for name, data in entries.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return path


def rgb_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "rgb.safetensors"
    checkpoints.save_model(path, models.build("cnn-tiny", (3, 28, 28), 10),
                           {"arch": "cnn-tiny", "dataset": "cifar10", "in_shape": [3, 28, 28], "num_classes": 10})
    return str(path)


def grey_ten(tmp_path: Path) -> Path:
    return write_images(tmp_path / "grey10", {f"c{k}": 5 for k in range(10)}, size=28)


BAD_INPUTS = [  # (name, builds the arguments from tmp_path, the error line's start)
    ("zip entry with ..", lambda t: ["--data", str(zip_with(t / "a.zip", {"a/../../evil.png": png(),
                                                                          "b/x.png": png()}))],
     "error: a.zip: entry 'a/../../evil.png' points outside the archive; refused"),
    ("zip entry with an absolute path", lambda t: ["--data", str(zip_with(t / "a.zip", {"/etc/x.png": png()}))],
     "error: a.zip: entry '/etc/x.png' points outside the archive; refused"),
    ("zip bomb", lambda t: ["--data", str(zip_with(t / "a.zip", {"a/big.png": bytes(20 * 2**20)}))],
     "error: a.zip: entry 'a/big.png' inflates"),
    ("pixel-bomb PNG in a zip", lambda t: ["--data", str(zip_with(t / "a.zip", {"a/x.png": png(),
                                                                               "b/huge.png": pixel_bomb_png()}))],
     "error: b/huge.png declares 900,000,000 pixels (a decompression bomb?); the limit here is 16,777,216 pixels "
     "per image"),
    ("pixel-bomb PNG in a folder", lambda t: ["--data", str(folder_with(t / "d", {"a/x.png": png(),
                                                                                  "b/huge.png": pixel_bomb_png()}))],
     "error: b/huge.png declares 900,000,000 pixels (a decompression bomb?); the limit here is 16,777,216 pixels "
     "per image"),
    ("corrupt image", lambda t: ["--data", str(zip_with(t / "a.zip", {"a/x.png": png(), "b/bad.png": b"not png"}))],
     "error: b/bad.png cannot be decoded as an image"),
    ("non-image file", lambda t: ["--data", str(zip_with(t / "a.zip", {"a/x.png": png(), "b/notes.txt": b"hi"}))],
     "error: b/notes.txt is not an image"),
    ("one class only", lambda t: ["--data", str(write_images(t / "one", {"only": 5}))],
     "error: "),
    ("an empty class", lambda t: ["--data", str(zip_with(t / "a.zip", {"d/a/x.png": png(), "d/a/y.png": png(),
                                                                        "d/b/": b""}))],
     "error: "),
    ("teacher's outputs mismatch the classes",
     lambda t: ["--data", str(write_images(t / "three", {"a": 5, "b": 5, "c": 5}, size=28))],
     "error: teacher cnn-teacher-fashion-mnist.safetensors predicts 10 classes but the data has 3"),
    ("grey teacher on RGB data",
     lambda t: ["--data", str(write_images(t / "rgb", {f"c{k}": 5 for k in range(10)}, size=28, mode="RGB"))],
     "error: teacher cnn-teacher-fashion-mnist.safetensors takes grey images but the data is RGB"),
    ("RGB teacher on grey data", lambda t: ["--data", str(grey_ten(t)), "--teacher", rgb_checkpoint(t)],
     "error: teacher rgb.safetensors takes RGB images but the data is grey"),
    ("torchvision teacher on grey data",
     lambda t: ["--data", str(grey_ten(t)), "--teacher", "torchvision:resnet18", "--teacher-epochs", "1"],
     "error: torchvision:resnet18 takes RGB images but this data is grey"),
    ("Hub id without ORG/", lambda t: ["--data", "hf:cifar10"],
     "error: a Hub dataset is hf:ORG/NAME or hf:ORG/NAME:CONFIG; got 'hf:cifar10'"),
    ("corrupt image in a parquet row",
     lambda t: ["--data", str(parquet_with(t / "d.parquet", [png(), b"not png", png(), png()], [0, 1, 0, 1]))],
     "error: train row 1 cannot be decoded as an image"),
    ("a table without an image column",
     lambda t: ["--data", str(table_with(t / "d.parquet", {"text": ["x", "y"], "label": [0, 1]}, {}))],
     "error: "),
    ("an unreadable parquet file", lambda t: ["--data", str(zip_with(t / "a.zip", {}).rename(t / "x.parquet"))],
     "error: "),
    ("a column flag on an ImageFolder", lambda t: ["--data", str(grey_ten(t)), "--image-column", "img"],
     "error: --image-column and --label-column need a Hub dataset, a save_to_disk folder or parquet files"),
    ("image size below what the teacher takes",
     lambda t: ["--data", str(grey_ten(t)), "--image-size", "1"],
     "error: teacher cnn-teacher-fashion-mnist.safetensors cannot take 1×1 images"),
]


@pytest.mark.parametrize("build, start", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_no_cache_is_half_written(build, start, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(cache))
    code, _, err = run_cli(["distill", *build(tmp_path), "--epochs", "1"], capsys)
    assert code == 2
    assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err, err
    assert not list(cache.rglob("*.tmp")) and not list(cache.rglob("teachers/*"))


def test_the_empty_class_and_one_class_messages(tmp_path):
    with pytest.raises(ValueError, match=r"has one class \(only\); distillation needs at least two"):
        sources.load_folder(write_images(tmp_path / "one", {"only": 5}))
    archive = zip_with(tmp_path / "a.zip", {"d/a/x.png": png(), "d/a/y.png": png(), "d/b/": b""})
    with pytest.raises(ValueError, match=r"a.zip: class folder b/ is empty"):
        sources.load_folder(archive)
    folder = write_images(tmp_path / "f", {"a": 5, "b": 5})
    (folder / "c").mkdir()
    with pytest.raises(ValueError, match=r"class folder c/ is empty"):
        sources.load_folder(folder)


def test_a_teacher_no_better_than_chance_stops_the_run(tmp_path, capsys):
    data = write_images(tmp_path / "d", {"a": 30, "b": 30}, size=16)
    code, _, err = run_cli(["distill", "--data", str(data), "--teacher", "zoo:cnn-tiny"], capsys)
    assert code == 2
    assert err == ("error: teacher zoo:cnn-tiny is no better than chance on the validation split (50.0%, chance "
                   "50.0%); train it first with --teacher-epochs N\n")


def test_train_teacher_on_a_folder_saves_a_checkpoint_that_distill_takes(tmp_path, capsys):
    data = write_images(tmp_path / "d", {"a": 30, "b": 30, "c": 30}, size=16)
    out = tmp_path / "t.safetensors"
    code, summary, err = run_cli(["train-teacher", "--data", str(data), "--arch", "cnn-tiny", "--epochs", "12",
                                  "--batch-size", "16", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    meta = checkpoints.read_metadata(out)
    assert meta["classes"] == ["a", "b", "c"] and meta["in_shape"] == [1, 16, 16] and meta["teacher_epochs"] == 12
    assert summary["checkpoint"] == str(out) and summary["val_acc"] > 0.5
    code, summary, err = run_cli(["distill", "--data", str(data), "--teacher", str(out), "--epochs", "1",
                                  "--repeats", "1", "--json"], capsys)
    assert code == 0, err
    assert summary["teacher_checkpoint"] == str(out) and summary["classes"] == ["a", "b", "c"]


def test_hidden_class_transfer_set_methods_students_export_and_sweep_work_on_a_folder(colours, tmp_path, capsys):
    """The rest of the playground on user data and an outside teacher: a hidden class, a transfer set, a feature
    method (the timm teacher's penultimate features), saved students with cards, ONNX export, a sweep."""
    common = ["--data", str(colours), "--image-size", "32", "--teacher", "timm:resnet10t", "--teacher-epochs", "2",
              "--teacher-image-size", "64", "--epochs", "1", "--repeats", "2", "--json"]
    code, summary, err = run_cli(["distill", *common, "--train-size", "40", "--hide-class", "1", "--unlabeled", "15",
                                  "--methods", "kd,hint", "--save-students", str(tmp_path / "students")], capsys)
    assert code == 0, err
    assert summary["unlabeled"] == 15 and summary["kd_hidden_acc"] is not None and len(summary["bias_curve"]) > 1
    assert [m["method"] for m in summary["methods"]] == ["kd", "hint"]
    meta = checkpoints.read_metadata(tmp_path / "students" / "kd-student.safetensors")
    assert meta["classes"] == ["blue", "green", "red"] and meta["dataset"] == "folder:colours"
    assert "green" in (tmp_path / "students" / "kd-student.md").read_text()
    code, exported, err = run_cli(["export", str(tmp_path / "students" / "kd-student.safetensors"), "--out",
                                   str(tmp_path / "kd.onnx"), "--json"], capsys)
    assert code == 0 and exported["within_tolerance"], err
    code, grid, err = run_cli(["sweep", *common, "--T", "1,4", "--alpha", "0.5"], capsys)
    assert code == 0, err
    assert len(grid["grid"]) == 2 and grid["classes"] == ["blue", "green", "red"]
