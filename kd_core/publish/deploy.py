"""Take a model home: the .onnx file, checked against PyTorch on the test set, timed, with its model card.

`export_with_card` is what `python -m kd_core export` runs and what the app can call for an ONNX download:
export (kd_core.publish.export), compare ONNX Runtime's logits with PyTorch's on the dataset's test images (an
`ExportMismatch` removes the file and says by how much they differ), measure batch-1 and batch-256 latency
on CPU (kd_core.publish.latency), and write the card beside the file (kd_core.publish.card). Needs the ONNX
packages of requirements.txt. The app's export button is kd_core.views.export.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from kd_core.data.sources import dataset_of
from kd_core.publish.card import ROLE_NAMES, model_card, role_of, teacher_facts, write_card
from kd_core.publish.export import (
    ATOL,
    INPUT_CONTRACT,
    RTOL,
    ExportMismatch,
    check_round_trip,
    export_onnx,
    require_onnx,
)
from kd_core.publish.latency import latency_rows


def export_with_card(model: nn.Module, meta: Mapping, out: str | Path, *, summary: Mapping | None = None,
                     threads: int = 1) -> dict:
    """Write `out` (.onnx) and `out` with `.md`; return what was written and measured (JSON-ready).

    `summary`: the run's results for the card (see kd_core.publish.card); default: the checkpoint's own
    accuracy and its teacher's, read from the teacher checkpoint when it is on disk.
    """
    require_onnx()
    start = time.perf_counter()
    path = export_onnx(model, meta, out)
    check = check_round_trip(path, model, meta, dataset_of(meta).test_images)
    if not check.within_tolerance:
        path.unlink(missing_ok=True)
        raise ExportMismatch(f"the ONNX model's logits differ from PyTorch's by up to "
                             f"{check.max_abs_diff:.3g} (tolerance {ATOL:g} + {RTOL:g}·|logit|); "
                             "nothing was written")
    export_seconds = time.perf_counter() - start
    rows = latency_rows({ROLE_NAMES[role_of(meta)]: (model, meta)}, threads=threads)
    facts = summary if summary is not None else teacher_facts(meta)
    card = write_card(path, model_card(meta, facts, onnx_file=path.name, latency=rows))
    return {"onnx": str(path), "card": str(card), "onnx_bytes": path.stat().st_size, "input": INPUT_CONTRACT,
            **check.summary(), "latency": rows[0], "export_seconds": export_seconds}
