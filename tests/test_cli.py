import json
import re
import subprocess
import sys

import pytest
import torch

from kd_core.__main__ import build_parser, main
from kd_core.data import datasets as data
from kd_core.models import zoo as models
from kd_core.models.checkpoints import load_model, save_model


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kd_core", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_distill_json_is_the_last_line(tmp_path):
    done = cli("distill", "--epochs", "1", "--train-size", "2000", "--T", "3", "--alpha", "0.5",
               "--save-students", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"teacher_acc", "ce_acc", "kd_acc", "epochs", "seconds", "samples_per_s", "device",
            "config"} <= result.keys()
    # 8 Adam steps on 2,000 images take an MLP from chance (0.10) to 0.68-0.69 (CE) and 0.63-0.67 (KD)
    # (seeds 0-2, measured); 0.55 fails a run that did not learn or learnt from shuffled labels
    assert result["ce_acc"] > 0.55 and result["kd_acc"] > 0.55 and result["teacher_acc"] >= 0.92
    assert result["config"]["temperature"] == 3.0 and result["config"]["alpha"] == 0.5
    assert result["config"]["train_size"] == 2000 and result["epochs"] == 1
    # the exported KD student reproduces the reported accuracy
    kd, meta = load_model(tmp_path / "kd-student.safetensors")
    first_seed = result["per_seed"][0]  # the saved students are the first seed's
    assert meta["role"] == "kd-student" and meta["test_acc"] == pytest.approx(first_seed["kd_acc"], abs=1e-4)
    from kd_core.data.datasets import load_dataset
    from kd_core.engine.train import predictions

    fashion = load_dataset("fashion-mnist")
    acc = (predictions(kd, fashion, fashion.test_images) == fashion.test_labels).float().mean().item()
    assert acc == pytest.approx(first_seed["kd_acc"], abs=1e-6)


def test_auto_chooses_on_validation_and_a_number_keeps_its_value(capsys):
    """--alpha auto with --T 2: a one-T grid over the α values, the run trained at the best cell by validation;
    without --data and without auto, nothing is chosen and the defaults hold."""
    options = ["distill", "--epochs", "1", "--train-size", "1000", "--repeats", "2", "--json"]
    assert main([*options, "--T", "2", "--alpha", "auto"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    chosen = result["chosen"]
    assert [(row["T"], row["alpha"]) for row in chosen["grid"]] == [(2.0, 0.1), (2.0, 0.5), (2.0, 0.9)]
    best = max(chosen["grid"], key=lambda row: row["val_kd_minus_ce"])
    assert (chosen["T"], chosen["alpha"]) == (best["T"], best["alpha"]) == (2.0, result["config"]["alpha"])
    assert result["config"]["temperature"] == 2.0 and "chosen on validation: T=2" in captured.err
    assert main(options) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["chosen"] is None and (result["config"]["temperature"], result["config"]["alpha"]) == (4.0, 0.9)


def test_distill_feature_methods_take_their_weight(capsys):
    assert main(["distill", "--methods", "hint,cosine", "--feature-weight", "0.5", "--epochs", "2", "--train-size",
                 "1000", "--repeats", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["config"]["feature_weight"] == 0.5
    assert [m["method"] for m in result["methods"]] == ["hint", "cosine"]
    assert all(m["acc"] > 0.55 and len(m["per_seed"]) == 2 for m in result["methods"])


@pytest.mark.parametrize("args, message", [
    (["distill", "--T", "0"], "temperature"),
    (["distill", "--alpha", "2"], "alpha"),
    (["distill", "--alpha", "abc"], "expected a number or auto, got 'abc'"),
    (["distill", "--T", "auto", "--methods", "kd,dkd"], r"choose for Hinton KD alone \(--methods kd\)"),
    (["distill", "--T", "auto", "--alpha", "2"], "alpha"),
    (["distill", "--epochs", "0"], "epochs"),
    (["distill", "--hide-class", "12"], "hide_class"),
    (["distill", "--student", "huge"], "invalid choice"),
    (["distill", "--teacher", "/nonexistent.safetensors"], "not found"),
    (["distill", "--device", "cuda"] if not torch.cuda.is_available() else ["distill", "--lr", "-1"],
     "cuda|lr"),
    (["distill", "--methods", "kd,hint", "--feature-weight", "1.5"], r"feature_weight must be a number in \[0, 1\]"),
    (["distill", "--methods", "kd,fitnets"], "hint, cosine"),
    (["sweep", "--T", "1,x"], "comma-separated"),
    (["sweep", "--method", "hint"], "invalid choice: 'hint'"),
    (["train-teacher", "--out", "x.pt"], ".safetensors"),
    (["train-teacher", "--batch-size", "0", "--out", "x.safetensors"], "batch_size"),
    (["train-teacher", "--label-smoothing", "5", "--out", "x.safetensors"], "label_smoothing"),
    (["train-teacher", "--lr", "0", "--out", "x.safetensors"], "lr"),
    (["train-teacher", "--lr", "nan", "--out", "x.safetensors"], "lr"),
    (["train-teacher", "--epochs", "0", "--out", "x.safetensors"], "epochs"),
    (["train-teacher", "--seed", "-1", "--out", "x.safetensors"], "seed"),
    (["train-teacher", "--arch", "huge", "--out", "x.safetensors"], "invalid choice"),
    (["train-teacher", "--arch", "mlp-tiny", "--pretrained", "--out", "x.safetensors"], "pretrained"),
    (["train-teacher"], "required: --out"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys, no_data_loading):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0])


@pytest.fixture
def no_data_loading(monkeypatch):
    """Fails the test if a dataset is loaded or downloaded: bad arguments are refused before any work."""
    def refuse(*args, **kwargs):
        pytest.fail("a dataset was loaded before the arguments were checked")

    monkeypatch.setattr(data, "_load_cached", refuse)
    monkeypatch.setattr(data, "_from_torchvision", refuse)


def mismatched_teacher(tmp_path, shape=(1, 28, 28), classes=10, dataset="fashion-mnist"):
    model = models.build("mlp-tiny", shape, classes)
    return save_model(tmp_path / "teacher.safetensors", model, {
        "arch": "mlp-tiny", "dataset": dataset, "in_shape": list(shape), "num_classes": classes})


@pytest.mark.parametrize("command", ["distill", "sweep"])
@pytest.mark.parametrize("teacher, message", [
    (dict(shape=(3, 32, 32)), "takes 3×32×32 images"),
    (dict(classes=100), "predicts 100 classes"),
    (dict(dataset="mnist"), "trained on mnist, not fashion-mnist"),
])
def test_a_teacher_that_does_not_fit_exits_2_before_any_data_loading(command, teacher, message, tmp_path,
                                                                     capsys, no_data_loading):
    path = mismatched_teacher(tmp_path, **teacher)
    assert main([command, "--teacher", str(path), "--epochs", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: teacher ") and message in lines[0], lines


def test_a_dataset_without_a_teacher_is_refused_before_any_download(tmp_path, monkeypatch, capsys,
                                                                   no_data_loading):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KD_DATA_DIR", raising=False)
    assert main(["distill", "--dataset", "cifar10"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no default teacher is shipped for cifar10" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no empty ./data left behind


@pytest.mark.parametrize("command", ["train-teacher", "distill", "sweep", "bench"])
def test_every_option_has_help_and_its_default_shown(command, capsys):
    parser = build_parser()
    [subcommands] = [action for action in parser._actions if action.dest == "command"]
    options = [action for action in subcommands.choices[command]._actions if action.dest != "help"]
    assert options
    for option in options:
        assert option.help and len(option.help) > 10, option.option_strings
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in options:
        if option.default not in (None, "==SUPPRESS==") and not option.required:
            assert f"(default: {option.default})" in text, option.option_strings


def test_bad_argument_from_the_shell_has_no_traceback():
    done = cli("distill", "--T", "-3", timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: temperature")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_train_teacher_writes_a_loadable_checkpoint_with_its_recipe(tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    assert main(["train-teacher", "--arch", "mlp-tiny", "--epochs", "1", "--batch-size", "1024",
                 "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, meta = load_model(out)
    assert meta["recipe"].startswith("python -m kd_core train-teacher --arch mlp-tiny")
    assert meta["test_acc"] == pytest.approx(result["test_acc"], abs=1e-4) and result["test_acc"] > 0.6
    assert (tmp_path / "t.logits.safetensors").is_file()
