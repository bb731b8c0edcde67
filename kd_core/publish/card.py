"""A short model card (Hugging Face style: YAML front matter + Markdown) for a saved student.

`model_card(meta, summary)` writes it from two dicts and touches no file:

- `meta`: the student checkpoint's metadata (`train.student_metadata`, or `checkpoints.load_model(path)[1]`):
  `arch`, `role` ("ce-student" / "kd-student"), `dataset`, `classes`, `params`, `bytes`, `seed`, `recipe`
  (the command that made it), `config` (the run's RunConfig fields) and `test_acc`.
- `summary`: the run's results. `teacher_acc`, `ce_acc`, `kd_acc` (fractions in [0, 1]), each either one
  number or a list with one value per seed; optional `seeds` (list of ints, in the order of those lists),
  `ce_hidden_acc` / `kd_hidden_acc` (the hidden class's accuracy, number or list) and `teacher_arch`.
  `train.RunResult.summary()` has this shape. Missing entries fall back to `meta` (own accuracy, seed).

The card names the dataset, teacher, T, α and seeds, gives accuracies with their spread (mean ± sample std
and range over seeds; with one seed it says that no spread was measured), the exact command that reproduces
the run, and the loss with the α convention of docs/contracts.md. `write_card` puts it beside a checkpoint or an
.onnx file as `<same stem>.md` (so `kd-student.safetensors` gets `kd-student.md`).
"""

from __future__ import annotations

import shlex
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from kd_core.models.checkpoints import CheckpointError, atomic_write, read_metadata, resolve_teacher

HF_DATASETS = {"fashion-mnist": "zalando-datasets/fashion_mnist", "mnist": "ylecun/mnist",
               "cifar10": "uoft-cs/cifar10"}
LOSS_FORMULA = "L = α · T² · KL( softmax(t/T) ‖ softmax(s/T) ) + (1 − α) · CE(s, y)"
ROLE_NAMES = {"ce": "CE student", "kd": "KD student", "teacher": "teacher"}
# RunConfig field -> the distill flag that sets it (for a card whose checkpoint has no recorded recipe)
DISTILL_FLAGS = {"dataset": "--dataset", "teacher": "--teacher", "student": "--student",
                 "temperature": "--T", "alpha": "--alpha", "epochs": "--epochs", "lr": "--lr",
                 "batch_size": "--batch-size", "train_size": "--train-size", "hide_class": "--hide-class",
                 "seed": "--seed", "repeats": "--repeats", "unlabeled": "--unlabeled", "methods": "--methods",
                 "dkd_beta": "--dkd-beta", "feature_weight": "--feature-weight"}
SWITCHES = {"augment": "--augment", "pretrained": "--pretrained", "unlabeled_hidden": "--unlabeled-hidden",
            "student_pretrained": "--student-pretrained"}


def card_path(model_path: str | Path) -> Path:
    """Where a model file's card goes: the same name with `.md`."""
    return Path(model_path).with_suffix(".md")


def write_card(model_path: str | Path, text: str) -> Path:
    """Write `text` atomically as the card beside `model_path`; returns the card's path."""
    return atomic_write(card_path(model_path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def teacher_facts(meta: Mapping, teacher: Mapping | None = None) -> dict:
    """`teacher_acc` and `teacher_arch` from the teacher's metadata (`teacher`: a run's, read when it was resolved),
    else from a student's teacher checkpoint when it is still on disk (nothing for a teacher's own metadata)."""
    if role_of(meta) == "teacher":
        return {}
    if teacher is None:
        config = meta.get("config", {})
        try:
            teacher = read_metadata(resolve_teacher(config.get("teacher", "default"), meta["dataset"]))
        except (CheckpointError, KeyError):
            return {}
    return {key: teacher[source] for key, source in (("teacher_acc", "test_acc"), ("teacher_arch", "arch"))
            if source in teacher}


def role_of(meta: Mapping) -> str:
    """'ce' or 'kd' for a student checkpoint (its `role`), 'teacher' for a checkpoint without a role."""
    role = meta.get("role")
    return role.removesuffix("-student") if role else "teacher"


def reproduce_command(meta: Mapping) -> str:
    """The recorded recipe; for older checkpoints without one, the command built from the metadata."""
    if meta.get("recipe"):
        return meta["recipe"]
    if role_of(meta) == "teacher":
        return "python -m kd_core " + shlex.join([
            "train-teacher", "--dataset", meta.get("dataset", "fashion-mnist"),
            "--arch", meta.get("arch", "?"), "--epochs", str(meta.get("epochs", 6)),
            "--seed", str(meta.get("seed", 0)),
            "--out", f"{meta.get('arch', 'teacher')}.safetensors"])
    config = meta.get("config", {})
    args = ["distill"]
    for field, flag in DISTILL_FLAGS.items():
        value = config.get(field)
        if value is not None:
            args += [flag, ",".join(value) if isinstance(value, list | tuple) else str(value)]
    args += [flag for field, flag in SWITCHES.items() if config.get(field)]
    return "python -m kd_core " + shlex.join([*args, "--save-students", "students"])


def as_list(value: float | Sequence[float] | None) -> list[float]:
    if value is None:
        return []
    return [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]


def accuracy_text(values: float | Sequence[float]) -> str:
    """'86.46 % (one seed)' or '86.50 ± 0.21 % (mean ± std over 3 seeds, 86.31–86.72 %)'."""
    accs = [100 * v for v in as_list(values)]
    if len(accs) == 1:
        return f"{accs[0]:.2f} % (one seed)"
    return (f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f} % (mean ± std over {len(accs)} "
            f"seeds, {min(accs):.2f}–{max(accs):.2f} %)")


def model_card(meta: Mapping, summary: Mapping | None = None, *, onnx_file: str | None = None,
               latency: Sequence[Mapping] | None = None) -> str:
    """The card as Markdown. `onnx_file`: name of an exported .onnx beside it (adds its input contract);
    `latency`: rows from `latency.latency_rows` (adds a speed table)."""
    summary = dict(summary or {})
    role = role_of(meta)
    summary.setdefault(f"{role}_acc", meta.get("test_acc"))
    if role == "teacher":
        summary.setdefault("teacher_arch", meta.get("arch"))
    how = teacher_training(meta) if role == "teacher" else training(meta, summary, role)
    sections = [front_matter(meta), title_and_summary(meta, summary, role), results(meta, summary, role),
                how, reproduce(meta), usage(meta, onnx_file)]
    if latency:
        sections.append(speed(latency))
    sections.append(limitations(meta))
    return "\n\n".join(sections) + "\n"


def front_matter(meta: Mapping) -> str:
    dataset = meta.get("dataset", "")
    tags = ["knowledge-distillation", "image-classification", "kd-playground", dataset]
    lines = ["---", "library_name: pytorch", "tags:", *(f"- {tag}" for tag in tags if tag)]
    if dataset in HF_DATASETS:
        lines += ["datasets:", f"- {HF_DATASETS[dataset]}"]
    return "\n".join([*lines, "metrics:", "- accuracy", "pipeline_tag: image-classification", "---"])


def title_and_summary(meta: Mapping, summary: Mapping, role: str) -> str:
    config = meta.get("config", {})
    how = {"kd": "by knowledge distillation from a teacher's softened predictions (and the labels)",
           "ce": "with cross-entropy on the labels only, as the baseline for its KD sibling",
           "teacher": "with cross-entropy on the labels, as a teacher whose softened predictions KD "
                      "students learn from"}[role]
    size = (f"{meta['params']:,} parameters, {meta['bytes'] / 1e6:.2f} MB" if "params" in meta
            else "size unknown")
    teacher = summary.get("teacher_arch") or config.get("teacher")
    teacher = "" if role == "teacher" else f"Teacher: `{teacher}`. "
    title = {"teacher": "Teacher"}.get(role, ROLE_NAMES[role])
    return (f"# {title} · {meta.get('arch', '?')} · {meta.get('dataset', '?')}\n\n"
            f"A `{meta.get('arch', '?')}` classifier ({size}) trained in KD Playground {how}. "
            f"{teacher}Class names, in output order: {', '.join(meta.get('classes', []))}.")


def results(meta: Mapping, summary: Mapping, role: str) -> str:
    rows = []
    if summary.get("teacher_acc") is not None:
        arch = f" (`{summary['teacher_arch']}`)" if summary.get("teacher_arch") else ""
        name = "**teacher (this model)**" if role == "teacher" else f"teacher{arch}"
        rows.append(f"| {name} | {100 * float(summary['teacher_acc']):.2f} % |")
    for other in ("ce", "kd"):
        if summary.get(f"{other}_acc") is None:
            continue
        name = f"**{ROLE_NAMES[other]} (this model)**" if other == role else f"{ROLE_NAMES[other]} (same run)"
        hidden = as_list(summary.get(f"{other}_hidden_acc"))
        extra = f"; hidden class: {accuracy_text(hidden)}" if hidden else ""
        rows.append(f"| {name} | {accuracy_text(summary[f'{other}_acc'])}{extra} |")
    seeds = seeds_of(meta, summary)
    spread = "" if role == "teacher" else (
        f"Spread: over seeds {', '.join(map(str, seeds))}; a CE–KD difference smaller than the spread "
        f"is seed noise, not a win." if len(seeds) > 1 else
        f"One seed only ({seeds[0] if seeds else '?'}): the spread across seeds was not measured, so a "
        f"CE–KD difference of a few tenths of a percent may be seed noise. Repeat with other seeds "
        f"before calling a winner.")
    return "\n".join(["## Results", "", f"Accuracy on the {meta.get('dataset', '?')} test set:", "",
                      "| model | test accuracy |", "|---|---|", *rows, "", spread]).rstrip()


def seeds_of(meta: Mapping, summary: Mapping) -> list[int]:
    if summary.get("seeds"):
        return [int(s) for s in summary["seeds"]]
    return [int(meta["seed"])] if meta.get("seed") is not None else []


def training(meta: Mapping, summary: Mapping, role: str) -> str:
    config = meta.get("config", {})
    hidden = config.get("hide_class")
    classes = meta.get("classes", [])
    rows = [("dataset", f"{meta.get('dataset', '?')}; training images: "
             f"{config.get('train_size') or 'all'}"),
            ("teacher", f"`{config.get('teacher', '?')}`" + (" (the shipped checkpoint)"
                                                             if config.get("teacher") == "default" else "")),
            ("temperature T", config.get("temperature", "?")),
            ("α (weight on the teacher's soft targets)", config.get("alpha", "?")),
            ("epochs · batch · Adam lr", f"{config.get('epochs', '?')} · {config.get('batch_size', '?')} · "
                                         f"{config.get('lr', '?')}"),
            ("seeds", ", ".join(map(str, seeds_of(meta, summary))) or "?"),
            ("hidden class", "none" if hidden is None else
             f"{classes[hidden] if hidden < len(classes) else hidden} (removed from the students' training)")]
    own = ("This student minimised the loss below at the T and α above." if role == "kd" else
           "This student minimised plain cross-entropy (the loss below with α = 0); T and α above are its "
           "KD sibling's.")
    return "\n".join(["## Training", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
                      own, "", "```", LOSS_FORMULA, "```", "",
                      "t: teacher logits, s: student logits, y: the label; KL averaged over the batch. "
                      "α weighs the teacher's soft targets (α = 0 is plain cross-entropy, α = 1 pure "
                      "distillation); T² keeps the soft term's gradients comparable across temperatures "
                      "(Hinton, Vinyals & Dean 2015, *Distilling the Knowledge in a Neural Network*)."])


def teacher_training(meta: Mapping) -> str:
    rows = [("dataset", meta.get("dataset", "?")), ("epochs", meta.get("epochs", "?")),
            ("seed", meta.get("seed", "?")), ("trained on", meta.get("device", "?")),
            ("training time", f"{meta['train_seconds']:.0f} s" if "train_seconds" in meta else "?")]
    return "\n".join(["## Training", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
                      "Students distil from it with the loss below (α weighs the teacher's soft targets):",
                      "", "```", LOSS_FORMULA, "```"])


def reproduce(meta: Mapping) -> str:
    what = ("It trains the teacher and writes the checkpoint (with its training-set logits) to `--out`."
            if role_of(meta) == "teacher" else
            "It trains the CE and the KD student side by side on the same batches from the same initial "
            "weights; with `--save-students DIR` it writes both checkpoints and their cards there.")
    return "\n".join(["## Reproduce", "", "From the KD Playground repository root:", "", "```bash",
                      reproduce_command(meta), "```", "",
                      f"{what} Other hardware or torch builds may give slightly different figures."])


def usage(meta: Mapping, onnx_file: str | None) -> str:
    lines = ["## Use", "", "PyTorch, with kd_core: `model, meta = kd_core.models.checkpoints.load_model(path)`; "
             "the model takes normalised float images (`(x / 255 − mean) / std`, mean and std in `meta`); "
             "`kd_core.models.predict` does that for any picture."]
    if onnx_file:
        from kd_core.publish.export import INPUT_CONTRACT

        lines += ["", f"ONNX (`{onnx_file}`), normalisation built in — {INPUT_CONTRACT}:", "", "```python",
                  "import onnxruntime as ort",
                  f"session = ort.InferenceSession({onnx_file!r}, providers=['CPUExecutionProvider'])",
                  "logits = session.run(['logits'], {'images': images_uint8_bchw})[0]", "```"]
    return "\n".join(lines)


def speed(latency: Sequence[Mapping]) -> str:
    rows = [f"| {r['model']} | {r['params']:,} | {r['weights_mb']:.2f} | {r['torch_ms_b1']:.3g} | "
            f"{r['onnx_ms_b1']:.3g} | {r['torch_ms_per_image_b256']:.3g} | "
            f"{r['onnx_ms_per_image_b256']:.3g} |" for r in latency]
    threads = latency[0].get("threads", 1)
    return "\n".join([
        "## Speed", "", f"CPU, {threads} thread{'s' if threads != 1 else ''}, uint8 images in, logits out, "
        "measured when this card was written (fastest of interleaved rounds, kd_core.publish.latency):", "",
        "| model | params | weights MB | PyTorch ms (batch 1) | ONNX Runtime ms (batch 1) | "
        "PyTorch ms/img (batch 256) | ONNX Runtime ms/img (batch 256) |", "|---|---|---|---|---|---|---|",
        *rows])


def limitations(meta: Mapping) -> str:
    return ("## Limitations\n\nA teaching model: trained on the small, centred images of "
            f"{meta.get('dataset', '?')} only. Other pictures must be brought to that form first (the app's "
            "`kd_core.models.predict.prepare_image` does it for photos and sketches); accuracy on them is not "
            "measured.")


def run_card_summary(result, meta: Mapping) -> dict:
    """What a student's model card reports of the run it came from (a kd_core.engine.train.RunResult): the run's
    summary with every seed's accuracies, and the teacher's facts from the metadata read when the run was resolved."""
    teacher = result.stack.teacher.meta if result.stack.teacher else None
    return {**teacher_facts(meta, teacher), **result.summary(), "ce_acc": result.accuracies("ce"),
            "kd_acc": result.accuracies("kd"), "seeds": list(result.seeds)}
