"""The CIFAR-10 track on CPU, with small generated colour images (the real CIFAR-10 is online-only here)."""

from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.data import datasets as data
from kd_core.data.datasets import CLASSES, NORMALISATION, Dataset, DatasetUnavailable
from kd_core.engine import budget as engine_budget
from kd_core.engine import loop as engine
from kd_core.engine import train
from kd_core.models import checkpoints, weights
from kd_core.models import zoo as models
from kd_core.run import as_run
from kd_core.teacher import logits as teacher
from kd_core.teacher import training
from kd_core.teacher.logits import clear_memory_cache


def colour_dataset(train: int = 64, test: int = 32) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (train + test, 3, 32, 32), generator=generator, dtype=torch.uint8)
    labels = torch.arange(train + test) % 10
    mean, std = NORMALISATION["cifar10"]
    return Dataset("cifar10", images[:train], labels[:train], images[train:], labels[train:],
                   CLASSES["cifar10"], mean, std, source="generated")


@pytest.fixture
def cifar_teacher(tmp_path):
    torch.manual_seed(0)
    model = models.build("cnn-tiny", (3, 32, 32), 10).eval()
    return checkpoints.save_model(tmp_path / "teacher.safetensors", model,
                                  {"arch": "cnn-tiny", "dataset": "cifar10", "in_shape": [3, 32, 32],
                                   "num_classes": 10})


@pytest.mark.parametrize("name, params", [("resnet18-cifar", 11_173_962), ("resnet50-cifar", 23_520_842)])
def test_cifar_resnets_take_32x32_colour_images(name, params):
    model = models.build(name, (3, 32, 32), 10).eval()
    assert models.describe(model)["params"] == params
    assert isinstance(model.maxpool, torch.nn.Identity) and model.conv1.kernel_size == (3, 3)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_stem_variant_resizes_to_224():
    model = models.build("resnet18", (3, 32, 32), 10).eval()
    seen = {}
    model[1].conv1.register_forward_hook(lambda m, inputs, out: seen.update(shape=inputs[0].shape))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert seen["shape"] == (1, 3, 224, 224)


def offline_weights(monkeypatch):
    monkeypatch.setattr(weights, "reachable_or_cached", lambda *args: None)  # the host answers; the download fails
    """torchvision's weight download fails as it does without a network (fast, and never downloads)."""
    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)


def imagenet_like_weights(monkeypatch) -> dict[str, torch.Tensor]:
    """torchvision's weight download 'succeeds' with a seeded 1000-class ResNet-18's state dict."""
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setattr(weights, "reachable_or_cached", lambda *args: None)  # online, as far as the probe knows
    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", lambda self, **kw: state)
    return state


def test_pretrained_weights_unavailable_stop_with_one_line_never_a_random_start(monkeypatch):
    offline_weights(monkeypatch)
    model = models.build("resnet18-cifar", (3, 32, 32), 10)
    with pytest.raises(ValueError) as error:
        models.load_pretrained("resnet18-cifar", model)
    assert str(error.value) == ("cannot download torchvision:resnet18's weights (URLError: <urlopen error [Errno -2] "
                                "Name or service not known>)")


@pytest.mark.parametrize("name, skipped", [("resnet18-cifar", {"conv1.weight", "fc.weight", "fc.bias"}),
                                           ("resnet18", {"fc.weight", "fc.bias"})])
def test_pretrained_weights_fill_the_body_but_not_the_new_head_or_cifar_stem(monkeypatch, name, skipped):
    imagenet = imagenet_like_weights(monkeypatch)
    model = models.build(name, (3, 32, 32), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = models.load_pretrained(name, model)
    body = model[1] if name == "resnet18" else model
    after = body.state_dict()
    loaded = len(after) - len(skipped)
    assert message == f"loaded ImageNet weights for {loaded} of {len(after)} tensors of {name}"
    prefix = "1." if name == "resnet18" else ""
    for key, value in after.items():
        expected = before[prefix + key] if key in skipped else imagenet[key]
        assert torch.equal(value, expected), key


def test_pretrained_needs_a_model_with_imagenet_weights():
    with pytest.raises(ValueError, match="cnn-tiny has no ImageNet weights"):
        models.load_pretrained("cnn-tiny", models.build("cnn-tiny", (3, 32, 32), 10))
    with pytest.raises(ValueError, match="pretrained needs a student with ImageNet weights.*mlp-small"):
        RunConfig(pretrained=True).validate()
    with pytest.raises(ValueError, match="pretrained must be true or false"):
        RunConfig(student="resnet18-cifar", pretrained="yes").validate()
    with pytest.raises(ValueError, match="needs one of resnet18-cifar.*cnn-teacher has no ImageNet"):
        training.train_teacher("cifar10", "cnn-teacher", pretrained=True)  # refused before any data loads


@pytest.mark.parametrize("args, message", [
    (["distill", "--pretrained"], "pretrained needs a student with ImageNet weights"),
    (["train-teacher", "--arch", "cnn-teacher", "--pretrained", "--out", "t.safetensors"],
     "cnn-teacher has no ImageNet weights"),
])
def test_cli_refuses_pretrained_without_imagenet_weights(args, message, capsys):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_pretrained_students_start_from_the_same_weights_and_say_where_from(cifar_teacher, monkeypatch):
    imagenet = imagenet_like_weights(monkeypatch)
    clear_memory_cache()
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="resnet18-cifar",
                    pretrained=True, repeats=1)
    stream = engine.train_stack(as_run(cfg, colour_dataset()), train.roles(cfg))
    started = next(stream)
    students = stream.gi_frame.f_locals["trainer"].students  # a ModuleStack: ResNets are not stacked
    ce_student, kd_student = students.module(0), students.module(1)
    stream.close()  # no training needed: the students exist once StackStarted is out
    assert len(started.notes) == 1
    assert started.notes[0].startswith("loaded ImageNet weights for ")
    assert torch.equal(ce_student.layer1[0].conv1.weight, imagenet["layer1.0.conv1.weight"])
    for ce, kd in zip(ce_student.state_dict().values(), kd_student.state_dict().values(), strict=True):
        assert torch.equal(ce, kd)
    assert engine.StackStarted(cfg, "cpu", (), (0,), 0.0, 0.0, 0, 0, 0, 0, 0.0, "memory").notes == ()


def test_pretrained_students_whose_weights_cannot_be_had_stop_the_run_before_any_data(cifar_teacher, monkeypatch):
    offline_weights(monkeypatch)
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="resnet18-cifar", pretrained=True)
    with pytest.raises(ValueError, match=r"^cannot download torchvision:resnet18's weights \(URLError"):
        as_run(cfg, colour_dataset())


def test_cifar10_offline_says_how_to_get_it(tmp_path, monkeypatch):
    """The real torchvision path: no files under $KD_DATA_DIR, then a download that fails as offline."""
    import torchvision.datasets.cifar

    def offline(url, *args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailable) as caught:
        data.load_dataset("cifar10")
    assert str(caught.value) == (
        f"cifar10 is not on this machine and could not be downloaded (URLError: <urlopen error [Errno -2] "
        f"Name or service not known>). Get it with an internet connection once (it is saved under "
        f"{tmp_path.resolve()}), or put torchvision's files there or in $KD_DATA_DIR.")
    assert "cifar10" not in data.available_datasets()


def test_cifar10_files_in_torchvisions_layout_load_as_nchw_uint8(tmp_path, monkeypatch):
    """The real torchvision CIFAR10 reader over files in CIFAR-10's own pickle format (small ones: their
    checksums cannot match, so only that check is bypassed): pixels and labels arrive unchanged, as NCHW."""
    import pickle

    import numpy as np
    import torchvision.datasets.cifar

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        pixels = rng.integers(0, 256, (4, 3 * 32 * 32), dtype=np.uint8)  # rows: R plane, G plane, B plane
        labels = rng.integers(0, 10, 4).tolist()
        batches[name] = (pixels, labels)
        (folder / name).write_bytes(pickle.dumps({"data": pixels, "labels": labels}))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES["cifar10"])}))
    def present(path, md5=None) -> bool:  # torchvision's checksum check, without the checksum
        return Path(path).is_file()

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", present)
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path))
    assert "cifar10" in data.available_datasets()
    dataset = data.load_dataset("cifar10")
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    assert dataset.train_images.dtype == torch.uint8 and dataset.image_shape == (3, 32, 32)
    assert torch.equal(dataset.train_images,
                       torch.from_numpy(np.concatenate([p for p, _ in train])).view(20, 3, 32, 32))
    assert dataset.train_labels.tolist() == [label for _, labels in train for label in labels]
    assert torch.equal(dataset.test_images, torch.from_numpy(batches["test_batch"][0]).view(4, 3, 32, 32))
    assert dataset.test_labels.dtype == torch.int64
    assert dataset.test_labels.tolist() == batches["test_batch"][1]
    assert dataset.source == str(tmp_path.resolve()) and dataset.mean == NORMALISATION["cifar10"][0]


def test_available_datasets_looks_for_files_without_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    assert data.available_datasets() == ()
    cifar = tmp_path / "data" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    for name in names[:-1]:
        (cifar / name).touch()
    assert data.available_datasets() == ()  # one file missing: torchvision would not load it
    (cifar / names[-1]).touch()
    assert data.available_datasets() == ("cifar10",)
    (tmp_path / "debian").mkdir()
    for stem in data.IDX_FILES:
        (tmp_path / "debian" / f"{stem}.gz").touch()
    assert data.available_datasets() == ("fashion-mnist", "cifar10")


def test_augmented_batches_reach_the_teacher_and_both_students_identically(cifar_teacher, monkeypatch):
    """With augment on, the teacher's input is exactly the students' (augmented) input, every step."""
    clear_memory_cache()
    dataset = colour_dataset()
    seen = {"teacher": [], "students": []}
    real_load = checkpoints.load_model

    def load_teacher(path, device="cpu"):
        model, meta = real_load(path, device)
        model.register_forward_pre_hook(lambda m, inputs: seen["teacher"].append(inputs[0].clone()))
        return model, meta

    real_batch = engine.Trainer.batch

    def batch(self, labelled, transfer):  # what the stack of students is given: one batch per seed
        x, teacher_out, labels, features = real_batch(self, labelled, transfer)
        seen["students"].append(x.flatten(0, 1).clone())
        return x, teacher_out, labels, features

    monkeypatch.setattr(checkpoints, "load_model", load_teacher)
    monkeypatch.setattr(engine.Trainer, "batch", batch)
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="mlp-tiny", epochs=2,
                    batch_size=16, augment=True, event_interval_s=0.0, repeats=2, train_size=0)
    stream = train.distill(cfg, dataset)
    next(stream)  # StackStarted: models exist now; the teacher's cached-logit passes are behind us
    seen["teacher"].clear()
    events = list(stream)
    assert type(events[-1]).__name__ == "StackFinished"
    steps = 2 * -(-(64 - 6) // 16)  # 58 images outside the validation split, batches of 16, 2 epochs
    assert len(seen["teacher"]) == len(seen["students"]) == steps
    for teacher_in, students_in in zip(seen["teacher"], seen["students"], strict=True):
        assert torch.equal(teacher_in, students_in)  # both seeds' augmented batches, image for image
    # augmentation really changed the images: no batch equals the plain normalised images
    plain = dataset.normalize(dataset.train_images)
    assert not any(any(torch.equal(row, p) for p in plain) for row in seen["students"][0])


def test_cpu_budget_refuses_big_cifar_runs_on_cpu(cifar_teacher):
    dataset = colour_dataset(train=640)
    big = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="resnet18-cifar", epochs=50,
                    repeats=1, train_size=0)
    # 576 images outside the validation split × 50 epochs × 2 students, plus their evaluations
    with pytest.raises(ValueError, match=r"about 19[0-9]\.\d TFLOP, at least 4[0-9] minutes on a CPU, over "
                                         r"the CPU limit of 20 TFLOP; .* or run it on a GPU"):
        engine_budget.check_cpu_budget(big, dataset, torch.device("cpu"))
    engine_budget.check_cpu_budget(big, dataset, torch.device("cuda"))  # GPUs are not capped
    engine_budget.check_cpu_budget(big.replace(student="mlp-tiny", epochs=1), dataset, torch.device("cpu"))


@pytest.mark.parametrize("augment", [False, True])
def test_cpu_budget_counts_students_teacher_passes_and_uncached_logits(cifar_teacher, augment, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path / "empty-cache"))
    clear_memory_cache()
    dataset = colour_dataset()  # 64 training, 32 test images
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="mlp-tiny", epochs=3,
                    augment=augment, repeats=2, train_size=0)
    student_forward = models.flops_per_sample(models.build("mlp-tiny", (3, 32, 32), 10), (3, 32, 32))
    teacher_flops = models.flops_per_sample(models.build("cnn-tiny", (3, 32, 32), 10), (3, 32, 32))
    # 4 students (2 seeds × CE, KD): each on the 6 validation images 13 times (live) and once, the 32 test
    # images once; training on the 58 images outside the validation split, 3 epochs, 3 × forward
    evaluation = student_forward * 4 * (6 * (cfg.evaluations + 1) + 6 + 32)
    per_run = (12 * student_forward + (2 * teacher_flops if augment else 0)) * 58 * 3 + evaluation
    uncached = per_run + teacher_flops * (64 + 32)  # the teacher's logits on the plain train + test sets
    cpu = torch.device("cpu")
    engine_budget.check_cpu_budget(cfg, dataset, cpu, max_tflop=uncached * 1.0001 / 1e12)
    with pytest.raises(ValueError, match="over the CPU limit"):
        engine_budget.check_cpu_budget(cfg, dataset, cpu, max_tflop=uncached * 0.9999 / 1e12)
    teacher.teacher_logits(cifar_teacher, dataset)  # now cached: only the training itself counts
    engine_budget.check_cpu_budget(cfg, dataset, cpu, max_tflop=per_run * 1.0001 / 1e12)
    with pytest.raises(ValueError, match="over the CPU limit"):
        engine_budget.check_cpu_budget(cfg, dataset, cpu, max_tflop=per_run * 0.9999 / 1e12)


def test_train_teacher_on_colour_images(monkeypatch):
    monkeypatch.setattr(training, "load_dataset", lambda name: colour_dataset())
    epochs = []
    model, acc = training.train_teacher("cifar10", "cnn-tiny", epochs=2, batch_size=32, on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [1, 2] and all(e.test_acc is None for e in epochs)  # test read once
    test = teacher.predict_logits(model, colour_dataset(), colour_dataset().test_images, "cpu")
    assert acc == (test.argmax(1) == colour_dataset().test_labels).float().mean().item()


gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
def test_gpu_train_teacher_resnet_with_bf16_and_channels_last(monkeypatch):
    monkeypatch.setattr(training, "load_dataset", lambda name: colour_dataset(train=256))
    model, acc = training.train_teacher("cifar10", "resnet18-cifar", epochs=1, batch_size=64, device="cuda")
    assert next(model.parameters()).device.type == "cpu" and 0 <= acc <= 1


@pytest.mark.gpu
@gpu
def test_gpu_augmented_resnet_run_with_bf16(cifar_teacher):
    dataset = colour_dataset(train=256)
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="resnet18-cifar", epochs=1,
                    batch_size=64, augment=True, device="cuda")
    result = train.run(cfg, dataset)
    assert result.device.startswith("cuda") and 0 <= result.kd_acc <= 1
