import gzip

import pytest
import torch

from kd_core.data import datasets as data
from kd_core.data.datasets import DatasetUnavailable, augment, load_dataset, read_idx, student_indices


def test_fashion_mnist_loads_offline_as_uint8_tensors(fashion):
    assert fashion.train_images.shape == (60000, 1, 28, 28)
    assert fashion.test_images.shape == (10000, 1, 28, 28)
    assert fashion.train_images.dtype == torch.uint8
    assert fashion.train_labels.dtype == torch.int64
    assert torch.bincount(fashion.train_labels).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert fashion.classes[3] == "Dress" and fashion.num_classes == 10


def test_normalisation_statistics_match_the_data(fashion):
    x = fashion.normalize(fashion.train_images[:20000])
    assert x.dtype == torch.float32
    assert x.mean().item() == pytest.approx(0.0, abs=0.01)
    assert x.std().item() == pytest.approx(1.0, abs=0.01)


def test_loading_is_cached_per_process(fashion):
    assert load_dataset("fashion-mnist") is fashion


def test_read_idx_roundtrip(tmp_path):
    payload = bytes(range(24))
    header = bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + payload))
    assert read_idx(path).tolist() == torch.arange(24, dtype=torch.uint8).view(2, 3, 4).tolist()
    (tmp_path / "short").write_bytes(header + payload[:5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_local_torchvision_layout_wins_over_the_debian_copy(tmp_path, monkeypatch, fashion):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(gzip.decompress((data.DEBIAN_FASHION_MNIST / f"{name}.gz").read_bytes()))
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path))
    local = load_dataset("fashion-mnist")
    assert local.source == str(tmp_path.resolve())
    assert torch.equal(local.train_images, fashion.train_images)
    assert torch.equal(local.test_labels, fashion.test_labels)


def test_unavailable_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path))

    def offline(name, root, *, download):
        if download:
            raise OSError("network is unreachable")
        return None

    monkeypatch.setattr(data, "_from_torchvision", offline)
    with pytest.raises(DatasetUnavailable, match=r"mnist is not on this machine.*KD_DATA_DIR"):
        load_dataset("mnist")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="fashion-mnist, mnist, cifar10"):
        load_dataset("imagenet")


def test_student_indices_hide_class_and_stratify(fashion):
    labels = fashion.train_labels
    index = student_indices(labels, train_size=1000, hide_class=3, seed=1)
    counts = torch.bincount(labels[index], minlength=10)
    assert len(index) == 1000 and counts[3] == 0
    assert counts.max() - counts[counts > 0].min() <= 1  # equal shares of the 9 visible classes
    assert torch.equal(index, student_indices(labels, train_size=1000, hide_class=3, seed=1))
    assert not torch.equal(index, student_indices(labels, train_size=1000, hide_class=3, seed=2))
    assert len(student_indices(labels, hide_class=0)) == 54000
    assert len(student_indices(labels)) == 60000


def test_augment_crops_and_flips_reproducibly(fashion):
    images = fashion.train_images[:64]
    once = augment(images, torch.Generator().manual_seed(0), pad=2)
    again = augment(images, torch.Generator().manual_seed(0), pad=2)
    assert once.shape == images.shape and once.dtype == torch.uint8
    assert torch.equal(once, again)
    # with no padding and no flip, augmentation is the identity
    assert torch.equal(augment(images, torch.Generator(), pad=0, flip=False), images)
    # with flips only, every image is itself or its mirror
    flipped = augment(images, torch.Generator().manual_seed(0), pad=0, flip=True)
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


@pytest.mark.parametrize("train_size", [0, 500, 10_000, 54_000, 100_000])
@pytest.mark.parametrize("hide_class", [None, 3])
@pytest.mark.parametrize("seed", [0, 7])
def test_no_hidden_validation_or_test_index_reaches_the_students(fashion, train_size, hide_class, seed):
    """Checked on the indices themselves, not on an accuracy that a few leaked images would not move."""
    labels = fashion.train_labels
    validation = fashion.validation_index
    index = student_indices(labels, train_size=train_size, hide_class=hide_class, seed=seed,
                            exclude=validation)
    assert index.dtype == torch.int64 and len(index) > 0
    assert torch.equal(index, index.unique())  # sorted, each sample once
    # training-set positions only: nothing beyond it (where a test image would sit in a joint numbering)
    assert 0 <= index.min() and index.max() < len(labels)
    assert not torch.isin(index, validation).any()
    if hide_class is not None:
        assert not (labels[index] == hide_class).any()
    available = len(labels) - len(validation) - (0 if hide_class is None else
                                                 int((labels[fashion.fit_index] == hide_class).sum()))
    assert len(index) == (min(train_size, available) if train_size else available)


def test_the_validation_split_is_fixed_stratified_and_disjoint_from_fit(fashion):
    validation, fit = fashion.validation_index, fashion.fit_index
    assert len(validation) == data.VALIDATION_SIZE and len(validation.unique()) == data.VALIDATION_SIZE
    assert torch.bincount(fashion.train_labels[validation]).tolist() == [500] * 10
    assert not torch.isin(fit, validation).any() and len(fit) + len(validation) == len(fashion.train_labels)
    assert torch.equal(validation, data.validation_indices(fashion.train_labels.clone()))
