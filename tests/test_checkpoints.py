import json
import os

import pytest
import torch

from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.models.checkpoints import CheckpointError, atomic_write, load_model, save_model

META = {"arch": "mlp-small", "dataset": "fashion-mnist", "in_shape": [1, 28, 28], "num_classes": 10,
        "test_acc": 0.5, "recipe": "test", "seed": 0}


def test_save_load_gives_the_same_predictions(tmp_path):
    torch.manual_seed(0)
    model = models.build("mlp-small").eval()
    path = save_model(tmp_path / "m.safetensors", model, META)
    loaded, meta = load_model(path)
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta["arch"] == "mlp-small" and meta["params"] == 101770 and meta["test_acc"] == 0.5
    assert not loaded.training
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_batchnorm_buffers_round_trip(tmp_path):
    model = models.build("cnn-tiny")
    model.train()
    model(torch.randn(32, 1, 28, 28))  # moves the running statistics away from their init
    model.eval()
    path = save_model(tmp_path / "c.safetensors", model, {**META, "arch": "cnn-tiny"})
    loaded, _ = load_model(path)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))


def test_metadata_must_name_the_architecture(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        save_model(tmp_path / "m.safetensors", models.build("mlp-tiny"), {"dataset": "x"})


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def broken(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x80\x04K\x01."])
def test_corrupted_or_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path)


def test_pickled_torch_file_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save(models.build("mlp-tiny").state_dict(), path)
    with pytest.raises(CheckpointError):
        load_model(path)


def test_wrong_metadata_for_the_weights(tmp_path):
    path = save_model(tmp_path / "m.safetensors", models.build("mlp-tiny"), META)
    tensors, meta = checkpoints.load_tensors(path)
    checkpoints.save_tensors(path, tensors, {**meta, "arch": "mlp-small"})
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(path)


def test_missing_teacher_paths():
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.resolve_teacher("/nonexistent/teacher.safetensors", "fashion-mnist")
    with pytest.raises(CheckpointError, match="train-teacher"):
        checkpoints.resolve_teacher("default", "cifar10")


def test_shipped_teacher_and_its_model_card(shipped_teacher, fashion):
    teacher, meta = load_model(shipped_teacher)
    assert meta["arch"] == "cnn-teacher" and meta["dataset"] == "fashion-mnist"
    assert meta["test_acc"] >= 0.92
    assert "train-teacher" in meta["recipe"]
    card = (checkpoints.CHECKPOINT_DIR / "README.md").read_text()
    assert f"{meta['test_acc'] * 100:.2f}" in card
    assert json.loads(json.dumps(meta)) == meta


def teacher_checkpoint(tmp_path, name: str = "teacher", *, shape=(1, 28, 28), classes: int = 10,
                       **meta):
    """A real checkpoint, written by save_model, of an mlp-tiny built for `shape` and `classes`."""
    model = models.build("mlp-tiny", shape, classes)
    return save_model(tmp_path / f"{name}.safetensors", model,
                      {"arch": "mlp-tiny", "dataset": "fashion-mnist", "in_shape": list(shape),
                       "num_classes": classes, **meta})


def test_a_teacher_made_for_the_dataset_fits(tmp_path):
    path = teacher_checkpoint(tmp_path)
    assert checkpoints.check_teacher_fits(path, "fashion-mnist")["arch"] == "mlp-tiny"
    colour = teacher_checkpoint(tmp_path, "colour", shape=(3, 32, 32), dataset="cifar10")
    assert checkpoints.check_teacher_fits(colour, "cifar10")["in_shape"] == [3, 32, 32]


@pytest.mark.parametrize("build, dataset, message", [
    (dict(shape=(3, 32, 32)), "fashion-mnist", r"takes 3×32×32 images, but fashion-mnist's are 1×28×28"),
    (dict(classes=100), "fashion-mnist", r"predicts 100 classes, but fashion-mnist has 10"),
    (dict(dataset="mnist"), "fashion-mnist", r"was trained on mnist, not fashion-mnist"),
    (dict(), "mnist", r"was trained on fashion-mnist, not mnist"),
    (dict(), "cifar10", r"takes 1×28×28 images, but cifar10's are 3×32×32"),
])
def test_a_teacher_that_does_not_fit_is_one_clear_error(tmp_path, build, dataset, message):
    path = teacher_checkpoint(tmp_path, **build)
    with pytest.raises(CheckpointError, match=message) as caught:
        checkpoints.check_teacher_fits(path, dataset)
    assert "\n" not in str(caught.value)


def test_a_teacher_without_its_dataset_in_the_metadata_is_refused(tmp_path):
    path = teacher_checkpoint(tmp_path)
    tensors, meta = checkpoints.load_tensors(path)
    del meta["dataset"]
    checkpoints.save_tensors(path, tensors, meta)
    with pytest.raises(CheckpointError, match="does not record its dataset"):
        checkpoints.check_teacher_fits(path, "fashion-mnist")


def test_the_fit_check_reads_only_the_header(tmp_path, monkeypatch):
    path = teacher_checkpoint(tmp_path)
    monkeypatch.setattr(checkpoints, "load_file", lambda *a: pytest.fail("read the tensors"))
    assert checkpoints.read_metadata(path)["num_classes"] == 10
    checkpoints.check_teacher_fits(path, "fashion-mnist")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoints.check_teacher_fits(tmp_path / "missing.safetensors", "fashion-mnist")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable"):
        checkpoints.read_metadata(tmp_path / "junk.safetensors")


def test_the_shipped_teacher_fits_its_dataset(shipped_teacher):
    assert checkpoints.check_teacher_fits(shipped_teacher, "fashion-mnist")["dataset"] == "fashion-mnist"
