import json
import re
import subprocess
import sys

import pytest
import torch

from kd_core.__main__ import main
from kd_core.checkpoints import load_model


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
    assert 0 <= result["ce_acc"] <= 1 and 0 <= result["kd_acc"] <= 1 and result["teacher_acc"] >= 0.92
    assert result["config"]["temperature"] == 3.0 and result["config"]["alpha"] == 0.5
    assert result["config"]["train_size"] == 2000 and result["epochs"] == 1
    # the exported KD student reproduces the reported accuracy
    kd, meta = load_model(tmp_path / "kd-student.safetensors")
    assert meta["role"] == "kd-student" and meta["test_acc"] == pytest.approx(result["kd_acc"], abs=1e-4)
    from kd_core.data import load_dataset
    from kd_core.train import predictions

    fashion = load_dataset("fashion-mnist")
    acc = (predictions(kd, fashion, fashion.test_images) == fashion.test_labels).float().mean().item()
    assert acc == pytest.approx(result["kd_acc"], abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["distill", "--T", "0"], "temperature"),
    (["distill", "--alpha", "2"], "alpha"),
    (["distill", "--alpha", "abc"], "invalid float"),
    (["distill", "--epochs", "0"], "epochs"),
    (["distill", "--hide-class", "12"], "hide_class"),
    (["distill", "--student", "huge"], "invalid choice"),
    (["distill", "--teacher", "/nonexistent.safetensors"], "not found"),
    (["distill", "--device", "cuda"] if not torch.cuda.is_available() else ["distill", "--lr", "-1"],
     "cuda|lr"),
    (["sweep", "--T", "1,x"], "comma-separated"),
    (["train-teacher", "--out", "x.pt"], ".safetensors"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert re.search(message, lines[0])


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
