"""One visitor's session of the app, without Gradio: the students of its latest run, and their files.

`SessionStudents` is what a browser session keeps after a run (`kd_core.views.run_view.finished_view` makes it):
the first seed's CE student and every method's student, the run's folder (CSV, checkpoint, model card), the
hidden class and its bias. The views that show them live beside what they show: the live run and its results
(`run_view`), the Predict and Dark knowledge tabs (`picture_views`), the ONNX export (`deploy`), the hidden
class's bias panel (`bias`), the sweep (`sweep`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kd_core.engine import bias
from kd_core.models.predict import Classifier
from kd_core.serve.settings import training_threads


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


def student_methods(students: SessionStudents | None) -> tuple[str, ...]:
    """The methods whose students predict for this session: its run's, else the shipped pair's Hinton KD."""
    return ("kd",) if students is None else tuple(students.methods)


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

