"""ONNX export (kd_core.publish.export, .deploy), latency (kd_core.publish.latency) and model cards
(kd_core.publish.card).

The round trip runs on the real Fashion-MNIST test set with the shipped KD student and teacher; the CLI
tests run `main` in-process.
"""

import json
import re
import shlex
import sys

import numpy as np
import onnxruntime
import pytest
import torch

from kd_core.__main__ import build_parser, main, run_config
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.publish.card import LOSS_FORMULA, accuracy_text, model_card, reproduce_command, teacher_facts
from kd_core.publish.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportUnavailable,
    check_round_trip,
    export_onnx,
    normalised,
    onnx_logits,
    onnx_session,
    read_onnx_metadata,
    require_onnx,
)
from kd_core.publish.latency import latency_rows, latency_table, speedup_words

KD_STUDENT = checkpoints.CHECKPOINT_DIR / "default-students" / "kd-student.safetensors"
TEACHER = checkpoints.CHECKPOINT_DIR / "cnn-teacher-fashion-mnist.safetensors"


@pytest.fixture(scope="module")
def kd_student():
    return checkpoints.load_model(KD_STUDENT)


@pytest.fixture(scope="module")
def kd_onnx(kd_student, tmp_path_factory):
    model, meta = kd_student
    return export_onnx(model, meta, tmp_path_factory.mktemp("onnx") / "kd-student.onnx")


def reproduce_block(card: str) -> str:
    """The one command in the card's ```bash block."""
    (command,) = re.findall(r"```bash\n(.*?)\n```", card, flags=re.S)
    return command


# ------------------------------------------------------------------------------------------ export

def test_onnx_matches_pytorch_on_the_whole_test_set(kd_student, kd_onnx, fashion):
    model, meta = kd_student
    check = check_round_trip(kd_onnx, model, meta, fashion.test_images)
    assert check.images == 10_000 and check.within_tolerance
    assert check.max_abs_diff < 1e-4 and check.top1_agreement == 1.0
    # normalisation is inside the graph: raw uint8 test images give the checkpoint's recorded accuracy
    predicted = onnx_logits(onnx_session(kd_onnx), fashion.test_images).argmax(1)
    accuracy = (predicted == fashion.test_labels).float().mean().item()
    assert accuracy == pytest.approx(meta["test_acc"], abs=1e-4)


@pytest.mark.parametrize("batch", [1, 256])
def test_dynamic_batch(kd_student, kd_onnx, fashion, batch):
    model, meta = kd_student
    images = fashion.test_images[:batch]
    (logits,) = onnx_session(kd_onnx).run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    assert logits.shape == (batch, 10) and logits.dtype == np.float32
    with torch.inference_mode():
        expected = normalised(model, meta)(images)
    torch.testing.assert_close(torch.from_numpy(logits), expected, atol=1e-4, rtol=1e-4)


def test_input_contract_is_uint8_and_recorded(kd_onnx):
    session = onnx_session(kd_onnx)
    (declared,) = session.get_inputs()
    assert declared.name == INPUT_NAME and declared.type == "tensor(uint8)"
    assert declared.shape == ["batch", 1, 28, 28]
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument):
        session.run(None, {INPUT_NAME: np.zeros((1, 1, 28, 28), np.float32)})  # [0, 1] floats are refused
    meta = read_onnx_metadata(kd_onnx)
    assert meta["classes"][3] == "Dress" and meta["mean"] == [0.286] and meta["std"] == [0.353]
    assert "uint8 [B, C, H, W]" in meta["input_contract"]


def test_teacher_cnn_exports_too(tmp_path, fashion):
    model, meta = checkpoints.load_model(TEACHER)
    path = export_onnx(model, meta, tmp_path / "teacher.onnx")
    check = check_round_trip(path, model, meta, fashion.test_images[:512])
    assert check.within_tolerance and check.top1_agreement == 1.0
    assert model.training is False and next(model.parameters()).device.type == "cpu"


def test_missing_onnxruntime_is_one_clear_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ExportUnavailable, match="onnxruntime; install with: pip install"):
        require_onnx()
    out = tmp_path / "kd.onnx"
    assert main(["export", str(KD_STUDENT), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ONNX export needs") and "onnxruntime" in err
    assert not out.exists()


def test_export_cli_writes_onnx_and_card(tmp_path, capsys, kd_student):
    _, meta = kd_student
    out = tmp_path / "kd-student.onnx"
    assert main(["export", str(KD_STUDENT), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["onnx"] == str(out) and result["within_tolerance"] and result["checked_images"] == 10_000
    card = (tmp_path / "kd-student.md").read_text()
    assert "kd-student.onnx" in card and "## Speed" in card and "92.12 %" in card  # the teacher's accuracy
    assert reproduce_block(card) == meta["recipe"]
    assert result["latency"]["onnx_ms_b1"] > 0 and result["latency"]["params"] == meta["params"]


# ----------------------------------------------------------------------------------------- latency

def test_latency_rows_table_and_words(kd_student):
    model, meta = kd_student
    bigger = models.build("mlp-medium").eval()  # a quick stand-in teacher: 235,146 parameters
    rows = latency_rows({"teacher": (bigger, meta), "KD student": (model, meta)}, rounds=1)
    assert [row["model"] for row in rows] == ["teacher", "KD student"]
    assert rows[0]["params"] == 235_146 and rows[1]["params"] == 101_770
    timings = ("torch_ms_b1", "onnx_ms_b1", "torch_ms_per_image_b256", "onnx_ms_per_image_b256")
    assert all(row[key] > 0 for row in rows for key in timings)
    table = latency_table(rows)
    assert list(table.columns)[4:6] == ["PyTorch ms (batch 1)", "ONNX Runtime ms (batch 1)"]
    words = speedup_words(rows)
    assert "2.3× fewer parameters (101,770 vs 235,146)" in words and "0.41 MB against 0.94 MB" in words


def test_speedup_words_say_slower_when_the_student_is_slower():
    row = {"params": 10, "weights_mb": 1.0, "onnx_ms_per_image_b256": 1.0, "threads": 1}
    rows = [{**row, "model": "teacher", "onnx_ms_b1": 1.0}, {**row, "model": "KD student", "onnx_ms_b1": 2.0}]
    assert "(2.0× slower)" in speedup_words(rows)


# -------------------------------------------------------------------------------------- model card

def test_accuracy_spread_over_seeds_and_single_seed():
    assert accuracy_text([0.86, 0.87, 0.865]) == "86.50 ± 0.50 % (mean ± std over 3 seeds, 86.00–87.00 %)"
    assert accuracy_text(0.8646) == "86.46 % (one seed)"
    assert accuracy_text([0.8646]) == "86.46 % (one seed)"


def test_card_states_the_run(kd_student):
    _, meta = kd_student
    card = model_card(meta, {"teacher_acc": 0.9212, "ce_acc": [0.86, 0.87, 0.865],
                             "kd_acc": [0.87, 0.871, 0.869], "seeds": [0, 1, 2]})
    assert card.startswith("---\nlibrary_name: pytorch\n") and "- zalando-datasets/fashion_mnist" in card
    assert LOSS_FORMULA in card and "| temperature T | 4.0 |" in card
    assert "| α (weight on the teacher's soft targets) | 0.9 |" in card
    assert "| **KD student (this model)** | 87.00 ± 0.10 % (mean ± std over 3 seeds" in card
    assert "| seeds | 0, 1, 2 |" in card and "92.12 %" in card
    single = model_card(meta)
    assert "One seed only (0)" in single and "86.46 % (one seed)" in single


def test_teacher_card_reports_its_own_checkpoint():
    _, meta = checkpoints.load_model(TEACHER)
    other = {**meta, "test_acc": 0.5, "recipe": ""}  # a teacher that is not the shipped one
    assert teacher_facts(other) == {}
    card = model_card(other)
    assert "| **teacher (this model)** | 50.00 % |" in card and "92.12" not in card
    assert reproduce_block(card).startswith("python -m kd_core train-teacher --dataset fashion-mnist")


def test_card_reproduce_command_parses_with_the_cli_parser(kd_student):
    _, meta = kd_student
    for stored in (meta, {**meta, "recipe": ""}):  # the recorded recipe, and the one built from config
        words = shlex.split(reproduce_block(model_card(stored)))
        assert words[:3] == ["python", "-m", "kd_core"]
        args = build_parser().parse_args(words[3:])
        assert args.command == "distill" and args.T == 4.0 and args.alpha == 0.9 and args.epochs == 5
    rebuilt = run_config(args, temperature=args.T, alpha=args.alpha, augment=args.augment,
                         pretrained=args.pretrained)
    assert {key: getattr(rebuilt, key) for key in meta["config"]} == meta["config"]
    assert reproduce_command({**meta, "recipe": ""}).endswith("--save-students students")


def test_distill_save_students_writes_a_card_per_student(tmp_path, capsys, monkeypatch):
    for package in ("onnx", "onnxruntime", "onnxscript"):  # training must not need the ONNX packages
        monkeypatch.setitem(sys.modules, package, None)
    argv = ["distill", "--epochs", "1", "--train-size", "2000", "--T", "3", "--alpha", "0.7",
            "--save-students", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for role in ("ce", "kd"):
        card = (tmp_path / f"{role}-student.md").read_text()
        assert reproduce_block(card) == "python -m kd_core " + shlex.join(argv)
        for name in ("ce_acc", "kd_acc"):  # the mean ± std over the run's 5 seeds
            assert f"{100 * result[name]:.2f} ± {100 * result[name + '_std']:.2f} % (mean ± std over 5 seeds" in card
        assert "| temperature T | 3.0 |" in card
        assert "| α (weight on the teacher's soft targets) | 0.7 |" in card
        this = {"ce": "CE student", "kd": "KD student"}[role]
        assert f"| **{this} (this model)** |" in card
