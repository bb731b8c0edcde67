"""The app with CIFAR-10 on the machine: the dataset picker, colour runs, RGB predictions, the CPU cap.

The real CIFAR-10 is online-only here, so a small generated stand-in (2,000 + 500 colour images whose
class sets their tint) is what `load_dataset("cifar10")` returns, and an mlp-tiny teacher trained on it
stands where `checkpoints/cnn-teacher-cifar10.safetensors` would be. The page is built afresh after
that, as `python app.py` builds it on a machine that has both.
"""

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from support import free_port

import app
from kd_core import ui
from kd_core.data import datasets as data
from kd_core.data.datasets import CLASSES, NORMALISATION, Dataset
from kd_core.models import checkpoints
from kd_core.serve import settings
from kd_core.teacher.training import train_teacher
from kd_core.ui import train
from kd_core.views import run_view

TINTS = torch.tensor([[(k * 37) % 256, (k * 91) % 256, (k * 53) % 256] for k in range(10)], dtype=torch.uint8)


def tinted_images(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """uint8 [N, 3, 32, 32]: each image its class's tint plus noise, so a small model can learn it."""
    noise = torch.randint(-40, 41, (len(labels), 3, 32, 32), generator=generator)
    return (TINTS[labels].view(-1, 3, 1, 1).int() + noise).clamp(0, 255).to(torch.uint8)


def stand_in_cifar10() -> Dataset:
    generator = torch.Generator().manual_seed(0)
    train_labels, test_labels = torch.arange(2000) % 10, torch.arange(500) % 10
    mean, std = NORMALISATION["cifar10"]
    return Dataset("cifar10", tinted_images(train_labels, generator), train_labels,
                   tinted_images(test_labels, generator), test_labels, CLASSES["cifar10"], mean, std,
                   source="generated")


@pytest.fixture(scope="module")
def cifar_on_disk(tmp_path_factory):
    """CIFAR-10 'on this machine' with a default teacher, for the whole module (undone afterwards)."""
    patch = pytest.MonkeyPatch()
    stand_in = stand_in_cifar10()
    real_load, real_available, real_teacher = (data._load_cached, data.available_datasets,
                                                checkpoints.default_teacher_path)
    patch.setattr(data, "_load_cached", lambda name, root: stand_in if name == "cifar10"
                  else real_load(name, root))
    patch.setattr(data, "available_datasets", lambda: (*real_available(), "cifar10"))
    teacher_path = tmp_path_factory.mktemp("cifar-teacher") / "cnn-teacher-cifar10.safetensors"
    model, acc = train_teacher("cifar10", "mlp-tiny", epochs=2, batch_size=64)
    checkpoints.save_model(teacher_path, model, {
        "arch": "mlp-tiny", "dataset": "cifar10", "in_shape": [3, 32, 32], "num_classes": 10,
        "classes": list(CLASSES["cifar10"]), "mean": list(stand_in.mean), "std": list(stand_in.std),
        "test_acc": acc})
    patch.setattr(checkpoints, "default_teacher_path", lambda name: teacher_path if name == "cifar10"
                  else real_teacher(name))
    yield acc
    patch.undo()


@pytest.fixture(scope="module")
def cifar_server(cifar_on_disk):
    page = ui.build(app.SERVICES, delete_cache=app.CACHE_CLEANUP)
    page.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **app.LAUNCH_OPTIONS)
    yield page.local_url
    page.close()


def test_the_picker_offers_a_dataset_only_with_its_files_and_its_teacher(cifar_on_disk, monkeypatch):
    assert settings.app_datasets() == ("fashion-mnist", "cifar10")
    hint = settings.dataset_hint()
    assert hint == ("MNIST can be picked once the files are in ./data and a teacher is in checkpoints/ "
                    "(see the README).")
    assert settings.teacher_summary("cifar10").startswith("CIFAR-10 teacher: mlp-tiny, 98,666 parameters, ")
    without_teacher = _no_cifar_teacher(checkpoints.default_teacher_path)
    monkeypatch.setattr(checkpoints, "default_teacher_path", without_teacher)
    assert settings.app_datasets() == ("fashion-mnist",)  # files but no teacher: not offered
    assert settings.dataset_hint().startswith("MNIST and CIFAR-10 can be picked once the files are in ./data")
    with pytest.raises(ValueError, match="dataset must be one of fashion-mnist here; got 'cifar10'. "
                                         "MNIST and CIFAR-10 can be picked"):
        settings.make_config(temperature=2, alpha=0.5, epochs=1, lr=1e-3, student="mlp-tiny", train_size=0,
                            hide_class="none", seed=0, dataset="cifar10")


def _no_cifar_teacher(teacher_path):
    def default_teacher_path(name):
        if name == "cifar10":
            raise checkpoints.CheckpointError("no default teacher is shipped for cifar10")
        return teacher_path(name)
    return default_teacher_path


def test_dataset_pickers_follow_the_dataset(cifar_on_disk):
    student, train_size, hide_class, teacher = train.dataset_widgets("cifar10", "mlp-small", 0, "Dress")
    assert [value for _, value in student.choices] == ["mlp-tiny", "mlp-small", "mlp-medium", "cnn-tiny",
                                                       "resnet18-cifar"]
    assert student.value == "mlp-small"
    assert train_size.choices[0] == ("all 50,000", 0) and train_size.value == 0
    assert [value for _, value in hide_class.choices] == ["none", *CLASSES["cifar10"]]
    assert hide_class.value == "none"  # "Dress" is no CIFAR-10 class
    assert teacher.startswith("CIFAR-10 teacher: ")
    student, _, hide_class, _ = train.dataset_widgets("fashion-mnist", "resnet18-cifar", 1000, "Dress")
    assert (student.value, hide_class.value) == ("mlp-small", "Dress")


def test_a_colour_run_then_colour_predictions_through_the_api(cifar_server, cifar_on_disk, tmp_path):
    client = Client(cifar_server, verbose=False)
    updates = list(client.submit(temperature=4.0, alpha=0.9, epochs=2, train_size=0, student="mlp-small",
                                 hide_class="cat", dataset="cifar10", api_name="/distill"))
    status = updates[-1][0]
    assert "done: " in status and "test accuracy CE" in status
    # 2,000 less the 200 validation images, less the 180 other cats
    assert any("1,620 training images" in u[0] for u in updates)
    table = updates[-1][3]["value"]
    rows = {row[0]: dict(zip(table["headers"], row, strict=True)) for row in table["data"]}
    assert float(rows["teacher"]["test acc. (%)"]) == pytest.approx(100 * cifar_on_disk, abs=0.01)
    assert rows["CE student"]["params"] == 3 * 32 * 32 * 128 + 128 + 128 * 10 + 10  # a colour mlp-small
    assert rows["CE student"]["hidden class (%)"] == 0.0  # never saw a cat
    assert float(rows["KD student"]["test acc. (%)"].split(" ± ")[0]) > 50

    picture = np.zeros((48, 64, 3), dtype=np.uint8)
    picture[:] = TINTS[5].numpy()  # a "dog"-tinted photo, wider than tall
    path = tmp_path / "photo.png"
    Image.fromarray(picture).save(path)
    preview, steps, teacher, ce, kd, source, *_ = client.predict(handle_file(str(path)), api_name="/predict")
    assert steps == "What the models see: centre-cropped and resized to 32×32."
    with Image.open(preview["path"] if isinstance(preview, dict) else preview) as shown:
        assert shown.mode == "RGB" and shown.size == (256, 256)
        assert shown.getpixel((128, 128)) == pytest.approx(TINTS[5].tolist(), abs=2)  # lossy WebP
    for label in (teacher, ce, kd):
        assert {c["label"] for c in label["confidences"]} <= set(CLASSES["cifar10"])
    assert teacher["label"] == "dog"
    assert "on CIFAR-10" in source and "this session's run: T=4, α=0.9, 2 epoch(s), mlp-small" in source


def test_a_run_too_big_for_a_cpu_is_refused_with_the_reason(cifar_server):
    client = Client(cifar_server, verbose=False)
    with pytest.raises(AppError, match=r"this run needs about [0-9,.]+ TFLOP, at least [0-9,]+ minutes on a "
                                       r"CPU, over the CPU limit of 20 TFLOP"):
        client.predict(student="resnet18-cifar", epochs=20, train_size=0, dataset="cifar10",
                       api_name="/distill")
    assert run_view.active_runs() == 0
    with pytest.raises(AppError, match="student must be one of .* for fashion-mnist"):
        client.predict(student="resnet18-cifar", dataset="fashion-mnist", api_name="/distill")

