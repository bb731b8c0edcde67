"""Students from outside the zoo (kd_core.models.students): pretrained bodies from a save_for_hf folder, the same
weights for the CE and the KD student, their ONNX export, and pretrained weights that cannot be had (one line, fast).

The folder is made here: timm's small `test_resnet` trained briefly on real Fashion-MNIST, then saved with
`timm.models.save_for_hf` (its pretrained config says the images are 28×28 and normalised the data's way).
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import time

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.engine import budget as engine_budget
from kd_core.engine import estimate, train
from kd_core.engine.stack import make_stack
from kd_core.models import checkpoints, external, students
from kd_core.publish.export import check_round_trip, export_onnx

ARCH = "test_resnet"  # 0.37M parameters, 6.6 MFLOP per 28×28 image


def save_folder(net, fashion, out):
    """`net` as timm's save_for_hf writes it, its pretrained config saying: 28×28 images, the data's normalisation."""
    import timm

    net.pretrained_cfg = {**net.pretrained_cfg, "input_size": (1, 28, 28), "mean": tuple(fashion.mean),
                          "std": tuple(fashion.std)}
    timm.models.save_for_hf(net.eval(), str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def folder(fashion, tmp_path_factory):
    """A save_for_hf folder of a freshly initialised test_resnet (for what needs weights, not trained ones)."""
    import timm

    torch.manual_seed(0)
    return save_folder(timm.create_model(ARCH, in_chans=1, num_classes=10), fashion,
                       tmp_path_factory.mktemp("fresh") / ARCH)


def trained_folder(fashion, out):
    """test_resnet trained for 2 epochs on 3,000 training images (none of the validation split), saved."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model(ARCH, in_chans=1, num_classes=10)
    index = fashion.fit_index[:3000]
    images, labels = fashion.normalize(fashion.train_images[index]), fashion.train_labels[index]
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    net.train()
    for _ in range(2):
        for order in torch.randperm(len(labels)).split(128):
            optimizer.zero_grad()
            F.cross_entropy(net(images[order]), labels[order]).backward()
            optimizer.step()
    return save_folder(net, fashion, out)


def budget(student: str) -> RunConfig:
    """The small budget of the acceptance test: 1,000 images, 1 epoch, one seed."""
    return RunConfig(student=student, train_size=1000, epochs=1, repeats=1, batch_size=50, evaluations=1)


@pytest.mark.slow  # the folder's training and two runs (each evaluates 2 students on 21,500 images): minutes
def test_a_pretrained_local_dir_student_learns_clearly_faster_than_from_scratch(fashion, tmp_path, capsys):
    folder = trained_folder(fashion, tmp_path / ARCH)
    code = main(["distill", "--student", f"local-dir:{folder}", "--train-size", "1000", "--epochs", "1",
                 "--repeats", "1", "--batch-size", "50", "--json"])
    captured = capsys.readouterr()
    pretrained = json.loads(captured.out.strip().splitlines()[-1])
    assert code == 0 and "pretrained body, a new 10-class head; sees the images at 28×28" in captured.err
    scratch = train.run(budget(f"timm:{ARCH}"))
    assert isinstance(scratch.ce_student, external.Preprocessed)
    # measured here: CE 0.697 against 0.467 (the body saw 3,000 images for 2 epochs; the head is new in both)
    assert pretrained["ce_acc"] > scratch.ce_acc + 0.10, (pretrained["ce_acc"], scratch.ce_acc)


def test_ce_and_kd_students_start_from_the_same_pretrained_weights_and_a_head_per_seed(folder, fashion):
    cfg = RunConfig(student=f"local-dir:{folder}")
    initial, _ = students.initial(cfg, fashion.image_shape, fashion.mean, fashion.std, 10, (0, 1))
    stack = make_stack(initial, 2, fashion.image_shape)  # two roles (CE, KD) per seed, as the engine builds them
    for seed in range(2):
        ce, kd = stack.state_dict(2 * seed), stack.state_dict(2 * seed + 1)
        assert ce.keys() == kd.keys() and all(torch.equal(ce[k], kd[k]) for k in ce)
    saved = load_file(folder / "model.safetensors")
    first, second = stack.state_dict(0), stack.state_dict(2)
    assert torch.equal(first["net.conv1.0.weight"], saved["conv1.0.weight"])  # the body is the folder's
    assert torch.equal(first["net.conv1.0.weight"], second["net.conv1.0.weight"])
    assert not torch.equal(first["net.fc.weight"], second["net.fc.weight"])  # each seed draws its head
    assert torch.equal(first["net.fc.weight"], students.initial(cfg, fashion.image_shape, fashion.mean,
                                                                fashion.std, 10, (0,))[0][0].net.fc.weight)


def resized_folder(folder, side: int):
    """A copy of the save_for_hf `folder` whose pretrained config says side×side images (the same weights)."""
    config = json.loads((folder / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [1, side, side]
    out = folder.parent / f"{folder.name}-{side}"
    out.mkdir(exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    (out / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    return out


@pytest.mark.parametrize("side, images", [(28, 10_000), (56, 2_000)])  # at 56, the resize is inside the graph
def test_a_timm_student_checkpoint_exports_to_onnx_with_pytorch_s_top1(folder, fashion, tmp_path, side, images):
    cfg = RunConfig(student=f"local-dir:{folder if side == 28 else resized_folder(folder, side)}")
    student = students.initial(cfg, fashion.image_shape, fashion.mean, fashion.std, 10, (0,))[0][0]
    meta = {"arch": students.arch(cfg), "dataset": "fashion-mnist", "in_shape": [1, 28, 28], "num_classes": 10,
            "classes": list(fashion.classes), "mean": list(fashion.mean), "std": list(fashion.std)}
    path = checkpoints.save_model(tmp_path / "kd-student.safetensors", student.eval(), meta)  # as distill saves it
    model, meta = checkpoints.load_model(path)
    assert meta["arch"] == f"timm:{ARCH}" and model.side == side  # rebuilt by models.build, its size from the file
    onnx = export_onnx(model, meta, tmp_path / "kd-student.onnx")
    check = check_round_trip(onnx, model, meta, fashion.test_images[:images])
    assert check.images == images and check.top1_agreement == 1.0


def test_the_cpu_budget_counts_a_pretrained_student_at_its_own_input_size(folder, fashion):
    cfg = RunConfig(student=f"local-dir:{folder}")
    wide = resized_folder(folder, 56)  # the same body, told to read 56×56 images
    at_28 = engine_budget.student_flops_per_sample(cfg, fashion)
    at_56 = engine_budget.student_flops_per_sample(cfg.replace(student=f"local-dir:{wide}"), fashion)
    import timm

    from kd_core.models import zoo

    bare = timm.create_model(ARCH, in_chans=1, num_classes=10)
    assert at_28 == zoo.flops_per_sample(bare, (1, 28, 28))
    assert at_56 == zoo.flops_per_sample(bare, (1, 56, 56)) > 3.5 * at_28  # the resize inside, then the net


def run_timed(args: list[str], capsys) -> tuple[int, str, float]:
    start = time.perf_counter()
    code = main(args)
    return code, capsys.readouterr().err, time.perf_counter() - start


SMALL = ["--epochs", "1", "--repeats", "1"]  # under the CLI's CPU limit, whose refusal would come first


@pytest.mark.parametrize("args", [
    ["distill", "--student", "timm:resnet18", "--student-pretrained", *SMALL],
    ["distill", "--student", "torchvision:resnet18", "--student-pretrained", *SMALL],
    ["distill", "--student", "hf-hub:timm/resnet18.a1_in1k", *SMALL],
    ["distill", "--student", "resnet18", "--pretrained", *SMALL],
    ["train-teacher", "--arch", "resnet18", "--pretrained", "--out", "unused.safetensors"],
    ["distill", "--teacher", "torchvision:resnet50", "--teacher-pretrained"],
])
def test_pretrained_weights_that_cannot_be_had_stop_the_run_in_one_line(args, monkeypatch, tmp_path, capsys):
    """Offline (a host that never answers): exit 2, one line, in seconds; never a random start instead."""
    import huggingface_hub.constants  # (imported before the clock starts: an import is not a retry)
    import timm  # noqa: F401
    import torchvision  # noqa: F401

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nothing cached
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def hang(*_, **__):  # a host that never answers (then fails, in the abandoned thread)
        time.sleep(10)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    code, err, seconds = run_timed(args, capsys)
    assert code == 2 and err.startswith("error: cannot get ") and len(err.strip().splitlines()) == 1, err
    assert "did not answer within 1.5 s" in err
    assert seconds < 10


SEED_COMMAND = ["distill", "--dataset", "cifar10", "--teacher", "torchvision:resnet50", "--teacher-pretrained",
                "--teacher-epochs", "2", "--student", "torchvision:resnet18", "--student-pretrained", "--lr", "1e-4",
                "--T", "4", "--alpha", "0.3", "--epochs", "3", "--train-size", "0", "--repeats", "1",
                "--batch-size", "64"]  # docs/pretrained-students.md


def test_the_documented_seed_command_is_this_one():
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs/pretrained-students.md").read_text()
    (block,) = re.findall(r"```text\n(.*?)\n```", page, flags=re.S)
    assert shlex.split(block.replace("\\\n", " ")) == ["python", "-m", "kd_core", *SEED_COMMAND, "--json"]
    assert "0.7·CE + 0.3·KD" in page and "**α = 0.3**" in page  # the seed's weights in this project's convention


def test_the_seed_experiment_is_refused_on_a_cpu_up_front_with_its_estimate(monkeypatch, capsys):
    def no_network(*_, **__):
        raise AssertionError("the estimate needs no download")

    monkeypatch.setattr(socket, "create_connection", no_network)
    code, err, _ = run_timed([*SEED_COMMAND, "--device", "cpu"], capsys)
    # ResNet-18 students at 224 (3.64 GFLOP): 2 × (3 × 45,000 × 3 + 21,500 evaluated); the ResNet-50 teacher
    # (8.2 GFLOP): 3 × 45,000 × 2 fine-tuning + 60,000 logits
    student, teacher = estimate.network_flops("torchvision:resnet18", True, (3, 32, 32), 10), \
        estimate.network_flops("torchvision:resnet50", True, (3, 32, 32), 10)
    assert 3.6e9 < student < 3.7e9 and 8.1e9 < teacher < 8.3e9
    needed = (2 * student * (3 * 45_000 * 3 + 21_500) + teacher * (3 * 45_000 * 2 + 60_000)) / 1e12
    assert code == 2 and err == (f"error: this run needs about {needed:,.0f} TFLOP, at least "
                                 f"{needed / 0.07 / 3600:,.0f} hours on a CPU (over the CLI's CPU limit of 1,000 "
                                 f"TFLOP); run it on a GPU (--device cuda), or pick smaller models, fewer epochs, "
                                 f"seeds or images\n")


def test_student_pretrained_needs_a_source_with_weights(capsys):
    code, err, _ = run_timed(["distill", "--student", "mlp-small", "--student-pretrained"], capsys)
    assert code == 2 and err.strip() == ("error: student_pretrained needs a timm:NAME or torchvision:NAME student "
                                         "(hf-hub: and local-dir: students are always pretrained; zoo ResNets "
                                         "take pretrained)")


def test_a_student_too_large_for_the_browser_is_refused_in_one_line(tmp_path):
    from types import SimpleNamespace

    from kd_core.publish import browser_student

    big = torch.nn.Linear(4_000, 3_200)  # 12.8M weights, 51 MB in float32
    with pytest.raises(ValueError, match=r"^this KD student is too large to run in your browser \(51 MB of "
                                         r"weights, at most 50 MB\)"):
        browser_student.student_onnx(SimpleNamespace(model=big), tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing exported


def test_a_timm_student_with_student_pretrained_loads_its_weights_and_its_preprocessing(monkeypatch, tmp_path,
                                                                                          fashion):
    """timm:NAME --student-pretrained: the body from timm's weights file (here a seeded stand-in for the Hub's), a
    new 10-class head, the images resized to its pretrained size and normalised its way (grey: averaged)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    published = timm.create_model(ARCH).state_dict()  # 3 channels, 1,000 classes, as on the Hub
    save_file(published, tmp_path / "model.safetensors")
    monkeypatch.setattr(students.weights, "hub_file", lambda repo_id: tmp_path / "model.safetensors")
    monkeypatch.setattr(students.weights, "timm_hub_id", lambda name: "stand-in")
    cfg = RunConfig(student=f"timm:{ARCH}", student_pretrained=True).validate()
    (student,), notes = students.initial(cfg, fashion.image_shape, fashion.mean, fashion.std, 10, (0,))
    config = timm.models.get_pretrained_cfg(ARCH)
    assert student.side == config.input_size[-1] == 160 and notes[0].startswith(
        f"student timm:{ARCH}: pretrained body, a new 10-class head; sees the images at 160×160")
    torch.testing.assert_close(student.mean, torch.full((1,), sum(config.mean) / 3))
    own = student.net.state_dict()
    assert torch.equal(own["layer1.0.conv1.weight"], published["layer1.0.conv1.weight"])
    torch.testing.assert_close(own["conv1.0.weight"], published["conv1.0.weight"].sum(1, keepdim=True))
    assert own["fc.weight"].shape == (10, published["fc.weight"].shape[1])


def test_a_torchvision_student_with_student_pretrained_gets_its_weights_and_a_new_head(monkeypatch):
    from torchvision.models import ResNet18_Weights, resnet18

    torch.manual_seed(1)
    imagenet = resnet18(weights=None).state_dict()
    monkeypatch.setattr(students.weights, "reachable_or_cached", lambda *args: None)
    monkeypatch.setattr(type(ResNet18_Weights.DEFAULT), "get_state_dict", lambda self, **kw: imagenet)
    cfg = RunConfig(student="torchvision:resnet18", student_pretrained=True)
    initial, _ = students.initial(cfg, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, 10, (0, 1))
    assert all(s.side == 224 for s in initial)
    torch.testing.assert_close(initial[0].mean, torch.tensor([0.485, 0.456, 0.406]))
    for student in initial:
        assert torch.equal(student.net.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
        assert student.net.fc.out_features == 10
    assert not torch.equal(initial[0].net.fc.weight, initial[1].net.fc.weight)
    assert students.arch(cfg) == "torchvision:resnet18"


@pytest.mark.parametrize("student, message", [
    ("torchvision:nope", "torchvision has no classification model 'nope'"),
    ("timm:nope", "timm has no model 'nope' (see timm.list_models())"),
])
def test_a_wrong_pretrained_student_id_is_one_line(student, message, capsys):
    code, err, _ = run_timed(["distill", "--student", student, "--student-pretrained", *SMALL], capsys)
    assert code == 2 and err == f"error: {message}\n"
