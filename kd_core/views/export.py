"""The Train tab's export panel: the session's KD student as ONNX with its card (kd_core.publish.deploy), timed beside
the teacher, as the files, the latency table and the comparison in words."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kd_core.models import predict
from kd_core.publish.deploy import export_with_card
from kd_core.publish.export import ExportUnavailable
from kd_core.publish.latency import latency_rows, latency_table, speedup_words
from kd_core.views.session import SessionStudents, downloads


@dataclass(frozen=True, eq=False)
class ExportView:
    """After an ONNX export: the files, the latency of teacher and KD student, and the comparison in words."""

    files: list[Path]
    latency: pd.DataFrame  # kd_core.publish.latency.latency_table: PyTorch and ONNX Runtime, batch 1 and 256
    words: str


def export_view(students: SessionStudents | None) -> ExportView:
    """The first seed's KD student as ONNX (normalisation built in), checked against PyTorch on the test set,
    timed beside the teacher, with its card; ValueError saying what is missing (a run, or the ONNX packages)."""
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

