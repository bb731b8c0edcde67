import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import torch

from kd_core.models import checkpoints
from kd_core.teacher import logits as teacher
from kd_core.teacher import training
from kd_core.teacher.logits import clear_memory_cache, teacher_logits

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache directory of this test's own: the files `teacher_logits` writes are found by
    listing it, never by rebuilding their names with the production key."""
    directory = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(directory))
    clear_memory_cache()
    yield directory
    clear_memory_cache()


def cache_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.logits.safetensors")) if directory.is_dir() else []


def direct_logits(checkpoint: Path, dataset, images: torch.Tensor) -> torch.Tensor:
    model, _ = checkpoints.load_model(checkpoint)
    with torch.inference_mode():
        return model(dataset.normalize(images))


def test_logits_are_computed_once_then_served_from_memory_and_disk(tiny_teacher, fashion, cache):
    first = teacher_logits(tiny_teacher, fashion)
    assert first.source == "computed"
    assert first.train.shape == (60000, 10) and first.test.shape == (10000, 10)
    assert torch.allclose(first.test[:100], direct_logits(tiny_teacher, fashion, fashion.test_images[:100]),
                          atol=0.02)  # stored as fp16
    assert first.test_acc == pytest.approx(checkpoints.read_metadata(tiny_teacher)["test_acc"], abs=2e-3)
    [written] = cache_files(cache)

    second = teacher_logits(tiny_teacher, fashion)
    assert second.source == "memory" and second.train is first.train
    clear_memory_cache()
    third = teacher_logits(tiny_teacher, fashion)
    assert third.source == "disk"
    assert torch.equal(third.train, first.train)
    assert cache_files(cache) == [written]
    assert teacher.logits_cached(tiny_teacher, fashion)


def changed(what: str, dataset, checkpoint: Path, tmp_path: Path, monkeypatch):
    """(dataset, checkpoint) with exactly one thing the teacher's logits depend on changed."""
    if what == "normalisation":
        return dataclasses.replace(dataset, mean=(0.5,), std=(0.25,)), checkpoint
    if what == "test split":  # the same size, other images: a mirrored test set
        return dataclasses.replace(dataset, test_images=dataset.test_images.flip(3)), checkpoint
    if what == "test labels":
        return dataclasses.replace(dataset, test_labels=dataset.test_labels.roll(1)), checkpoint
    if what == "train images":  # one pixel of one training image
        images = dataset.train_images.clone()
        images[123, 0, 14, 14] ^= 0xFF
        return dataclasses.replace(dataset, train_images=images), checkpoint
    if what == "checkpoint":  # the same architecture and metadata, other weights
        tensors, meta = checkpoints.load_tensors(checkpoint)
        other = checkpoint.with_name("other-teacher.safetensors")
        checkpoints.save_tensors(other, {name: t * 1.5 for name, t in tensors.items()}, meta)
        return dataset, other
    if what == "cache format":
        monkeypatch.setattr(teacher, "CACHE_FORMAT", teacher.CACHE_FORMAT + 1)
        return dataset, checkpoint
    raise AssertionError(what)


@pytest.mark.parametrize("through", ["memory", "disk"])
@pytest.mark.parametrize("what", ["normalisation", "test split", "test labels", "train images", "checkpoint",
                                  "cache format"])
def test_changing_what_the_logits_depend_on_recomputes_them(what, through, tiny_teacher, fashion, cache,
                                                            tmp_path, monkeypatch):
    checkpoint = Path(shutil.copy(tiny_teacher, tmp_path / "teacher.safetensors"))
    teacher_logits(checkpoint, fashion)  # now in memory and in the cache dir
    teacher.save_logits_beside(checkpoint, fashion, teacher_logits(checkpoint, fashion))  # and beside it
    if through == "disk":
        clear_memory_cache()
    dataset, checkpoint = changed(what, fashion, checkpoint, tmp_path, monkeypatch)
    assert not teacher.logits_cached(checkpoint, dataset)

    fresh = teacher_logits(checkpoint, dataset)

    assert fresh.source == "computed"
    sample = torch.arange(0, 10000, 97)
    assert torch.allclose(fresh.test[sample], direct_logits(checkpoint, dataset, dataset.test_images[sample]),
                          atol=0.02)
    assert torch.allclose(fresh.train[:64], direct_logits(checkpoint, dataset, dataset.train_images[:64]),
                          atol=0.02)
    truth = (fresh.test.argmax(1) == dataset.test_labels).float().mean().item()
    assert fresh.test_acc == truth
    assert len(cache_files(cache)) == 2  # the original's and the changed one's, side by side
    assert teacher_logits(checkpoint, dataset).source == "memory"
    clear_memory_cache()
    assert teacher_logits(checkpoint, dataset).source == "disk"


def test_the_test_split_changes_teacher_accuracy_not_just_the_key(tiny_teacher, fashion, cache):
    """The issue's case: the cached test logits must not report the old split's teacher accuracy."""
    before = teacher_logits(tiny_teacher, fashion).test_acc
    shuffled = dataclasses.replace(fashion, test_labels=fashion.test_labels[torch.randperm(
        10000, generator=torch.Generator().manual_seed(0))])
    after = teacher_logits(tiny_teacher, shuffled).test_acc
    assert before > 0.6 and after < 0.2


def test_logits_beside_the_checkpoint_are_served_only_for_their_key(tiny_teacher, fashion, cache, tmp_path):
    checkpoint = Path(shutil.copy(tiny_teacher, tmp_path / "teacher.safetensors"))
    good = teacher_logits(checkpoint, fashion)
    beside = teacher.save_logits_beside(checkpoint, fashion, good)
    assert beside == tmp_path / "teacher.logits.safetensors"
    for stale in cache_files(cache):
        stale.unlink()
    clear_memory_cache()
    assert teacher_logits(checkpoint, fashion).source == "disk"
    # the format shipped before the key covered the test split and the normalisation: never trusted
    checkpoints.save_tensors(beside, {"train": good.train.half(), "test": good.test.half()},
                             {"checkpoint_hash": checkpoints.file_hash(checkpoint),
                              "dataset": fashion.fingerprint})
    clear_memory_cache()
    assert teacher_logits(checkpoint, fashion).source == "computed"


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong-key", "nan", "wrong-shape"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(tiny_teacher, fashion, cache, damage):
    good = teacher_logits(tiny_teacher, fashion)
    [file] = cache_files(cache)
    _, meta = checkpoints.load_tensors(file)
    if damage == "garbage":
        file.write_bytes(b"\x00" * 100)
    elif damage == "truncate":
        file.write_bytes(file.read_bytes()[:5000])
    elif damage == "wrong-key":
        checkpoints.save_tensors(file, {"train": good.train.half(), "test": good.test.half()},
                                 {**meta, "key": "0" * len(meta["key"])})
    elif damage == "nan":
        poisoned = good.train.clone()
        poisoned[7, 3] = float("nan")
        checkpoints.save_tensors(file, {"train": poisoned.half(), "test": good.test.half()}, meta)
    else:
        checkpoints.save_tensors(file, {"train": good.train[:-1].half(), "test": good.test.half()}, meta)
    clear_memory_cache()
    rebuilt = teacher_logits(tiny_teacher, fashion)
    assert rebuilt.source == "computed"
    assert torch.equal(rebuilt.train, good.train)


def test_shipped_teacher_ships_its_logits(shipped_teacher, fashion, cache):
    logits = teacher_logits(shipped_teacher, fashion)
    assert logits.source == "disk", (
        "checkpoints/cnn-teacher-fashion-mnist.logits.safetensors does not match the teacher's cache key; "
        "rewrite it with kd_core.teacher.logits.save_logits_beside (checkpoints/README.md)")
    assert logits.test_acc >= 0.92


def test_train_teacher_reaches_a_sane_accuracy_quickly():
    model, acc = training.train_teacher("fashion-mnist", "mlp-small", epochs=1, batch_size=512, seed=3)
    assert acc > 0.75
    assert not model.training


@pytest.mark.parametrize("option, value, message", [
    ("batch_size", 0, "batch_size"), ("label_smoothing", 5.0, "label_smoothing"),
    ("label_smoothing", 1.0, r"\[0, 1\)"), ("lr", 0.0, "lr"), ("lr", float("nan"), "lr"),
    ("epochs", 0, "epochs"), ("epochs", 2.5, "epochs"), ("seed", -1, "seed"),
])
def test_train_teacher_refuses_bad_options_before_loading_data(option, value, message, monkeypatch):
    from kd_core.data import datasets as data

    monkeypatch.setattr(data, "_load_cached", lambda *args: pytest.fail("loaded data before checking"))
    with pytest.raises(ValueError, match=message):
        training.train_teacher("fashion-mnist", "mlp-tiny", **{option: value})


def test_one_teacher_recipe_documented_where_it_is_used():
    """The recipe's defaults (train_teacher's and the CLI's) are the epochs the README and the card show."""
    import inspect

    from kd_core.__main__ import build_parser

    recipe = training.RECIPE
    assert inspect.signature(training.train_teacher).parameters["epochs"].default == recipe.epochs
    args = build_parser().parse_args(["train-teacher", "--out", "x.safetensors"])
    assert (args.epochs, args.lr, args.batch_size, args.label_smoothing, args.seed, args.arch) == (
        recipe.epochs, recipe.lr, recipe.batch_size, recipe.label_smoothing, recipe.seed, recipe.arch)
    for document in ("README.md", "checkpoints/README.md"):
        text = (ROOT / document).read_text()
        commands = re.findall(r"train-teacher --dataset fashion-mnist --arch cnn-teacher[^`\n]*", text)
        assert commands, document
        for command in commands:
            epochs = re.search(r"--epochs (\d+)", command)
            assert epochs is None or int(epochs[1]) == recipe.epochs, (document, command)
    card = (ROOT / "checkpoints/README.md").read_text()
    assert f"{recipe.epochs} epochs" in card


# ------------------------------------------------------------------------------ penultimate features

def direct_features(checkpoint: Path, dataset, rows: torch.Tensor) -> torch.Tensor:
    """The input of the teacher's last Linear, by running every layer before it (mlp-tiny: 32 wide)."""
    model, _ = checkpoints.load_model(checkpoint)
    with torch.inference_mode():
        return model[:-1].eval()(dataset.normalize(dataset.train_images[rows]))


def feature_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.features.safetensors")) if directory.is_dir() else []


def test_features_are_computed_for_the_rows_a_run_needs_then_served_from_memory_and_disk(tiny_teacher, fashion,
                                                                                       cache):
    first_rows, more_rows = torch.arange(0, 3000, 3), torch.arange(1500, 4500, 3)  # 500 rows in common
    first = teacher.teacher_features(tiny_teacher, fashion, first_rows)
    assert first.source == "computed" and first.computed == 1000 and first.rows.shape == (1000, 32)
    direct = direct_features(tiny_teacher, fashion, first_rows)
    assert torch.allclose(first.rows, direct, rtol=2e-3, atol=1e-3)  # stored as fp16
    [written] = feature_files(cache)
    # the file holds the rows known (indices + float16), not the whole training set: 1,000 × 32 × 2 bytes
    assert 1000 * 32 * 2 < written.stat().st_size < 1000 * 32 * 2 + 1000 * 8 + 1024
    again = teacher.teacher_features(tiny_teacher, fashion, first_rows.flip(0))
    assert again.source == "memory" and again.computed == 0 and torch.equal(again.rows, first.rows.flip(0))
    clear_memory_cache()
    more = teacher.teacher_features(tiny_teacher, fashion, more_rows)
    assert more.source == "computed" and more.computed == 500  # only the rows the first run did not need
    assert torch.allclose(more.rows, direct_features(tiny_teacher, fashion, more_rows), rtol=2e-3, atol=1e-3)
    clear_memory_cache()
    both = teacher.teacher_features(tiny_teacher, fashion, torch.cat([first_rows, more_rows]))
    assert both.source == "disk" and both.computed == 0
    assert torch.equal(both.rows, torch.cat([first.rows, more.rows]))
    assert feature_files(cache) == [written]


@pytest.mark.parametrize("what", ["normalisation", "train images", "checkpoint", "cache format"])
def test_features_share_the_logits_key(what, tiny_teacher, fashion, cache, tmp_path, monkeypatch):
    """Change anything the logits' key covers and the cached features are recomputed, not served."""
    checkpoint = Path(shutil.copy(tiny_teacher, tmp_path / "teacher.safetensors"))
    rows = torch.arange(100, 164)
    teacher.teacher_features(checkpoint, fashion, rows)
    clear_memory_cache()
    dataset, checkpoint = changed(what, fashion, checkpoint, tmp_path, monkeypatch)
    fresh = teacher.teacher_features(checkpoint, dataset, rows)
    assert fresh.source == "computed" and fresh.computed == 64
    assert torch.allclose(fresh.rows, direct_features(checkpoint, dataset, rows), rtol=2e-3, atol=1e-3)
    assert len(feature_files(cache)) == 2


def test_a_features_file_that_does_not_check_out_is_rebuilt(tiny_teacher, fashion, cache):
    rows = torch.arange(64)
    teacher.teacher_features(tiny_teacher, fashion, rows)
    [written] = feature_files(cache)
    tensors, meta = checkpoints.load_tensors(written)
    checkpoints.save_tensors(written, {"index": tensors["index"], "train": tensors["train"] * float("nan")}, meta)
    clear_memory_cache()
    rebuilt = teacher.teacher_features(tiny_teacher, fashion, rows)
    assert rebuilt.source == "computed" and torch.isfinite(rebuilt.rows).all()
    checkpoints.save_tensors(written, {"index": tensors["index"] + 60000, "train": tensors["train"]}, meta)
    clear_memory_cache()
    assert teacher.teacher_features(tiny_teacher, fashion, rows).source == "computed"
