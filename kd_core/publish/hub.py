"""Publish a run's KD student on the Hugging Face Hub: its safetensors and ONNX files and a model card whose
metadata sets it beside its CE twin.

`push(run_dir, repo)` is what `python -m kd_core push` and the app's "Publish the KD student" run. The run
directory is what `distill --save-students DIR` writes (`kd-student.safetensors`, `ce-student.safetensors`, their
cards) or the app's run folder (the KD student alone; the app passes the run's summary instead). When no
`kd-student.onnx` is there yet, it is exported first, exactly as `kd_core export` does (kd_core.publish.deploy).

The card is the prose kd_core.publish.card writes (T, α, method, teacher, the reproduce command, the ONNX input
contract, the speed table) under metadata built with huggingface_hub's own `ModelCardData` and `EvalResult`:
licence, tags, datasets, `base_model` when the student (else the teacher) came from the Hub, and a `model-index`
with this student's validation and test accuracy (mean over seeds, the std and per-seed values in `args`) beside the CE
twin's (as `ce_twin_accuracy`, so no leaderboard reads the twin's figure as this model's).

Everything goes through `HfApi(endpoint=..., token=...)` (`create_repo`, `upload_folder`); nothing here speaks
HTTP. `push` uses the token it is given and no other: the CLI gives `machine_token()` (HF_TOKEN or the stored
login: the user's own machine), the app the visitor's OAuth token, never the server's (a Space's owner often
keeps HF_TOKEN as a secret; a visitor must not push with it). A missing token or offline mode fails before any
request, a refused connection on the first request, each with one line (`PushError`, a ValueError: exit code 2
on the CLI, `gr.Error` in the app).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kd_core.models.checkpoints import load_model, read_metadata
from kd_core.publish.card import HF_DATASETS, card_path, model_card, teacher_facts

KD_FILE, CE_FILE, ONNX_FILE = "kd-student.safetensors", "ce-student.safetensors", "kd-student.onnx"
DEFAULT_LICENSE = "mit"  # Fashion-MNIST's and MNIST's licence; --license changes it
HUB_TEACHER, HUB_DATA = "hf-hub:", "hf:"  # how a run names a teacher / dataset that came from the Hub
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
SPLITS = {"test": "test", "val": "validation"}  # our split -> the model-index's dataset split


class PushError(ValueError):
    """Publishing cannot start or failed: no token, offline, no student in the folder, or the Hub said no."""


@dataclass(frozen=True)
class Published:
    repo_id: str
    repo_url: str
    commit_url: str
    files: tuple[str, ...]  # what the commit holds, by name in the repository

    def summary(self) -> dict:
        return {"repo_id": self.repo_id, "repo_url": self.repo_url, "files": list(self.files),
                "commit_url": self.commit_url}


# ------------------------------------------------------------------------------------ what is published

def seed_accuracies(kd_meta: Mapping, ce_meta: Mapping | None, summary: Mapping | None) -> dict[str, list[float]]:
    """Per-seed accuracies `{"kd_test", "kd_val", "ce_test", "ce_val"}` (fractions), from the run's summary
    (`RunResult.summary()`: the app) or else from the checkpoints' metadata (`distill --save-students`); a
    figure nobody recorded is an empty list."""
    if summary and summary.get("per_seed"):
        return {f"{role}_{split}": [float(seed[f"{role}_{'val_acc' if split == 'val' else 'acc'}"])
                                    for seed in summary["per_seed"]]
                for role in ("kd", "ce") for split in ("test", "val")}
    figures = {}
    for role, meta in (("kd", kd_meta), ("ce", ce_meta or {})):
        figures[f"{role}_test"] = [float(a) for a in meta.get("test_acc_per_seed")
                                   or ([meta["test_acc"]] if "test_acc" in meta else [])]
        # older checkpoints record the first seed's validation accuracy only: a single seed's, if one was run
        one = [meta["val_acc"]] if "val_acc" in meta and len(meta.get("seeds", [0])) == 1 else []
        figures[f"{role}_val"] = [float(a) for a in meta.get("val_acc_per_seed") or one]
    return figures


def card_summary(kd_meta: Mapping, ce_meta: Mapping | None) -> dict:
    """What kd_core.publish.card needs for the prose, from the checkpoints alone (the CLI's run folders)."""
    figures = seed_accuracies(kd_meta, ce_meta, None)
    summary = {**teacher_facts(kd_meta), "kd_acc": figures["kd_test"], "seeds": kd_meta.get("seeds")}
    if figures["ce_test"]:
        summary["ce_acc"] = figures["ce_test"]
    return summary


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def eval_results(meta: Mapping, figures: Mapping[str, list[float]], seeds: Sequence[int]):
    """The model-index entries: this student's accuracy on each split, then its CE twin's (another metric type)."""
    from huggingface_hub import EvalResult

    dataset = meta["dataset"]
    results = []
    for role, metric in (("kd", "accuracy"), ("ce", "ce_twin_accuracy")):
        for split, hub_split in SPLITS.items():
            values = figures.get(f"{role}_{split}") or []
            if not values:
                continue
            mean, std = mean_std(values)
            who = "" if role == "kd" else "CE twin (same student, labels only, same seeds): "
            where = "validation split (5,000 held-out training images)" if split == "val" else "test set"
            results.append(EvalResult(
                task_type="image-classification", dataset_type=HF_DATASETS.get(dataset, dataset),
                dataset_name=DATASET_NAMES.get(dataset, dataset), dataset_split=hub_split, metric_type=metric,
                metric_value=round(mean, 4),
                metric_name=f"{who}accuracy on the {where}, mean over {len(values)} seed(s)",
                metric_args={"std": round(std, 4), "seeds": list(seeds)[:len(values)],
                             "per_seed": [round(v, 4) for v in values]}))
    return results


def card_data(meta: Mapping, figures: Mapping[str, list[float]], model_name: str, license: str):
    """The card's YAML metadata as huggingface_hub's `ModelCardData`."""
    from huggingface_hub import ModelCardData

    config = meta.get("config", {})
    dataset, teacher, student = meta["dataset"], str(config.get("teacher", "")), str(config.get("student", ""))
    # the model this one was fine-tuned from: a Hub student's own origin, else a Hub teacher
    base = next((name.removeprefix(HUB_TEACHER) for name in (student, teacher) if name.startswith(HUB_TEACHER)), None)
    hub_dataset = dataset.removeprefix(HUB_DATA) if dataset.startswith(HUB_DATA) else HF_DATASETS.get(dataset)
    seeds = meta.get("seeds") or ([meta["seed"]] if "seed" in meta else [])
    return ModelCardData(
        license=license, library_name="pytorch", pipeline_tag="image-classification", model_name=model_name,
        tags=["knowledge-distillation", "onnx", "safetensors", "kd-playground", dataset.removeprefix(HUB_DATA)],
        datasets=[hub_dataset] if hub_dataset else None, metrics=["accuracy"],
        base_model=base,
        eval_results=eval_results(meta, figures, seeds) or None)


def hub_card(run_dir: Path, meta: Mapping, figures: Mapping[str, list[float]], summary: Mapping, *, model_name: str,
             license: str) -> str:
    """README.md: the run's card prose (the card beside the ONNX file, or a fresh one) under the Hub metadata."""
    from huggingface_hub import ModelCard

    local = card_path(run_dir / ONNX_FILE)
    text = (local.read_text(encoding="utf-8") if local.is_file()
            else model_card(meta, summary, onnx_file=ONNX_FILE))
    card = ModelCard(text)  # parses the prose's own front matter, which the Hub metadata replaces
    card.data = card_data(meta, figures, model_name, license)
    return str(card)


def stage(run_dir: str | Path, summary: Mapping | None = None, *, model_name: str,
          license: str = DEFAULT_LICENSE) -> Path:
    """A temporary folder with what is published: README.md, the KD student's safetensors and ONNX files
    (exported first when the run folder has none). The caller removes it."""
    run_dir = Path(run_dir)
    if not (run_dir / KD_FILE).is_file():
        raise PushError(f"{run_dir} has no {KD_FILE}: write one with `python -m kd_core distill "
                        f"--save-students {run_dir}`")
    model, meta = load_model(run_dir / KD_FILE)
    ce_meta = read_metadata(run_dir / CE_FILE) if (run_dir / CE_FILE).is_file() else None
    prose_summary = dict(summary) if summary else card_summary(meta, ce_meta)
    if not (run_dir / ONNX_FILE).is_file():
        from kd_core.publish.deploy import export_with_card

        export_with_card(model, meta, run_dir / ONNX_FILE, summary=prose_summary)
    folder = Path(tempfile.mkdtemp(prefix="kd-push-"))
    for name in (KD_FILE, ONNX_FILE):
        shutil.copyfile(run_dir / name, folder / name)
    figures = seed_accuracies(meta, ce_meta, summary)
    (folder / "README.md").write_text(hub_card(run_dir, meta, figures, prose_summary, model_name=model_name,
                                               license=license), encoding="utf-8")
    return folder


# --------------------------------------------------------------------------------------------- pushing

def offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "on", "yes", "true"}
    return bool(constants.HF_HUB_OFFLINE) or flag  # the variable may be set after huggingface_hub was imported


def require_online() -> None:
    if offline():
        raise PushError("cannot publish offline: HF_HUB_OFFLINE is set; unset it and connect to the internet")


def machine_token() -> str:
    """This machine's own token, HF_TOKEN or the stored `hf auth login` one: for the CLI, never for a visitor."""
    from huggingface_hub import get_token

    require_online()  # offline, that is the one line worth reading, token or not
    token = get_token()
    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access)")
    return token


def push(run_dir: str | Path, repo: str, *, token: str, private: bool = False, endpoint: str | None = None,
         summary: Mapping | None = None, license: str = DEFAULT_LICENSE) -> Published:
    """Create `repo` (if new) and commit the KD student, its ONNX export and the card to it; what was committed.

    `token`: whose push this is; an empty one is refused before any request, never replaced by HF_TOKEN or a
    stored login (`machine_token()` is the CLI's). `summary`: the run's `RunResult.summary()` (the app has it);
    without it the figures come from the checkpoints in `run_dir`. `endpoint`: another Hub (default:
    huggingface.co, or $HF_ENDPOINT)."""
    from huggingface_hub import HfApi

    # HTTPError: the base error of huggingface_hub's HTTP library (httpx2 in 2.x, httpx in 1.x), as errors.py has it
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    require_online()
    if not token:
        raise PushError("no Hugging Face token: sign in with Hugging Face first")
    if not repo or repo.count("/") > 1:
        raise PushError(f"--repo must be NAME or OWNER/NAME, got {repo!r}")
    folder = stage(run_dir, summary, model_name=repo.rsplit("/", 1)[-1], license=license)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo, private=private or None, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=url.repo_id, folder_path=folder, repo_type="model",
                                 commit_message="KD Playground: the KD student, its ONNX export and its card")
    except HfHubHTTPError as error:
        raise PushError(f"the Hub refused the push: {str(error).splitlines()[0]}") from None
    except HTTPError as error:  # no connection: create_repo's one request fails at once, with no retries
        raise PushError(f"cannot reach {api.endpoint} ({type(error).__name__}: {error}); check the network "
                        f"or --endpoint") from None
    except RuntimeError as error:  # how upload_folder reports a file whose upload failed
        cause = f" ({str(error.__cause__).splitlines()[0]})" if error.__cause__ else ""
        raise PushError(f"{error}{cause}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return Published(url.repo_id, str(url), info.commit_url, ("README.md", KD_FILE, ONNX_FILE))
