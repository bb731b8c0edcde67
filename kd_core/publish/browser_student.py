"""The KD student in the visitor's browser: what the Predict tab sends the page, and the script that runs it.

For a picture, the server prepares the model input exactly as for its own predictions (kd_core.models.predict, uint8
`[C, H, W]`), exports the KD student to ONNX once per student (kd_core.publish.export: normalisation inside, uint8 in,
logits out) into a folder the app serves, and answers with ONNX Runtime in Python on the same input. The page's
script (`browser_student.js`, `script()`) imports the vendored onnxruntime-web bundle (kd_core.publish.web_runtime),
inflates the gzipped WebAssembly with `DecompressionStream`, runs one wasm thread (no cross-origin isolation
needed), creates a session from the student's ONNX file, classifies the same input, and times `RUNS` runs.
Every file comes from the app's own origin.

`panel_data` is the payload, `panel_html` wraps it in the panel's HTML (a `data-kd` attribute the script reads).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import threading
import weakref
from pathlib import Path

import torch
from torch import nn

from kd_core.models import predict, zoo
from kd_core.models.checkpoints import atomic_write
from kd_core.publish import web_runtime
from kd_core.publish.export import INPUT_NAME, onnx_logits, onnx_session, to_onnx

RUNS = 100  # timed runs per picture in the browser; the mean is the ms per image shown
# a visitor's page downloads the whole ONNX file and runs it RUNS times on one wasm thread: a ResNet-18 (45 MB) is
# about the largest worth the wait; a bigger (pretrained) student is refused in one line, never half-loaded
BROWSER_MAX_BYTES = 50_000_000
MODEL_FOLDER = "kd-browser-models"  # inside the app's served cache folder
SCRIPT_FILE = Path(__file__).with_name("browser_student.js")

_exports: weakref.WeakKeyDictionary[nn.Module, tuple[Path, object]] = weakref.WeakKeyDictionary()
_export_lock = threading.Lock()  # one export per student, however many requests ask at once


def script() -> str:
    """The JavaScript function (Gradio's `js=`) that runs the student in the page, from the panel's HTML."""
    lines = SCRIPT_FILE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("//"))  # the opening comment: not an expression


def student_onnx(classifier: predict.Classifier, folder: Path) -> tuple[Path, object]:
    """(the student's .onnx in `folder`, named by its content, and an ONNX Runtime session on it); exported once
    per student module while the file lasts (the app's cache is cleaned hourly). ValueError for a student over
    BROWSER_MAX_BYTES."""
    size = zoo.describe(classifier.model)["bytes"]
    if size > BROWSER_MAX_BYTES:
        raise ValueError(f"this KD student is too large to run in your browser ({size / 1e6:,.0f} MB of weights, "
                         f"at most {BROWSER_MAX_BYTES / 1e6:,.0f} MB); the server's prediction is its answer")
    with _export_lock:
        known = _exports.get(classifier.model)
        if known is not None and known[0].is_file():
            return known
        data = to_onnx(classifier.model, {**classifier.meta, "mean": list(classifier.mean),
                                          "std": list(classifier.std), "in_shape": list(classifier.in_shape)}
                       ).SerializeToString()
        path = atomic_write(Path(folder) / f"{hashlib.sha256(data).hexdigest()[:32]}.onnx",
                            lambda tmp: Path(tmp).write_bytes(data))
        _exports[classifier.model] = (path, onnx_session(data))
        return _exports[classifier.model]


def server_logits(session, pixels: torch.Tensor, logit_bias: tuple[int, float] | None) -> list[float]:
    """ONNX Runtime's logits (in Python, on the server) for one uint8 [C, H, W] input, with the Predict tab's
    hidden-class bias when one is set."""
    logits = onnx_logits(session, pixels.unsqueeze(0))[0]
    if logit_bias is not None:
        logits[logit_bias[0]] += logit_bias[1]
    return [float(v) for v in logits]


def panel_data(classifier: predict.Classifier, pixels: torch.Tensor, folder: Path) -> dict:
    """What the page needs: file paths (served by the app), the input, the classes, and the server's answer."""
    path, session = student_onnx(classifier, folder)
    logits = server_logits(session, pixels, classifier.logit_bias)
    best = max(range(len(logits)), key=logits.__getitem__)
    return {"model": str(path), "model_bytes": path.stat().st_size,
            "bundle": str(web_runtime.ASSETS / web_runtime.BUNDLE), "wasm": str(web_runtime.ASSETS / web_runtime.WASM),
            "input_name": INPUT_NAME, "input": base64.b64encode(pixels.contiguous().numpy().tobytes()).decode(),
            "shape": [1, *pixels.shape], "classes": list(classifier.classes), "runs": RUNS,
            "bias": list(classifier.logit_bias) if classifier.logit_bias else None,
            "server_logits": logits, "server_class": classifier.classes[best], "student": classifier.name}


def panel_html(data: dict) -> str:
    """The panel: a line for people, the payload for the script."""
    return (f'<div class="kd-browser" data-kd="{html.escape(json.dumps(data), quote=True)}">The server\'s answer '
            f'(ONNX Runtime in Python, the same {data["model_bytes"] / 1e3:.0f} kB ONNX file of the '
            f'{html.escape(data["student"])}, the same {data["shape"][2]}×{data["shape"][3]} input): '
            f'<b>{html.escape(data["server_class"])}</b>. Your browser\'s answer:</div>')
