"""One visitor's session of the app, without Gradio: the live run, its results and files, predictions.

`app.py` turns the widgets into a RunConfig (`settings.make_config`), streams
`live_run(cfg)` — one `RunView` per training event, carrying the plot frames, a status line, and at
the end the results table, the run log (CSV), the KD student (safetensors) and the session's new
`SessionStudents` — and shows them. Every `ValueError` raised here is a sentence for the visitor.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from PIL import Image

from . import bias, checkpoints, model_card, models, plots, predict
from .config import MAX_TEMPERATURE, RunConfig
from .data import load_dataset
from .engine import train_stack
from .predict import Classifier
from .roles import FEATURE_METHODS, NAMES
from .settings import DATASET_LABELS, training_threads
from .stack_pool import Queued, queued_status
from .stats import mean_std
from .train import (
    Evaluated,
    Finished,
    RunResult,
    Started,
    Step,
    card_summary,
    check_cpu_budget,
    kd_index,
    pair_event,
    resolve_device,
    roles,
    save_student,
)

CSV_COLUMNS = ["event", "epoch", "step", "progress", "train_seconds", "ce_loss", "kd_loss", "ce_acc", "kd_acc",
               "ce_hidden_acc", "kd_hidden_acc"]  # then ce_acc_seed_<seed>, kd_acc_seed_<seed> per seed


# ------------------------------------------------------------------------------------- the run

@dataclass(frozen=True, eq=False)
class SessionStudents:
    """The students of this session's latest run, as the Predict tab uses them (each the first seed's)."""

    ce: Classifier
    kd: Classifier  # the pair's KD student (Hinton KD's, else the first method's): saved, exported, carded
    description: str  # e.g. "this session's run: T=4, α=0.9, 3 epochs"
    run_dir: Path  # holds the run's CSV and checkpoint; removed when the session ends
    hidden: int | None = None  # the class hidden from the students, if any
    bias_report: dict | None = None  # RunResult.bias_report(): the bias curve and the automatic bias
    hidden_bias: float = 0.0  # added to the hidden class's logit of every student in the Predict tab
    summary: dict | None = None  # RunResult.summary() of the run: what the model cards say
    # every method's student, keyed by method in the run's order, each named by its own method ("DKD student");
    # `kd` is one of them, the same object
    methods: dict[str, Classifier] = field(default_factory=dict)


def downloads(students: SessionStudents | None) -> list[Path]:
    """The run's files beside the CSV: the KD student's model card, and its ONNX export once made."""
    if students is None or not students.run_dir.is_dir():
        return []
    return sorted(p for p in students.run_dir.iterdir() if p.suffix in (".md", ".onnx"))


@dataclass(frozen=True, eq=False)
class ExportView:
    """After an ONNX export: the files, the latency of teacher and KD student, and the comparison in words."""

    files: list[Path]
    latency: pd.DataFrame  # kd_core.latency.latency_table: PyTorch and ONNX Runtime, batch 1 and 256
    words: str


def export_onnx(students: SessionStudents | None) -> ExportView:
    """The first seed's KD student as ONNX (normalisation built in), checked against PyTorch on the test set,
    timed beside the teacher, with its card; ValueError saying what is missing (a run, or the ONNX packages)."""
    from .deploy import export_with_card
    from .export import ExportUnavailable
    from .latency import latency_rows, latency_table, speedup_words

    if students is None or students.summary is None:
        raise ValueError("train a pair first: the export takes this session's KD student")
    try:
        export_with_card(students.kd.model, students.kd.meta, students.run_dir / "kd-student.onnx",
                         summary=students.summary)
    except ExportUnavailable as error:
        raise ValueError(str(error)) from None
    teacher = predict.default_teacher(students.kd.meta["dataset"])
    rows = latency_rows({"teacher": (teacher.model, teacher.meta), "KD student": (students.kd.model,
                                                                               students.kd.meta)})
    return ExportView(downloads(students), latency_table(rows), speedup_words(rows))


def with_hidden_bias(students: SessionStudents, value: float) -> SessionStudents:
    """The same students, every one predicting with `value` added to the hidden class's logit (ValueError if
    no class is hidden)."""
    if students is None or students.hidden is None:
        raise ValueError("the bias applies after a run with a hidden class: train one first")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= bias.BIASES[-1]:
        raise ValueError(f"bias must be a number in [0, {bias.BIASES[-1]:g}]; got {value!r}")
    logit_bias = (students.hidden, float(value)) if value else None
    methods = {method: dataclasses.replace(c, logit_bias=logit_bias) for method, c in students.methods.items()}
    kd = next((methods[method] for method, c in students.methods.items() if c is students.kd),
              dataclasses.replace(students.kd, logit_bias=logit_bias))  # `kd` stays one of `methods`
    return dataclasses.replace(students, ce=dataclasses.replace(students.ce, logit_bias=logit_bias), kd=kd,
                               methods=methods, hidden_bias=float(value))


def bias_view(students: SessionStudents):
    """(Vega-Lite spec as JSON, caption) of the hidden-class bias curve of this session's run, its value marked."""
    report, value = students.bias_report, students.hidden_bias
    name = load_dataset(students.kd.meta["dataset"]).classes[students.hidden]
    figure = plots.spec_json(plots.bias_spec(report["bias_curve"], value, report["auto_bias"], name))
    at = min(report["bias_curve"], key=lambda row: abs(row["bias"] - value))
    caption = (f"With **+{value:g}** on the {name} logit: the KD student recognises "
               f"**{100 * at['kd_hidden_acc']:.1f}%** of the test {name.lower()} images ({100 * at['kd_acc']:.1f}% "
               f"of all), the CE student {100 * at['ce_hidden_acc']:.1f}% (means over the seeds). The automatic "
               f"bias, +{report['auto_bias']:.2f} "
               f"(where the KD student predicts {name} as often as the teacher does on the validation images, "
               f"no label read), gets {100 * report['kd_hidden_acc_at_auto_bias']:.1f}%. Hinton et al. (2015, §3) "
               f"raised the bias of an omitted digit the same way: the student had learnt the class from the "
               f"teacher's opinion of other images, and only its bias was too low. The Predict tab uses this bias.")
    return figure, caption


@dataclass(frozen=True, eq=False)
class RunView:
    """Everything the Train tab shows at one moment of a run."""

    status: str  # one line of plain text
    fraction: float  # of training steps done, in [0, 1]
    elapsed_s: float  # wall time since the run was asked for
    losses: LossCurves  # the loss chart's data
    accuracies: AccuracyCurves | None  # the accuracy chart's data; None = unchanged since the last view
    total_steps: int  # fixes the loss plot's x range (0 until known)
    epochs: int  # fixes the accuracy plot's x range
    table: pd.DataFrame | None = None  # results_table, at the end only
    log_csv: Path | None = None
    kd_checkpoint: Path | None = None
    students: SessionStudents | None = None
    verdict: str = ""  # the run's verdict in plain words, at the end only

    def status_html(self) -> str:
        percent = round(100 * self.fraction)
        return (f'<div class="kd-status"><progress max="100" value="{percent}"></progress> '
                f'<b>{percent}%</b> · {self.elapsed_s:.1f} s · {html.escape(self.status)}</div>')


@dataclass(frozen=True)
class LossCurves:
    """The loss chart's data: the Step events so far (shared, immutable). A view keeps a tuple of them, not a
    DataFrame, so the views a shared or replayed run records cost a pointer per step, not a frame each."""

    steps: tuple[Step, ...]
    names: tuple[str, ...] = (plots.CE, plots.KD)  # the students, CE first
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what `rendered` made

    def frame(self) -> pd.DataFrame:
        """Built once however many visitors share the view (the frame is only read)."""
        # every student name a run can have, in every frame: the browser fixes a chart's colour legend on its first
        # frame of the page, so a later run with other methods would otherwise draw its new lines without colour
        return rendered(self, lambda: plots.with_every_series(plots.loss_frame(self.steps, self.names), "student",
                                                              tuple(plots.LOSS_COLOURS), x="step"))


@dataclass(frozen=True)
class AccuracyCurves:
    """What the accuracy chart shows, as plain data: each viewer draws its own figure from it (`figure()`),
    so a view shared by many visitors, or kept to replay a run, holds no matplotlib objects."""

    evaluations: tuple[Evaluated, ...]
    teacher_acc: float | None
    epochs: int
    hidden: bool
    names: tuple[str, ...] = (plots.CE, plots.KD)
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what `rendered` made

    def spec(self) -> str:
        """The chart as a Vega-Lite spec (JSON) for the browser to draw, made once however many visitors share
        the view: the server draws no figure per update or per viewer."""
        return rendered(self, lambda: plots.spec_json(plots.accuracy_spec(
            self.evaluations, self.teacher_acc, self.epochs, self.hidden, self.names)))


_rendered_lock = threading.Lock()  # one for all views: what it guards takes milliseconds (data, not drawing)


def rendered(curves, make):
    """`make()` once per curves object (a view shared by many visitors, or replayed), kept in the object.

    The lock is held while making: threads that arrive together wait for the first one's result instead of
    each making their own (30 viewers of a shared run made every figure 12 times over)."""
    with _rendered_lock:
        if "made" not in curves.cache:
            curves.cache["made"] = make()
        return curves.cache["made"]


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
            seeds = self.started.seeds if self.started else ()
            self.rows.append({"event": "evaluation", "epoch": event.epoch, "step": event.step,
                              "progress": event.progress, "train_seconds": event.elapsed_s, "ce_acc": event.ce_acc,
                              "kd_acc": event.kd_acc, "ce_hidden_acc": event.ce_hidden_acc,
                              "kd_hidden_acc": event.kd_hidden_acc,
                              **{f"ce_acc_seed_{seed}": a for seed, a in zip(seeds, event.ce_accs, strict=True)},
                              **{f"kd_acc_seed_{seed}": a for seed, a in zip(seeds, event.kd_accs, strict=True)}})

    def names(self) -> tuple[str, ...]:
        return self.started.roles if self.started else (plots.CE, plots.KD)

    def losses(self) -> LossCurves:
        return LossCurves(tuple(self.steps), self.names())

    def accuracies(self) -> AccuracyCurves:
        teacher = self.started.teacher_val_acc if self.started else None
        return AccuracyCurves(tuple(self.evaluations), teacher, self.cfg.epochs, self.cfg.hide_class is not None,
                              self.names())

    def table(self) -> pd.DataFrame:
        """Step rows carry the losses, evaluation rows the validation-subset accuracies (fractions), the mean
        and every seed's."""
        extra = [c for row in self.rows for c in row if c not in CSV_COLUMNS]
        return pd.DataFrame(self.rows, columns=[*CSV_COLUMNS, *dict.fromkeys(extra)])


_active_lock = threading.Lock()
_active_runs = 0


def active_runs() -> int:
    """Runs whose training loop is open in this process (a cancelled run closes its loop)."""
    return _active_runs


def live_run(cfg: RunConfig, train: Callable[..., Iterator] | None = None) -> Iterator[RunView]:
    """Train cfg's students; yield a RunView per event, the last one with results, files and students.

    `train(cfg, roles)` yields the engine's events for cfg's roles (and `Queued` notices while it waits for a
    slot): a `StackPool.events` trains compatible visitors' runs as one stack; by default cfg trains alone.
    Closing this generator (Stop, a Gradio cancel) closes the engine's, which stops training at once.
    """
    global _active_runs
    start = time.perf_counter()
    log = RunLog(cfg)
    events = None
    with _active_lock:
        _active_runs += 1
    try:
        loading = "logits and features" if any(m in FEATURE_METHODS for m in cfg.methods) else "logits"
        yield RunView(f"loading the data and the teacher's {loading}…", 0.0, 0.0, log.losses(), None, 0, cfg.epochs)
        dataset = load_dataset(cfg.dataset)
        check_cpu_budget(cfg, dataset, resolve_device(cfg.device))  # ValueError: too big for a CPU
        events = (train or partial(train_stack, dataset=dataset))(cfg, roles(cfg))
        kd = kd_index(cfg)
        for item in events:
            if isinstance(item, Queued):
                yield RunView(queued_status(item), 0.0, time.perf_counter() - start, log.losses(), None, 0,
                              cfg.epochs)
                continue
            event = pair_event(item, kd)
            log.add(event)
            if isinstance(event, Finished):
                yield finished_view(event.result, log, time.perf_counter() - start)
                return
            figure = log.accuracies() if isinstance(event, Evaluated) else None  # redrawn when it changes
            yield RunView(describe_event(event, cfg), _fraction(log), time.perf_counter() - start,
                          log.losses(), figure, log.started.total_steps, cfg.epochs)
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
        transfer = f" + {event.transfer_samples:,} unlabelled" if event.transfer_samples else ""
        return (f"teacher {100 * event.teacher_acc:.1f}% · {event.train_samples:,} training images{transfer} · "
                f"{len(event.seeds)} seed(s) · {event.total_steps:,} steps on {event.device}"
                + "".join(f" · {note}" for note in event.notes))
    if isinstance(event, Step):
        return f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{event.total_steps:,}"
    hidden = (f" · hidden class: CE {100 * event.ce_hidden_acc:.1f}%, KD {100 * event.kd_hidden_acc:.1f}%"
              if event.ce_hidden_acc is not None else "")
    when = f"epoch {event.progress:.2f}" if event.step else "before training"
    return f"{when}, validation: CE {100 * event.ce_acc:.1f}%, KD {100 * event.kd_acc:.1f}%{hidden}"


def finished_view(result: RunResult, log: RunLog, elapsed_s: float) -> RunView:
    cfg = result.config
    run_dir = Path(tempfile.mkdtemp(prefix="kd-run-"))
    log_csv = run_dir / "kd-run-log.csv"
    log.table().to_csv(log_csv, index=False)
    kd_checkpoint = save_student(result, "kd", run_dir / "kd-student.safetensors")
    meta = checkpoints.load_tensors(kd_checkpoint)[1]  # as saved: with its size
    summary = card_summary(result, meta)
    model_card.write_card(kd_checkpoint, model_card.model_card(meta, summary))
    description = (f"this session's run: T={cfg.temperature:g}, α={cfg.alpha:g}, {result.epochs} epoch(s), "
                   f"{cfg.student} on {DATASET_LABELS[cfg.dataset]}, the students of seed {cfg.seed}")
    methods = method_students(result, meta)
    students = SessionStudents(predict.classifier_from(NAMES["ce"], result.ce_student, meta),
                               methods[cfg.methods[kd_index(cfg) - 1]], description, run_dir, cfg.hide_class,
                               result.bias_report(), summary=summary, methods=methods)
    # the files go with the students however they are dropped: replaced, the session closed (`discard`),
    # or the session forgotten by Gradio beyond its session capacity, which calls no delete_callback
    weakref.finalize(students, shutil.rmtree, run_dir, ignore_errors=True)
    status = (f"done: {result.verdict} · test accuracy CE {100 * result.ce_acc:.1f}%, KD "
              f"{100 * result.kd_acc:.1f}%, teacher {100 * result.teacher_acc:.1f}% · {result.seconds:.1f} s of "
              f"training on {result.device}, {result.samples_per_s:,.0f} images/s")
    if result.stopped:
        status += f" · stopped early: {result.stopped}"
    return RunView(status, 1.0, elapsed_s, log.losses(), log.accuracies(), log.started.total_steps,
                   cfg.epochs, results_table(result), log_csv, kd_checkpoint, students, result.verdict)


def method_students(result: RunResult, meta: dict) -> dict[str, Classifier]:
    """The first seed's student of every method of the run, each under its own method's name; `meta`: the saved
    KD student's (the dataset's classes, normalisation and input shape are the same for all)."""
    return {method: predict.classifier_from(NAMES[method], result.stack.module(0, result.column(method)), meta)
            for method in result.config.methods}


def results_table(result: RunResult) -> pd.DataFrame:
    """Teacher, CE students, then each method's students: test accuracy (mean ± std over seeds, and every seed's),
    validation accuracy, hidden-class accuracy, size, CPU latency, agreement with the teacher."""
    cfg = result.config
    teacher = predict.load_classifier(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), "teacher")
    hidden = cfg.hide_class
    student_ms = round(predict.cpu_latency_ms(result.ce_student, teacher.in_shape), 3)  # one architecture
    rows = [table_row("teacher", teacher.model, [result.teacher_acc], [result.stack.teacher_val_acc], "",
                      None if hidden is None else [result.teacher_class_acc[hidden]], 1.0,
                      round(predict.cpu_latency_ms(teacher.model, teacher.in_shape), 3))]
    for role in ("ce", *cfg.methods):
        column = result.column(role)
        test = result.accuracies(role)
        agreement = mean_std([row[column] for row in result.stack.agreement])[0]
        rows.append(table_row(result.stack.roles[column].name, result.ce_student, test,
                              result.accuracies(role, "val"), ", ".join(f"{100 * a:.1f}" for a in test),
                              result.hidden_accuracies(role), agreement, student_ms))
    table = pd.DataFrame(rows)
    return table if hidden is not None else table.drop(columns="hidden class (%)")


def table_row(name: str, model, test: list[float], val: list[float], per_seed: str, hidden: list[float] | None,
              agreement: float, latency_ms: float) -> dict:
    size = models.describe(model)
    mean, std = mean_std(test)
    return {"model": name,
            "test acc. (%)": f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(test) > 1 else ""),
            "per seed (%)": per_seed,
            "validation acc. (%)": round(100 * mean_std(val)[0], 2),
            "hidden class (%)": None if hidden is None else round(100 * mean_std(hidden)[0], 2),
            "params": size["params"],
            "size (MB)": round(size["bytes"] / 1e6, 3),
            "CPU ms/img": latency_ms,
            "agrees w/ teacher (%)": round(100 * agreement, 2)}


# ------------------------------------------------------------------------------------ predictions

@dataclass(frozen=True, eq=False)
class PredictView:
    """What the Predict tab shows for one picture."""

    preview: Image.Image  # the model input, enlarged with sharp pixels
    steps: str  # the preprocessing, e.g. "grayscale → inverted (light background) → …"
    # "teacher", "ce", then each method whose student predicts (kd_core.roles.METHODS keys) -> top-k
    # {class: probability}
    predictions: dict[str, dict[str, float]]
    students: str  # where the students come from


def student_methods(students: SessionStudents | None) -> tuple[str, ...]:
    """The methods whose students predict for this session: its run's, else the shipped pair's Hinton KD."""
    return ("kd",) if students is None else tuple(students.methods)


def session_classifiers(students: SessionStudents | None) -> tuple[dict[str, Classifier], str]:
    """{"teacher": …, "ce": CE student, then a student per method of the session's run, by method name}, and a
    sentence saying whose students they are. Without a run: the shipped pair, CE and Hinton KD ("kd").

    The teacher is the default one of the students' dataset: Fashion-MNIST's for the shipped pair.
    """
    if students is not None:
        teacher = predict.default_teacher(students.kd.meta["dataset"])
        description = students.description
        if students.hidden_bias:
            name = teacher.classes[students.hidden]
            description += f", each with +{students.hidden_bias:g} on the {name} logit (the hidden-class bias)"
        return {"teacher": teacher, "ce": students.ce, **students.methods}, description
    ce, kd = predict.default_students()
    cfg = kd.meta.get("config", {})
    return {"teacher": predict.default_teacher(kd.meta["dataset"]), "ce": ce, "kd": kd}, (
        f"the default pair shipped in checkpoints/ (T={cfg.get('temperature'):g}, α={cfg.get('alpha'):g}, "
        f"{cfg.get('epochs')} epochs, {kd.meta['arch']} on {DATASET_LABELS[kd.meta['dataset']]}); "
        f"train your own in the Train tab")


def predict_picture(picture: Image.Image, students: SessionStudents | None, k: int = 3) -> PredictView:
    """The teacher's and every student's top-k on `picture` (ValueError if it is blank)."""
    classifiers, source = session_classifiers(students)
    prepared = predict.prepare_image(picture, classifiers["teacher"].in_shape)
    return PredictView(predict.enlarge(prepared.pixels), " → ".join(prepared.steps) or "used as is",
                       predict.predict_all(classifiers, prepared.pixels, k), source)


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
    threads = training_threads()
    return f"CPU ({threads} training thread{'s' if threads > 1 else ''} of {os.cpu_count()} cores)"


# ------------------------------------------------------------------------------------ the sweep

@dataclass(frozen=True, eq=False)
class SweepView:
    """What the Sweep tab shows after one sweep event."""
    status: str
    heatmap: object | None  # a matplotlib Figure after each evaluated epoch; None = keep the last one
    frame: pd.DataFrame  # T, alpha, accuracy (%); accuracy missing until an epoch has been evaluated
    done: bool


def finished_sweep_view(result, temperatures: list[float], alphas: list[float]) -> SweepView:
    """The heatmap of test accuracy coloured by the gain beyond seed noise, and the best cell chosen on the
    validation split."""
    grid = result.grid
    frame = plots.sweep_frame(temperatures, alphas, result.kd_acc).assign(
        gain=[round(100 * g["kd_minus_ce"]["mean"], 2) for g in grid],
        wins=[g["kd_wins"] for g in grid], beyond_noise=[g["beyond_noise"] for g in grid],
        seeds=len(result.stack.seeds))
    ce_mean, ce_std = mean_std(result.accuracies(0))
    T, alpha = result.best()
    beyond = sum(g["beyond_noise"] and g["kd_minus_ce"]["mean"] > 0 for g in grid)
    status = (f"done in {result.seconds:.1f} s ({result.epochs} epoch(s), {len(result.stack.seeds)} seeds): best "
              f"on validation T={T:g}, α={alpha:g}; {beyond} of {len(grid)} cells beat CE "
              f"({100 * ce_mean:.1f} ± {100 * ce_std:.1f}% test) beyond seed noise")
    return SweepView(status, plots.sweep_heatmap(frame, ce_mean, ce_std=ce_std), frame, True)


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
            elif isinstance(event, SweepEvaluated):
                frame = plots.sweep_frame(temperatures, alphas, event.kd_acc)
                status = (f"epoch {event.epoch}/{cfg.epochs}, validation subset: CE baseline "
                          f"{100 * event.ce_acc:.1f}%, best KD cell so far {frame['accuracy'].max():.1f}%")
                yield SweepView(status, None, frame, False)
            elif isinstance(event, SweepFinished):
                yield finished_sweep_view(event.result, temperatures, alphas)
    finally:
        events.close()
