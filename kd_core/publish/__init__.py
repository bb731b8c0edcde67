"""Taking a student home: ONNX export with its normalisation built in (`export`), CPU latency (`latency`), the
model card (`card`), the export with its card and checks (`deploy`), Hub push (`hub`), and the KD student in the
visitor's browser (`browser_student`, with the vendored onnxruntime-web in `web/`, `web_runtime`).
"""

from kd_core.publish.card import model_card, write_card
from kd_core.publish.export import ExportUnavailable, export_onnx

__all__ = [
    "ExportUnavailable",
    "export_onnx",
    "model_card",
    "write_card",
]
