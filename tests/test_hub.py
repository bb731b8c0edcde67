"""`python -m kd_core push`: the real huggingface_hub client against a loopback stand-in of the Hub
(tests/hub_standin.py), the card's metadata, and the failures that must come at once."""

from __future__ import annotations

import json
import os
import statistics
import time
import uuid
from collections import Counter

import pytest
from hub_standin import OWNER, Server

from kd_core.__main__ import main
from kd_core.models import checkpoints
from kd_core.publish import hub

# the requests of one push, in order (upload_folder checks the card's YAML twice); the two LFS uploads and their
# verifications run in threads, in any order
ROUTES = ["POST /api/repos/create", "POST /api/validate-yaml", "POST /api/validate-yaml",
          "POST /api/models/{repo}/preupload/main", "POST /{repo}.git/info/lfs/objects/batch",
          {"PUT /lfs/*": 2, "POST /lfs-verify": 2}, "POST /api/models/{repo}/commit/main"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """What `distill --save-students` writes for a small two-seed run (no ONNX file yet)."""
    folder = tmp_path_factory.mktemp("run")
    assert main(["distill", "--epochs", "1", "--train-size", "2000", "--repeats", "2", "--T", "4",
                 "--alpha", "0.9", "--save-students", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def standin():
    server = Server()
    yield server.state
    server.stop()


# huggingface_hub's LFS upload passes bytes as httpx's `data=`, which httpx deprecates
LFS_PUT_WARNING = "ignore:Use 'content=<...>' to upload raw bytes/text content:DeprecationWarning"


@pytest.fixture
def legacy_upload(monkeypatch):
    """The stand-in speaks the LFS protocol, not Xet's (a separate storage service): upload_folder then takes
    huggingface_hub's single-commit path through preupload, the LFS batch API and /commit."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def pushed(run_dir, standin, capsys, *extra) -> dict:
    assert main(["push", str(run_dir), "--repo", "kd-fashion", "--endpoint", standin.url, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.filterwarnings(LFS_PUT_WARNING)
def test_push_commits_the_student_its_onnx_and_the_card_byte_for_byte(run_dir, standin, legacy_upload,
                                                                         monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    assert not (run_dir / "kd-student.onnx").exists()
    result = pushed(run_dir, standin, capsys, "--private")
    repo = f"{OWNER}/kd-fashion"
    assert result["repo_id"] == repo and result["repo_url"] == f"{standin.url}/{repo}"
    assert result["commit_url"].startswith(f"{standin.url}/{repo}/commit/")
    files = standin.repos[repo]
    assert sorted(files) == ["README.md", "kd-student.onnx", "kd-student.safetensors"]
    for name in ("kd-student.safetensors", "kd-student.onnx"):  # exported first, then sent unchanged
        assert files[name] == (run_dir / name).read_bytes()
    assert standin.private[repo] is True and standin.tokens == {"Bearer hf_standin_token"}
    calls = [call.replace(repo, "{repo}") for call in standin.calls]
    calls = [call if not call.startswith("PUT /lfs/") else "PUT /lfs/*" for call in calls]
    assert [*calls[:5], dict(Counter(calls[5:9])), *calls[9:]] == ROUTES


@pytest.mark.filterwarnings(LFS_PUT_WARNING)
def test_the_card_metadata_sets_the_student_beside_its_ce_twin(run_dir, standin, legacy_upload, monkeypatch,
                                                               capsys):
    from huggingface_hub import ModelCard

    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    pushed(run_dir, standin, capsys)
    card = ModelCard(standin.repos[f"{OWNER}/kd-fashion"]["README.md"].decode())
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["pipeline_tag"] == "image-classification"
    assert set(data["tags"]) >= {"knowledge-distillation", "onnx", "safetensors", "fashion-mnist"}
    assert data["datasets"] == ["zalando-datasets/fashion_mnist"] and data["metrics"] == ["accuracy"]
    assert "base_model" not in data  # the shipped teacher is not on the Hub
    kd = checkpoints.read_metadata(run_dir / "kd-student.safetensors")
    ce = checkpoints.read_metadata(run_dir / "ce-student.safetensors")
    expected = {(metric, split): meta[key] for metric, meta in (("accuracy", kd), ("ce_twin_accuracy", ce))
                for split, key in (("test", "test_acc_per_seed"), ("validation", "val_acc_per_seed"))}
    results = {(r.metric_type, r.dataset_split): r for r in card.data.eval_results}
    assert results.keys() == expected.keys()
    for key, per_seed in expected.items():
        assert len(per_seed) == 2 and results[key].metric_args["per_seed"] == per_seed
        assert results[key].metric_value == pytest.approx(statistics.mean(per_seed), abs=1e-4)
        assert results[key].metric_args["std"] == pytest.approx(statistics.stdev(per_seed), abs=1e-4)
        assert results[key].metric_args["seeds"] == [0, 1]
    # the prose of the run's card: T, α, the teacher, the reproduce command, the ONNX contract and speed
    assert "| temperature T | 4.0 |" in card.text and "| α (weight on the teacher's soft targets) | 0.9 |" in card.text
    assert "python -m kd_core distill --epochs 1 --train-size 2000 --repeats 2" in card.text
    assert "kd-student.onnx" in card.text and "## Speed" in card.text and "CE student (same run)" in card.text


def test_a_hub_teacher_and_a_hub_dataset_are_named_in_the_metadata():
    meta = {"dataset": "hf:someone/sketches", "seeds": [3], "config": {"teacher": "hf-hub:someone/big-teacher"}}
    data = hub.card_data(meta, {"kd_test": [0.8]}, "kd-sketches", "apache-2.0").to_dict()
    assert data["base_model"] == "someone/big-teacher" and data["datasets"] == ["someone/sketches"]
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.8
    meta["config"]["student"] = "hf-hub:timm/mobilenetv3_small_100.lamb_in1k"  # fine-tuned from its own origin
    assert hub.card_data(meta, {}, "kd", "mit").to_dict()["base_model"] == "timm/mobilenetv3_small_100.lamb_in1k"


def no_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))


@pytest.mark.parametrize("setting, message", [
    ("no token", "error: no Hugging Face token: set HF_TOKEN or run `hf auth login`"),
    ("offline", "error: cannot publish offline: HF_HUB_OFFLINE is set"),
    ("no student", "has no kd-student.safetensors: write one with `python -m kd_core distill --save-students"),
])
def test_push_refuses_before_any_request(setting, message, standin, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    run = tmp_path
    if setting == "no token":
        no_token(monkeypatch, tmp_path)
    elif setting == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    calls = len(standin.calls)
    assert main(["push", str(run), "--repo", "kd-x", "--endpoint", standin.url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert len(standin.calls) == calls  # nothing reached the server


def test_an_unreachable_hub_fails_on_the_first_request_without_retrying(run_dir, monkeypatch, capsys):
    from support import free_port

    monkeypatch.setenv("HF_TOKEN", "hf_standin_token")
    waits = []
    monkeypatch.setattr(time, "sleep", waits.append)  # huggingface_hub's backoff waits with time.sleep
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["push", str(run_dir), "--repo", "kd-x", "--endpoint", endpoint]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach {endpoint} (ConnectError") and err.count("\n") == 1
    assert waits == []


@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="live Hub test: set HF_TOKEN (write access) to run")
def test_live_push_to_the_hub(run_dir):
    """Opt-in: a private repository on huggingface.co, with Xet as the Hub uses it, deleted afterwards."""
    from huggingface_hub import HfApi, ModelCard

    name = f"kd-playground-test-{uuid.uuid4().hex[:8]}"
    published = hub.push(run_dir, name, token=hub.machine_token(), private=True)
    api = HfApi()
    try:
        assert sorted(api.list_repo_files(published.repo_id)) == [".gitattributes", "README.md", "kd-student.onnx",
                                                                  "kd-student.safetensors"]
        card = ModelCard.load(published.repo_id)
        assert card.data.pipeline_tag == "image-classification" and len(card.data.eval_results) == 4
    finally:
        api.delete_repo(published.repo_id)


@pytest.mark.filterwarnings(LFS_PUT_WARNING)
def test_the_apps_publish_button_pushes_the_sessions_student_with_the_visitors_token(standin, legacy_upload,
                                                                                    monkeypatch):
    """The Space's "Publish the KD student": the visitor's OAuth token and the session's run (its summary, so the
    CE twin's figures are there although the run folder holds the KD student alone)."""
    import gradio as gr
    from huggingface_hub import ModelCard, constants
    from support import finished_session

    from kd_core.config import RunConfig
    from kd_core.ui import publish

    monkeypatch.setattr(constants, "ENDPOINT", standin.url)  # HfApi()'s default endpoint: the stand-in
    _, students = finished_session(RunConfig(epochs=1, train_size=1000, repeats=2))
    visitor = gr.OAuthToken(token="hf_visitor", scope="openid profile write-repos", expires_at=0)
    with pytest.raises(gr.Error, match="Sign in with Hugging Face first"):
        publish.publish("kd-space", True, students, None)
    with pytest.raises(gr.Error, match="Train a pair first"):
        publish.publish("kd-space", True, None, visitor)
    words = publish.publish("kd-space", True, students, visitor)
    repo = f"{OWNER}/kd-space"
    assert words.startswith(f"Published: [{repo}]({standin.url}/{repo}) · commit: {standin.url}/{repo}/commit/")
    assert "Bearer hf_visitor" in standin.tokens and standin.private[repo] is True
    files = standin.repos[repo]
    assert files["kd-student.safetensors"] == (students.run_dir / "kd-student.safetensors").read_bytes()
    results = {(r.metric_type, r.dataset_split): r.metric_args["per_seed"]
               for r in ModelCard(files["README.md"].decode()).data.eval_results}
    per_seed = students.summary["per_seed"]
    assert results[("ce_twin_accuracy", "test")] == [round(s["ce_acc"], 4) for s in per_seed]
    assert results[("accuracy", "validation")] == [round(s["kd_val_acc"], 4) for s in per_seed]


@pytest.mark.parametrize("visitor_token", [None, ""])
def test_a_visitor_without_a_token_is_refused_and_the_servers_token_is_never_used(visitor_token, standin,
                                                                                  monkeypatch, tmp_path):
    """A Space's owner often keeps HF_TOKEN as a secret: a visitor who has not signed in (no OAuth token, or an
    empty one) is refused in one line, and nothing reaches the Hub, neither with HF_TOKEN nor a stored login."""
    import gradio as gr
    from huggingface_hub import constants
    from support import finished_session

    from kd_core.config import RunConfig
    from kd_core.ui import publish

    monkeypatch.setattr(constants, "ENDPOINT", standin.url)
    monkeypatch.setenv("HF_TOKEN", "hf_space_owner")
    stored = tmp_path / "stored-token"
    stored.write_text("hf_stored_login")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(stored))
    _, students = finished_session(RunConfig(epochs=1, train_size=1000, repeats=1))
    token = None if visitor_token is None else gr.OAuthToken(token=visitor_token, scope="openid", expires_at=0)
    calls = len(standin.calls)
    with pytest.raises(gr.Error, match="(?i)sign in with Hugging Face first") as refused:
        publish.publish("kd-space", True, students, token)
    assert "\n" not in str(refused.value)
    assert len(standin.calls) == calls and not {"Bearer hf_space_owner", "Bearer hf_stored_login"} & standin.tokens


def test_off_spaces_the_app_says_how_to_push_from_the_command_line():
    import app
    from kd_core.ui import publish

    assert not publish.ON_SPACES
    texts = [block.value for block in app.demo.blocks.values() if getattr(block, "value", None).__class__ is str]
    assert any("python -m kd_core push students --repo NAME" in text for text in texts)
    assert not any(type(block).__name__ == "LoginButton" for block in app.demo.blocks.values())
