"""The live run as the Train tab shows it: the engine's events -> one `RunView` each, the last with the results.

`live_run(cfg, train)` streams a run: `train(cfg, roles)` yields the engine's own events (`kd_core.engine.loop`,
[seed][role]) for cfg's roles, or `Queued` notices while a stack waits for a slot (`kd_core.serve.stack_pool`, which
trains compatible visitors' runs as one stack); `RunLog` keeps them for the charts' data and the CSV, and each
view carries the status line, the loss chart's rows and the accuracy chart's spec (both made once per view and
shared by every viewer: the browser draws them). The last view carries the results table, the run log (CSV),
the KD student (safetensors, with its model card) and the session's new `SessionStudents`. Every `ValueError`
raised here is a sentence for the visitor.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from kd_core.config import RunConfig
from kd_core.engine.budget import check_cpu_budget
from kd_core.engine.events import Queued
from kd_core.engine.loop import StackEvaluated, StackFinished, StackStarted, StackStep, train_stack
from kd_core.engine.roles import FEATURE_METHODS, NAMES
from kd_core.engine.stats import mean_std
from kd_core.engine.train import (
    RunResult,
    kd_index,
    roles,
    run_result,
    save_student,
)
from kd_core.models import checkpoints, predict
from kd_core.models import zoo as models
from kd_core.models.predict import Classifier
from kd_core.publish import card as model_card
from kd_core.run import Run, Teacher, as_run
from kd_core.serve.settings import DATASET_LABELS
from kd_core.serve.stack_pool import queued_status
from kd_core.views import plots
from kd_core.views.session import SessionStudents

CSV_COLUMNS = ["event", "epoch", "step", "progress", "train_seconds", "ce_loss", "kd_loss", "ce_acc", "kd_acc",
               "ce_hidden_acc", "kd_hidden_acc"]  # then ce_acc_seed_<seed>, kd_acc_seed_<seed> per seed


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
    """The loss chart's data: the engine's step events so far (shared, immutable). A view keeps a tuple of them,
    not a DataFrame, so the views a shared or replayed run records cost a pointer per step, not a frame each."""

    steps: tuple[StackStep, ...]
    names: tuple[str, ...] = (plots.CE, plots.KD)  # the students (the run's roles), CE first
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what `rendered` made

    def frame(self) -> pd.DataFrame:
        """Built once however many visitors share the view (the frame is only read)."""
        # every student name a run can have, in every frame: the browser fixes a chart's colour legend on its first
        # frame of the page, so a later run with other methods would otherwise draw its new lines without colour
        return rendered(self, lambda: plots.with_every_series(plots.loss_frame(self.steps, self.names), "student",
                                                              tuple(plots.LOSS_COLOURS), x="step"))

    def split(self) -> dict:
        """The frame as the browser's chart takes it (`plots.split_frame`), made once per view: 30 visitors of a
        shared run converted the same frame 30 times per update. Rows only grow, so the streamed diff of one
        update to the next is the new rows alone."""
        return rendered(self, lambda: plots.split_frame(self.frame()), "split")


@dataclass(frozen=True)
class AccuracyCurves:
    """What the accuracy chart shows, as plain data (the engine's evaluation events so far): the browser draws
    it from `spec()`, so a view shared by many visitors, or kept to replay a run, holds no figure."""

    evaluations: tuple[StackEvaluated, ...]
    teacher_acc: float | None
    epochs: int
    names: tuple[str, ...] = (plots.CE, plots.KD)
    kd: int = 1  # the KD students' role (their hidden-class line)
    cache: dict = field(default_factory=dict, compare=False, repr=False)  # what `rendered` made

    def spec(self) -> str:
        """The chart as a Vega-Lite spec (JSON) for the browser to draw, made once however many visitors share
        the view: the server draws no figure per update or per viewer."""
        return rendered(self, lambda: plots.spec_json(plots.accuracy_spec(
            self.evaluations, self.teacher_acc, self.epochs, self.names, self.kd)))


_rendered_lock = threading.RLock()  # one for all views (what it guards takes milliseconds: data, not drawing);
# re-entrant: a view's split rows are made from its frame, itself made under the lock


def rendered(curves, make, slot: str = "made"):
    """`make()` once per curves object and `slot` (a view shared by many visitors, or replayed), kept in it.

    The lock is held while making: threads that arrive together wait for the first one's result instead of
    each making their own (30 viewers of a shared run made every figure 12 times over)."""
    with _rendered_lock:
        if slot not in curves.cache:
            curves.cache[slot] = make()
        return curves.cache[slot]


class RunLog:
    """The engine's events of one run, accumulated for the live plots and the CSV."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.kd = kd_index(cfg)  # the role behind the CSV's kd_* columns
        self.started: StackStarted | None = None
        self.steps: list[StackStep] = []
        self.evaluations: list[StackEvaluated] = []
        self.rows: list[dict] = []  # the CSV, one row per step or evaluation event, in order

    def add(self, event) -> None:
        kd = self.kd
        if isinstance(event, StackStarted):
            self.started = event
        elif isinstance(event, StackStep):
            self.steps.append(event)
            self.rows.append({"event": "step", "epoch": event.epoch, "step": event.step,
                              "train_seconds": event.elapsed_s, "ce_loss": event.loss(0), "kd_loss": event.loss(kd)})
        elif isinstance(event, StackEvaluated):
            self.evaluations.append(event)
            seeds = self.started.seeds if self.started else ()
            self.rows.append({"event": "evaluation", "epoch": event.epoch, "step": event.step,
                              "progress": event.progress, "train_seconds": event.elapsed_s, "ce_acc": event.mean(0),
                              "kd_acc": event.mean(kd), "ce_hidden_acc": event.hidden_mean(0),
                              "kd_hidden_acc": event.hidden_mean(kd),
                              **{f"ce_acc_seed_{seed}": a for seed, a in zip(seeds, event.per_seed(0), strict=True)},
                              **{f"kd_acc_seed_{seed}": a for seed, a in zip(seeds, event.per_seed(kd), strict=True)}})

    def names(self) -> tuple[str, ...]:
        return tuple(role.name for role in self.started.roles) if self.started else (plots.CE, plots.KD)

    def losses(self) -> LossCurves:
        return LossCurves(tuple(self.steps), self.names())

    def accuracies(self) -> AccuracyCurves:
        teacher = self.started.teacher_val_acc if self.started else None
        return AccuracyCurves(tuple(self.evaluations), teacher, self.cfg.epochs, self.names(), self.kd)

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


def live_run(run: Run | RunConfig, train: Callable[..., Iterator] | None = None) -> Iterator[RunView]:
    """Train the run's students; yield a RunView per event, the last one with results, files and students.

    `run` was resolved where the request entered (kd_core.run; a RunConfig is resolved here, for scripts and
    tests). `train(run, roles)` yields the engine's events for its roles (and `Queued` notices while it waits for
    a slot): a `StackPool.events` trains compatible visitors' runs as one stack; by default the run trains alone.
    Closing this generator (Stop, a Gradio cancel) closes the engine's, which stops training at once.
    """
    cfg = run if isinstance(run, RunConfig) else run.config
    global _active_runs
    start = time.perf_counter()
    log = RunLog(cfg)
    events = None
    with _active_lock:
        _active_runs += 1
    try:
        loading = "logits and features" if any(m in FEATURE_METHODS for m in cfg.methods) else "logits"
        yield RunView(f"loading the data and the teacher's {loading}…", 0.0, 0.0, log.losses(), None, 0, cfg.epochs)
        if isinstance(run, RunConfig):  # (scripts, tests: where the request enters)
            run = as_run(run)
        check_cpu_budget(run)  # ValueError: too big for a CPU
        events = (train or train_stack)(run, roles(cfg))
        for event in events:
            if isinstance(event, Queued):
                yield RunView(queued_status(event), 0.0, time.perf_counter() - start, log.losses(), None, 0,
                              cfg.epochs)
                continue
            if isinstance(event, StackFinished):
                yield finished_view(run_result(event.result), log, time.perf_counter() - start)
                return
            log.add(event)
            figure = log.accuracies() if isinstance(event, StackEvaluated) else None  # redrawn when it changes
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
    """The status line of an engine event (the pair's figures: CE, role 0, and KD, role `kd_index`)."""
    if isinstance(event, StackStarted):
        transfer = f" + {event.transfer_samples:,} unlabelled" if event.transfer_samples else ""
        return (f"teacher {100 * event.teacher_acc:.1f}% · {event.train_samples:,} training images{transfer} · "
                f"{len(event.seeds)} seed(s) · {event.total_steps:,} steps on {event.device}"
                + "".join(f" · {note}" for note in event.notes))
    if isinstance(event, StackStep):
        return f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{event.total_steps:,}"
    kd = kd_index(cfg)
    hidden = (f" · hidden class: CE {100 * event.hidden_mean(0):.1f}%, KD {100 * event.hidden_mean(kd):.1f}%"
              if event.hidden_accuracy is not None else "")
    when = f"epoch {event.progress:.2f}" if event.step else "before training"
    return f"{when}, validation: CE {100 * event.mean(0):.1f}%, KD {100 * event.mean(kd):.1f}%{hidden}"


def finished_view(result: RunResult, log: RunLog, elapsed_s: float) -> RunView:
    cfg = result.config
    run_dir = Path(tempfile.mkdtemp(prefix="kd-run-"))
    log_csv = run_dir / "kd-run-log.csv"
    log.table().to_csv(log_csv, index=False)
    kd_checkpoint = save_student(result, "kd", run_dir / "kd-student.safetensors")
    meta = checkpoints.load_tensors(kd_checkpoint)[1]  # as saved: with its size
    summary = model_card.run_card_summary(result, meta)
    model_card.write_card(kd_checkpoint, model_card.model_card(meta, summary))
    description = (f"this session's run: T={cfg.temperature:g}, α={cfg.alpha:g}, {result.epochs} epoch(s), "
                   f"{cfg.student} on {Path(cfg.data).name if cfg.data else DATASET_LABELS[cfg.dataset]}, the "
                   f"students of seed {cfg.seed}")
    methods = method_students(result, meta)
    students = SessionStudents(predict.classifier_from(NAMES["ce"], result.ce_student, meta),
                               methods[cfg.methods[kd_index(cfg) - 1]], description, run_dir, cfg.hide_class,
                               result.bias_report(), summary=summary, methods=methods)
    owning_files(students)
    status = (f"done: {result.verdict} · test accuracy CE {100 * result.ce_acc:.1f}%, KD "
              f"{100 * result.kd_acc:.1f}%, teacher {100 * result.teacher_acc:.1f}% · {result.seconds:.1f} s of "
              f"training on {result.device}, {result.samples_per_s:,.0f} images/s")
    if result.stopped:
        status += f" · stopped early: {result.stopped}"
    return RunView(status, 1.0, elapsed_s, log.losses(), log.accuracies(), log.started.total_steps,
                   cfg.epochs, results_table(result), log_csv, kd_checkpoint, students, result.verdict)


def owning_files(students: SessionStudents) -> SessionStudents:
    """The students' run folder goes with them however they are dropped: replaced, the session closed (`discard`),
    or the session forgotten by Gradio beyond its session capacity, which calls no delete_callback."""
    weakref.finalize(students, shutil.rmtree, students.run_dir, ignore_errors=True)
    return students


def own_copy(view: RunView) -> RunView:
    """A finished view with its own copy of the students and of their folder (the CSV, the checkpoint, its card):
    what a visitor sharing a run may change or lose is that visitor's alone."""
    run_dir = Path(tempfile.mkdtemp(prefix="kd-run-"))
    for path in view.students.run_dir.iterdir():
        shutil.copy2(path, run_dir / path.name)
    log_csv, kd_checkpoint = (None if path is None else run_dir / path.name
                              for path in (view.log_csv, view.kd_checkpoint))
    # copied together, so that `kd` stays one of `methods` in the copy
    ce, kd, methods = copy.deepcopy((view.students.ce, view.students.kd, view.students.methods))
    students = owning_files(dataclasses.replace(view.students, ce=ce, kd=kd, methods=methods, run_dir=run_dir))
    return dataclasses.replace(view, log_csv=log_csv, kd_checkpoint=kd_checkpoint, students=students)


def method_students(result: RunResult, meta: dict) -> dict[str, Classifier]:
    """The first seed's student of every method of the run, each under its own method's name; `meta`: the saved
    KD student's (the dataset's classes, normalisation and input shape are the same for all)."""
    return {method: predict.classifier_from(NAMES[method], result.stack.module(0, result.column(method)), meta)
            for method in result.config.methods}


def results_table(result: RunResult) -> pd.DataFrame:
    """Teacher, CE students, then each method's students: test accuracy (mean ± std over seeds, and every seed's),
    validation accuracy, hidden-class accuracy, size, CPU latency, agreement with the teacher."""
    cfg = result.config
    teacher_model, in_shape = teacher_network(result.stack.teacher)
    hidden = cfg.hide_class
    student_ms = latency_ms(cfg.student, result.ce_student, in_shape)  # one architecture for all students
    rows = [table_row("teacher", teacher_model, [result.teacher_acc], [result.stack.teacher_val_acc], "",
                      None if hidden is None else [result.teacher_class_acc[hidden]], 1.0,
                      latency_ms(str(result.stack.teacher.path), teacher_model, in_shape))]
    for role in ("ce", *cfg.methods):
        column = result.column(role)
        test = result.accuracies(role)
        agreement = mean_std([row[column] for row in result.stack.agreement])[0]
        rows.append(table_row(result.stack.roles[column].name, result.ce_student, test,
                              result.accuracies(role, "val"), ", ".join(f"{100 * a:.1f}" for a in test),
                              result.hidden_accuracies(role), agreement, student_ms))
    table = pd.DataFrame(rows)
    return table if hidden is not None else table.drop(columns="hidden class (%)")


def teacher_network(teacher: Teacher) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    """A network of the teacher's architecture for the table's size and latency, which do not depend on its weights:
    a zoo teacher is built from its metadata (read once, when the run was resolved); another is loaded."""
    meta, in_shape = teacher.meta, tuple(teacher.meta["in_shape"])
    if meta["arch"] in models.TEACHERS or meta["arch"] in models.STUDENTS:
        return models.build(meta["arch"], in_shape, meta["num_classes"]).eval(), in_shape
    loaded = predict.load_classifier(teacher.path, "teacher")
    return loaded.model, loaded.in_shape


_latencies: dict[tuple, float] = {}


def latency_ms(architecture: str, model, in_shape: tuple[int, int, int]) -> float:
    """`predict.cpu_latency_ms` of an architecture, measured once per process: a classroom's 30 results tables
    timed the same two networks 30 times over, while the others' students trained."""
    key = (architecture, tuple(in_shape))
    if key not in _latencies:
        _latencies[key] = round(predict.cpu_latency_ms(model, in_shape), 3)
    return _latencies[key]


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

