import pytest
import torch

from kd_core import checkpoints, teacher
from kd_core.teacher import clear_memory_cache, logits_paths, teacher_logits


def test_logits_are_computed_once_then_served_from_memory_and_disk(tiny_teacher, fashion):
    clear_memory_cache()
    for path in logits_paths(tiny_teacher, (checkpoints.file_hash(tiny_teacher), fashion.fingerprint)):
        path.unlink(missing_ok=True)
    first = teacher_logits(tiny_teacher, fashion)
    assert first.source == "computed"
    assert first.train.shape == (60000, 10) and first.test.shape == (10000, 10)
    model, meta = checkpoints.load_model(tiny_teacher)
    with torch.inference_mode():
        direct = model(fashion.normalize(fashion.test_images[:100]))
    assert torch.allclose(first.test[:100], direct, atol=0.02)  # stored as fp16
    assert first.test_acc == pytest.approx(meta["test_acc"], abs=2e-3)

    second = teacher_logits(tiny_teacher, fashion)
    assert second.source == "memory" and second.train is first.train
    clear_memory_cache()
    third = teacher_logits(tiny_teacher, fashion)
    assert third.source == "disk"
    assert torch.equal(third.train, first.train)


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong-key", "nan"])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(tiny_teacher, fashion, damage):
    clear_memory_cache()
    key = (checkpoints.file_hash(tiny_teacher), fashion.fingerprint)
    good = teacher_logits(tiny_teacher, fashion)
    cache = logits_paths(tiny_teacher, key)[-1]
    assert cache.is_file()
    if damage == "garbage":
        cache.write_bytes(b"\x00" * 100)
    elif damage == "truncate":
        cache.write_bytes(cache.read_bytes()[:5000])
    elif damage == "wrong-key":
        checkpoints.save_tensors(cache, {"train": good.train.half(), "test": good.test.half()},
                                 {"checkpoint_hash": "0" * 16, "dataset": key[1]})
    else:
        poisoned = good.train.clone()
        poisoned[7, 3] = float("nan")
        checkpoints.save_tensors(cache, {"train": poisoned.half(), "test": good.test.half()},
                                 {"checkpoint_hash": key[0], "dataset": key[1]})
    clear_memory_cache()
    rebuilt = teacher_logits(tiny_teacher, fashion)
    assert rebuilt.source == "computed"
    assert torch.equal(rebuilt.train, good.train)


def test_shipped_teacher_ships_its_logits(shipped_teacher, fashion):
    clear_memory_cache()
    logits = teacher_logits(shipped_teacher, fashion)
    assert logits.source == "disk"
    assert logits.test_acc >= 0.92


def test_train_teacher_reaches_a_sane_accuracy_quickly():
    model, acc = teacher.train_teacher("fashion-mnist", "mlp-small", epochs=1, batch_size=512, seed=3)
    assert acc > 0.75
    assert not model.training
