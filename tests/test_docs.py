"""The written contracts (docs/contracts.md) against the code: the files the code cites exist, and the
contracts list the CLI's subcommands and the app's api_names with their parameters; the README and docs/ state
the α convention as the loss does, and docs/api.md shows every endpoint."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONTRACTS = ROOT / "docs/contracts.md"
SOURCES = [ROOT / "app.py", *sorted((ROOT / "kd_core").rglob("*.py")), *sorted((ROOT / "tests").glob("*.py")),
           *sorted((ROOT / "bench").glob("*.py")), *sorted((ROOT / "scripts").glob("*.py"))]


# Markdown files the code *writes* (model cards beside saved students and ONNX exports), not documents it cites
WRITTEN = {"kd-student.md", "ce-student.md", "PATH.md", "-student.md"}


def cited_documents(path: Path) -> set[str]:
    return set(re.findall(r"[\w./-]*\w\.md\b", path.read_text())) - WRITTEN


@pytest.mark.parametrize("source", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_document_the_code_cites_is_in_the_repository(source):
    missing = [name for name in cited_documents(source)
               if not (ROOT / name).is_file() and not (source.parent / name).is_file()]
    assert missing == [], f"{source.relative_to(ROOT)} cites {missing}, which the repository lacks"


def section(title: str) -> str:
    text = CONTRACTS.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_contracts_list_every_cli_subcommand():
    from kd_core.__main__ import build_parser

    [subcommands] = [action for action in build_parser()._actions if action.dest == "command"]
    cli = section("Command line")
    for name, parser in subcommands.choices.items():
        assert f"`{name} " in cli or f"`{name}`" in cli, name
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in cli, (name, flag)


def test_the_contracts_list_every_public_endpoint_and_its_parameters():
    import app

    api = section("Gradio API")
    endpoints = app.demo.get_api_info()["named_endpoints"]
    documented = set(re.findall(r"^- `(/\w+)`", api, flags=re.MULTILINE))
    assert documented == set(endpoints)
    for name, endpoint in endpoints.items():
        entry = api[api.index(f"- `{name}`"):].split("\n- ")[0]
        for parameter in endpoint["parameters"]:
            assert f"`{parameter['parameter_name']}`" in entry, (name, parameter["parameter_name"])


def test_the_contracts_list_predicts_method_outputs_in_the_apps_order():
    from kd_core.ui import predict

    entry = section("Gradio API").split("- `/predict`")[1].split("\n- ")[0]
    listed = re.findall(r"`([\w-]+)`", " ".join(entry.split("in its order:")[1].split("(")[0].split()))
    assert listed == list(predict.PREDICT_METHODS[1:])  # the outputs after `students`


def test_the_contracts_state_the_alpha_convention_as_the_loss_does():
    from kd_core import losses

    loss = section("The KD loss")
    assert "α · T² · KL( softmax(t/T) ‖ softmax(s/T) )  +  (1 − α) · CE(s, y)" in loss
    assert "weight on the **teacher's soft targets**" in loss
    assert "kd_loss(student_logits, teacher_logits, labels, *, T, alpha)" in loss
    assert list(__import__("inspect").signature(losses.kd_loss).parameters) == [
        "student_logits", "teacher_logits", "labels", "T", "alpha"]


@pytest.mark.parametrize("document", ["README.md", "docs/methods.md", "docs/contracts.md"])
def test_the_docs_say_which_side_alpha_weighs_and_translate_keras(document):
    text = " ".join((ROOT / document).read_text().split())
    assert "teacher's soft targets" in text
    assert "0.7·CE + 0.3·KD is α = 0.3 here" in text.replace("**", "")


def test_the_api_page_calls_every_public_endpoint():
    import app

    api = (ROOT / "docs/api.md").read_text()
    called = set(re.findall(r'api_name="(/\w+)"', api))
    assert called == set(app.demo.get_api_info()["named_endpoints"])
