"""The CIFAR-10 track on CPU, with small generated colour images (the real CIFAR-10 is online-only here)."""

import pytest
import torch

from kd_core import checkpoints, data, models, train
from kd_core.config import RunConfig
from kd_core.data import CLASSES, NORMALISATION, Dataset, DatasetUnavailable
from kd_core.teacher import clear_memory_cache


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


def test_pretrained_weights_unavailable_falls_back_to_random_init(monkeypatch):
    from torchvision.models import ResNet18_Weights

    def offline(self, *args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", offline)
    model = models.build("resnet18-cifar", (3, 32, 32), 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = models.load_pretrained("resnet18-cifar", model)
    assert "unavailable" in message and "random initialisation" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cifar10_offline_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path))

    def offline(name, root, *, download):
        if download:
            raise OSError("no route to host")
        return None

    monkeypatch.setattr(data, "_from_torchvision", offline)
    with pytest.raises(DatasetUnavailable, match="cifar10 is not on this machine"):
        data.load_dataset("cifar10")


def test_augmented_batches_reach_the_teacher_and_both_students_identically(cifar_teacher, monkeypatch):
    """With augment on, the teacher's input is exactly the students' (augmented) input, every step."""
    clear_memory_cache()
    dataset = colour_dataset()
    seen = {"teacher": [], "ce": [], "kd": []}
    real_load = checkpoints.load_model

    def spy(role, model):
        model.register_forward_pre_hook(lambda m, inputs: seen[role].append(inputs[0].clone())
                                        if m.training or role == "teacher" else None)
        return model

    def load_teacher(path, device="cpu"):
        model, meta = real_load(path, device)
        return spy("teacher", model), meta

    monkeypatch.setattr(checkpoints, "load_model", load_teacher)
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="mlp-tiny", epochs=2,
                    batch_size=16, augment=True, event_interval_s=0.0)
    stream = train.distill(cfg, dataset)
    next(stream)  # Started: models exist now; the teacher's cached-logit passes are behind us
    seen["teacher"].clear()
    frame = stream.gi_frame.f_locals
    spy("ce", frame["ce_student"])
    spy("kd", frame["kd_student"])
    events = list(stream)
    assert type(events[-1]).__name__ == "Finished"
    steps = 2 * (64 // 16)
    assert len(seen["teacher"]) == len(seen["ce"]) == len(seen["kd"]) == steps
    for teacher_in, ce_in, kd_in in zip(seen["teacher"], seen["ce"], seen["kd"], strict=True):
        assert torch.equal(teacher_in, ce_in) and torch.equal(ce_in, kd_in)
    # augmentation really changed the images: no batch equals the plain normalised images
    plain = dataset.normalize(dataset.train_images)
    assert not any(any(torch.equal(row, p) for p in plain) for row in seen["ce"][0])


def test_cpu_budget_refuses_big_cifar_runs_on_cpu():
    dataset = colour_dataset(train=640)
    big = RunConfig(dataset="cifar10", student="resnet18-cifar", epochs=50)
    with pytest.raises(ValueError, match="TFLOP.*GPU"):
        train.check_cpu_budget(big, dataset, torch.device("cpu"), max_tflop=1.0)
    train.check_cpu_budget(big, dataset, torch.device("cuda"), max_tflop=1.0)  # GPUs are not capped
    train.check_cpu_budget(big.replace(student="mlp-tiny", epochs=1), dataset, torch.device("cpu"), 1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_augmented_resnet_run_with_bf16(cifar_teacher):
    dataset = colour_dataset(train=256)
    cfg = RunConfig(dataset="cifar10", teacher=str(cifar_teacher), student="resnet18-cifar", epochs=1,
                    batch_size=64, augment=True, device="cuda")
    result = train.run(cfg, dataset)
    assert result.device.startswith("cuda") and 0 <= result.kd_acc <= 1
