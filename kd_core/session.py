"""One visitor's session of the app, without Gradio: run settings, the live run, its results and files.

`app.py` maps widgets onto `make_config` (app limits on top of `RunConfig.validate`), streams
`live_run(cfg)` — one `RunView` per training event, carrying the plot frames, a status line, and at
the end the results table, the run log (CSV), the KD student (safetensors) and the session's new
`SessionStudents` — and shows them. Every `ValueError` raised here is a sentence for the visitor.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from . import checkpoints, data, models, plots, predict
from .config import MAX_TEMPERATURE, RunConfig
from .data import CLASSES, TRAIN_SET_SIZES, load_dataset
from .predict import Classifier
from .train import (
    Evaluated,
    Finished,
    RunResult,
    Started,
    Step,
    check_cpu_budget,
    distill,
    resolve_device,
    save_student,
    student_metadata,
)

MAX_APP_EPOCHS = 20  # the app's cap (RunConfig allows 50): a run on a shared Space stays short
DEFAULT_MAX_RUN_SECONDS = 300.0  # wall-time cap of one run of training; $KD_MAX_RUN_SECONDS overrides
TRAIN_SIZES = (0, 20_000, 10_000, 5_000, 2_000, 1_000, 500)  # 0 = the whole training set
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
NO_HIDDEN_CLASS = "none"
DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}
CSV_COLUMNS = ["event", "epoch", "step", "train_seconds", "ce_loss", "kd_loss", "ce_acc", "kd_acc",
               "ce_hidden_acc", "kd_hidden_acc"]

# preset name -> RunConfig fields that differ from RunConfig(); every other knob goes back to its default
PRESETS: dict[str, dict] = {
    "Defaults": {},
    "Seed script: T=3.5, α=0.6": {"temperature": 3.5, "alpha": 0.6},
    # measured with the shipped teacher, seed 0: CE student 78.5%, KD student 80.6% test accuracy
    "Low data (1,000 images): KD shines": {"temperature": 4.0, "alpha": 0.9, "train_size": 1000,
                                           "epochs": 20, "lr": 3e-3},
    # measured: test dresses recognised by the CE student 0%, by the KD student 31%
    "Hidden class: no dresses for the students": {"temperature": 4.0, "alpha": 0.9, "hide_class": 3,
                                                   "train_size": 10_000, "epochs": 20, "lr": 3e-3},
    "Pure CE (α=0): twin students": {"alpha": 0.0},
}


def max_run_seconds() -> float:
    return float(os.environ.get("KD_MAX_RUN_SECONDS", DEFAULT_MAX_RUN_SECONDS))


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return RunConfig().replace(**PRESETS[name])


def hidden_class_name(cfg: RunConfig) -> str:
    return NO_HIDDEN_CLASS if cfg.hide_class is None else CLASSES[cfg.dataset][cfg.hide_class]


# ------------------------------------------------------------------------------------ datasets

def app_datasets() -> tuple[str, ...]:
    """The datasets the app offers: the default one (torchvision downloads it where it is not on disk),
    then each other one whose files are on this machine and whose teacher is in checkpoints/.

    A quick look for files, no loading: a Space never starts a CIFAR-10 download on a visitor's click.
    """
    default = RunConfig().dataset
    return (default, *(name for name in data.available_datasets()
                       if name != default and _has_default_teacher(name)))


def _has_default_teacher(dataset: str) -> bool:
    try:
        checkpoints.default_teacher_path(dataset)
    except checkpoints.CheckpointError:
        return False
    return True


def dataset_hint() -> str:
    """Which datasets could be added, and how (shown under the picker)."""
    missing = [DATASET_LABELS[name] for name in CLASSES if name not in app_datasets()]
    if not missing:
        return ""
    return (f"{' and '.join(missing)} can be picked once the files are in ./data and a teacher is in "
            f"checkpoints/ (see the README).")


def app_students(dataset: str) -> tuple[str, ...]:
    """Students offered for `dataset`: the small ones, and ResNet-18 for CIFAR-10 (GPU-sized: on a CPU,
    `live_run`'s budget check refuses all but tiny runs of it, with the reason)."""
    return (*models.SMALL_STUDENTS, *(("resnet18-cifar",) if dataset == "cifar10" else ()))


def train_size_choices(dataset: str) -> list[tuple[str, int]]:
    """(label, value) pairs for the training-set picker; 0 = the whole training set."""
    return [(f"all {TRAIN_SET_SIZES[dataset]:,}", 0), *((f"{n:,}", n) for n in TRAIN_SIZES[1:])]


def teacher_summary(dataset: str) -> str:
    """One line about `dataset`'s default teacher, or why there is none."""
    try:
        teacher = predict.default_teacher(dataset)
    except checkpoints.CheckpointError as error:
        return f"no teacher yet: {error}"
    return (f"{DATASET_LABELS[dataset]} teacher: {teacher.meta['arch']}, {teacher.meta['params']:,} "
            f"parameters, {100 * teacher.meta['test_acc']:.1f}% test accuracy")


def make_config(*, temperature: float, alpha: float, epochs: int, lr: float, student: str,
                train_size: int, hide_class: str, seed: int, dataset: str | None = None,
                base: RunConfig | None = None) -> RunConfig:
    """The app's settings as a validated RunConfig, capped for a shared machine; ValueError if not."""
    base = base or RunConfig()
    dataset = base.dataset if dataset is None else dataset
    offered = app_datasets()
    if dataset not in offered:
        raise ValueError(f"dataset must be one of {', '.join(offered)} here; got {dataset!r}. "
                         f"{dataset_hint()}")
    if student not in app_students(dataset):
        raise ValueError(f"student must be one of {', '.join(app_students(dataset))} for {dataset} in "
                         f"the app; got {student!r}")
    classes = CLASSES[dataset]
    if hide_class not in (NO_HIDDEN_CLASS, *classes):
        raise ValueError(f"hide_class must be {NO_HIDDEN_CLASS!r} or one of {', '.join(classes)}; "
                         f"got {hide_class!r}")
    epochs, train_size, seed = (_whole(name, value) for name, value in
                                (("epochs", epochs), ("train_size", train_size), ("seed", seed)))
    if not 1 <= epochs <= MAX_APP_EPOCHS:
        raise ValueError(f"epochs must be a whole number in [1, {MAX_APP_EPOCHS}] in the app "
                         f"(the command line allows more); got {epochs!r}")
    hidden = None if hide_class == NO_HIDDEN_CLASS else classes.index(hide_class)
    cfg = base.replace(dataset=dataset, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                       student=student, train_size=train_size, hide_class=hidden, seed=seed,
                       max_seconds=max_run_seconds())
    return cfg.validate(len(classes))


def _whole(name: str, value) -> int:
    """Widgets send 3.0 for 3; anything that is not a whole number is the visitor's mistake."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number; got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------- the run

@dataclass(frozen=True, eq=False)
class SessionStudents:
    """The students of this session's latest run, as the Predict tab uses them."""

    ce: Classifier
    kd: Classifier
    description: str  # e.g. "this session's run: T=4, α=0.9, 3 epochs"
    run_dir: Path  # holds the run's CSV and checkpoint; removed when the session ends


@dataclass(frozen=True, eq=False)
class RunView:
    """Everything the Train tab shows at one moment of a run."""

    status: str  # one line of plain text
    fraction: float  # of training steps done, in [0, 1]
    elapsed_s: float  # wall time since the run was asked for
    losses: pd.DataFrame  # plots.loss_frame
    accuracies: pd.DataFrame  # plots.accuracy_frame
    total_steps: int  # fixes the loss plot's x range (0 until known)
    epochs: int  # fixes the accuracy plot's x range
    table: pd.DataFrame | None = None  # results_table, at the end only
    log_csv: Path | None = None
    kd_checkpoint: Path | None = None
    students: SessionStudents | None = None

    def status_html(self) -> str:
        percent = round(100 * self.fraction)
        return (f'<div class="kd-status"><progress max="100" value="{percent}"></progress> '
                f'<b>{percent}%</b> · {self.elapsed_s:.1f} s · {html.escape(self.status)}</div>')


class RunLog:
    """The events of one run, accumulated for the live plots and the CSV."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.started: Started | None = None
        self.steps: list[Step] = []
        self.evaluations: list[Evaluated] = []
        self.rows: list[dict] = []  # the CSV, one row per Step or Evaluated event, in order

    def add(self, event) -> None:
        if isinstance(event, Started):
            self.started = event
        elif isinstance(event, Step):
            self.steps.append(event)
            self.rows.append({"event": "step", "epoch": event.epoch, "step": event.step,
                              "train_seconds": event.elapsed_s, "ce_loss": event.ce_loss,
                              "kd_loss": event.kd_loss})
        elif isinstance(event, Evaluated):
            self.evaluations.append(event)
            self.rows.append({"event": "evaluation", "epoch": event.epoch, "step": event.step,
                              "train_seconds": event.elapsed_s, "ce_acc": event.ce_acc,
                              "kd_acc": event.kd_acc, "ce_hidden_acc": event.ce_hidden_acc,
                              "kd_hidden_acc": event.kd_hidden_acc})

    def losses(self) -> pd.DataFrame:
        frame = plots.loss_frame(self.steps)
        return plots.with_every_series(frame, "student", [plots.CE, plots.KD], x="step")

    def accuracies(self) -> pd.DataFrame:
        series = [plots.CE, plots.KD, plots.TEACHER]
        if self.cfg.hide_class is not None:
            series += [plots.CE_HIDDEN, plots.KD_HIDDEN]
        frame = plots.accuracy_frame(self.evaluations, self.started.teacher_acc if self.started else None)
        return plots.with_every_series(frame, "model", series, x="epoch")

    def table(self) -> pd.DataFrame:
        """Step rows carry the losses, evaluation rows the test accuracies (fractions)."""
        return pd.DataFrame(self.rows, columns=CSV_COLUMNS)


_active_lock = threading.Lock()
_active_runs = 0


def active_runs() -> int:
    """Runs whose training loop is open in this process (a cancelled run closes its loop)."""
    return _active_runs


def live_run(cfg: RunConfig) -> Iterator[RunView]:
    """Train cfg's students; yield a RunView per event, the last one with results, files and students.

    Closing this generator (Stop, a Gradio cancel) closes `distill`, which stops training at once.
    """
    global _active_runs
    start = time.perf_counter()
    log = RunLog(cfg)
    events = None
    with _active_lock:
        _active_runs += 1
    try:
        yield RunView("loading the data and the teacher's logits…", 0.0, 0.0, log.losses(), log.accuracies(),
                      0, cfg.epochs)
        dataset = load_dataset(cfg.dataset)
        check_cpu_budget(cfg, dataset, resolve_device(cfg.device))  # ValueError: too big for a CPU
        events = distill(cfg, dataset)
        for event in events:
            log.add(event)
            if isinstance(event, Finished):
                yield finished_view(event.result, log, time.perf_counter() - start)
                return
            yield RunView(describe_event(event, cfg), _fraction(log), time.perf_counter() - start,
                          log.losses(), log.accuracies(), log.started.total_steps, cfg.epochs)
    finally:
        if events is not None:
            events.close()
        with _active_lock:
            _active_runs -= 1


def _fraction(log: RunLog) -> float:
    done = log.steps[-1].step if log.steps else 0
    return done / log.started.total_steps if log.started else 0.0


def describe_event(event, cfg: RunConfig) -> str:
    if isinstance(event, Started):
        return (f"teacher {100 * event.teacher_acc:.1f}% · {event.train_samples:,} training images · "
                f"{event.total_steps:,} steps on {event.device}")
    if isinstance(event, Step):
        return f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{event.total_steps:,}"
    hidden = (f" · hidden class: CE {100 * event.ce_hidden_acc:.1f}%, KD {100 * event.kd_hidden_acc:.1f}%"
              if event.ce_hidden_acc is not None else "")
    when = f"after epoch {event.epoch}" if event.epoch else "before training"
    return f"{when}: CE {100 * event.ce_acc:.1f}%, KD {100 * event.kd_acc:.1f}%{hidden}"


def finished_view(result: RunResult, log: RunLog, elapsed_s: float) -> RunView:
    cfg = result.config
    run_dir = Path(tempfile.mkdtemp(prefix="kd-run-"))
    log_csv = run_dir / "kd-run-log.csv"
    log.table().to_csv(log_csv, index=False)
    kd_checkpoint = save_student(result, "kd", run_dir / "kd-student.safetensors")
    meta = student_metadata(result, "kd")
    description = (f"this session's run: T={cfg.temperature:g}, α={cfg.alpha:g}, {result.epochs} epoch(s), "
                   f"{cfg.student} on {DATASET_LABELS[cfg.dataset]}")
    students = SessionStudents(predict.classifier_from("CE student", result.ce_student, meta),
                               predict.classifier_from("KD student", result.kd_student, meta),
                               description, run_dir)
    # the files go with the students however they are dropped: replaced, the session closed (`discard`),
    # or the session forgotten by Gradio beyond its session capacity, which calls no delete_callback
    weakref.finalize(students, shutil.rmtree, run_dir, ignore_errors=True)
    status = (f"done: CE {100 * result.ce_acc:.1f}%, KD {100 * result.kd_acc:.1f}%, teacher "
              f"{100 * result.teacher_acc:.1f}% · {result.seconds:.1f} s of training on {result.device}, "
              f"{result.samples_per_s:,.0f} images/s")
    if result.stopped:
        status += f" · stopped early: {result.stopped}"
    return RunView(status, 1.0, elapsed_s, log.losses(), log.accuracies(), log.started.total_steps,
                   cfg.epochs, results_table(result), log_csv, kd_checkpoint, students)


def results_table(result: RunResult) -> pd.DataFrame:
    """Teacher / CE student / KD student: accuracy, hidden-class accuracy, size, CPU latency, agreement."""
    cfg = result.config
    teacher = predict.load_classifier(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), "teacher")
    hidden = cfg.hide_class
    rows = []
    for name, model, acc, per_class, agreement in (
            ("teacher", teacher.model, result.teacher_acc, result.teacher_class_acc, 1.0),
            ("CE student", result.ce_student, result.ce_acc, result.ce_class_acc, result.ce_agreement),
            ("KD student", result.kd_student, result.kd_acc, result.kd_class_acc, result.kd_agreement)):
        size = models.describe(model)
        rows.append({
            "model": name,
            "test acc. (%)": round(100 * acc, 2),
            "hidden class (%)": None if hidden is None else round(100 * per_class[hidden], 2),
            "params": size["params"],
            "size (MB)": round(size["bytes"] / 1e6, 3),
            "CPU ms/img": round(predict.cpu_latency_ms(model, teacher.in_shape), 3),
            "agrees w/ teacher (%)": round(100 * agreement, 2),
        })
    table = pd.DataFrame(rows)
    return table if hidden is not None else table.drop(columns="hidden class (%)")


# ------------------------------------------------------------------------------------ predictions

@dataclass(frozen=True, eq=False)
class PredictView:
    """What the Predict tab shows for one picture."""

    preview: Image.Image  # the model input, enlarged with sharp pixels
    steps: str  # the preprocessing, e.g. "grayscale → inverted (light background) → …"
    predictions: dict[str, dict[str, float]]  # model name -> top-k {class: probability}
    students: str  # where the students come from


def session_classifiers(students: SessionStudents | None) -> tuple[list[Classifier], str]:
    """[teacher, CE student, KD student] for this session, and a sentence saying whose students they are.

    The teacher is the default one of the students' dataset: Fashion-MNIST's for the shipped pair.
    """
    if students is not None:
        teacher = predict.default_teacher(students.kd.meta["dataset"])
        return [teacher, students.ce, students.kd], students.description
    ce, kd = predict.default_students()
    cfg = kd.meta.get("config", {})
    return [predict.default_teacher(kd.meta["dataset"]), ce, kd], (
        f"the default pair shipped in checkpoints/ (T={cfg.get('temperature'):g}, α={cfg.get('alpha'):g}, "
        f"{cfg.get('epochs')} epochs, {kd.meta['arch']} on {DATASET_LABELS[kd.meta['dataset']]}); "
        f"train your own in the Train tab")


def predict_picture(picture: Image.Image, students: SessionStudents | None, k: int = 3) -> PredictView:
    """The three models' top-k on `picture` (ValueError if it is blank)."""
    models_, source = session_classifiers(students)
    prepared = predict.prepare_image(picture, models_[0].in_shape)
    return PredictView(predict.enlarge(prepared.pixels), " → ".join(prepared.steps) or "used as is",
                       predict.predict_all(models_, prepared.pixels, k), source)


@dataclass(frozen=True, eq=False)
class SoftenView:
    """What the Dark knowledge tab shows: the teacher's probabilities at T = 1 and at T."""

    preview: Image.Image
    plain: pd.DataFrame  # plots.probability_frame at T = 1
    softened: pd.DataFrame  # at the chosen T
    caption: str


def soften_picture(picture: Image.Image, temperature: float, dataset: str = "fashion-mnist") -> SoftenView:
    teacher = predict.default_teacher(dataset)
    if not (isinstance(temperature, (int, float)) and 0 < temperature <= MAX_TEMPERATURE):
        raise ValueError(f"temperature must be a number in (0, {MAX_TEMPERATURE:g}]; got {temperature!r}")
    prepared = predict.prepare_image(picture, teacher.in_shape)
    logits = teacher.logits(prepared.pixels[None])[0]
    plain = plots.probability_frame(logits, teacher.classes, 1.0)
    soft = plots.probability_frame(logits, teacher.classes, temperature)
    top = teacher.classes[int(logits.argmax())]
    plain_bits, soft_bits = (plots.entropy_bits(predict.softened(logits, t)) for t in (1.0, temperature))
    caption = (f"The teacher says **{top}**. Entropy {plain_bits:.2f} bits at T = 1, {soft_bits:.2f} bits "
               f"at T = {temperature:g} (uniform: {math.log2(len(teacher.classes)):.2f}). The small "
               f"probabilities that softening brings out (which wrong classes look alike) are the dark "
               f"knowledge the KD student learns from.")
    return SoftenView(predict.enlarge(prepared.pixels), plain, soft, caption)


def discard(students: SessionStudents | None) -> None:
    """Remove a session's run files (called when its students are replaced or the session ends)."""
    if students is not None:
        shutil.rmtree(students.run_dir, ignore_errors=True)


def device_label() -> str:
    """Where training runs, without initialising CUDA (ZeroGPU forbids that outside a GPU call)."""
    if torch.cuda.is_available():
        return "GPU (CUDA)"
    threads = RunConfig().cpu_threads
    return f"CPU ({threads} training thread{'s' if threads > 1 else ''} of {os.cpu_count()} cores)"


# ------------------------------------------------------------------------------------ the sweep

@dataclass(frozen=True, eq=False)
class SweepView:
    """What the Sweep tab shows after one sweep event."""
    status: str
    heatmap: object | None  # a matplotlib Figure after each evaluated epoch; None = keep the last one
    frame: pd.DataFrame  # T, alpha, accuracy (%); accuracy missing until an epoch has been evaluated
    done: bool


def parse_values(name: str, text: str) -> list[float]:
    """'1, 2, 4' -> [1.0, 2.0, 4.0]; ValueError naming the field otherwise (duplicates dropped)."""
    try:
        values = [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers like 1, 2, 4; got {text!r}") from None
    return sorted(set(values))


def live_sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float]) -> Iterator[SweepView]:
    """Train the T × α grid; yield a SweepView per event, the heatmap after every epoch."""
    from .sweep import SweepEvaluated, SweepFinished, SweepStarted, SweepStep, sweep

    # every (T, α) cell from the first update on, accuracy missing: the line charts fix their colour
    # legend on their first frame (see plots.with_every_series), so each line must be named already
    empty = plots.sweep_frame(temperatures, alphas, [math.nan] * (len(temperatures) * len(alphas)))
    events = sweep(cfg, temperatures, alphas)
    try:
        yield SweepView("loading the data and the teacher's logits…", None, empty, False)
        total = 1
        for event in events:
            if isinstance(event, SweepStarted):
                total = event.total_steps
                yield SweepView(f"{len(event.grid)} KD students + the CE baseline, trained together on "
                                f"{event.device}: {total:,} steps", None, empty, False)
            elif isinstance(event, SweepStep):
                yield SweepView(f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{total:,} · "
                                f"{event.elapsed_s:.1f} s", None, empty, False)
            elif isinstance(event, SweepEvaluated | SweepFinished):
                result = event.result if isinstance(event, SweepFinished) else None
                ce, kd = (result.ce_acc, result.kd_acc) if result else (event.ce_acc, event.kd_acc)
                frame = plots.sweep_frame(temperatures, alphas, kd)
                best = frame.loc[frame["accuracy"].idxmax()]
                status = (f"best KD student: T={best['T']:g}, α={best['alpha']:g} with "
                          f"{best['accuracy']:.1f}%; CE baseline {100 * ce:.1f}%")
                status = (f"done in {result.seconds:.1f} s ({result.epochs} epoch(s)): " if result
                          else f"after epoch {event.epoch}/{cfg.epochs}: ") + status
                yield SweepView(status, plots.sweep_heatmap(frame, ce), frame, result is not None)
    finally:
        events.close()
