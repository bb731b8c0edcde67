"""Inference latency on CPU where a student would run: PyTorch beside ONNX Runtime, batch 1 and batch 256.

Each model is timed as it would be deployed: uint8 images in, logits out, normalisation included (the
`export.Normalised` wrapper in PyTorch, the exported graph in ONNX Runtime), on `threads` CPU threads
(default 1: a fair, repeatable unit on a shared machine). Method: a few warm-up calls; then, per round,
each runtime makes a block of calls lasting about `BLOCK_S`, the two runtimes taking turns so that load
from other processes falls on both alike; the figure is the fastest round's time per call (the lower bound
`timeit` advises: slower rounds measure the other processes). On a shared machine compare rows measured
together, not runs: with a load average of 11 on 2 cores here, both the minimum and the median of 15 rounds
moved by up to 2x between three back-to-back runs.
Batch 256 is reported per image. `latency_rows` returns plain dicts (JSON-ready); `latency_table` makes
the display DataFrame and `speedup_words` the teacher-to-student comparison in one plain sentence.
Needs the ONNX packages of requirements.txt (see kd_core.publish.export).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from kd_core.models.zoo import describe
from kd_core.publish.export import INPUT_NAME, OUTPUT_NAME, normalised, onnx_session, to_onnx

BATCH_SIZES = (1, 256)
ROUNDS = 7  # interleaved rounds per runtime and batch size; the fastest is reported
BLOCK_S = 0.05  # seconds of calls per runtime per round (at least one call)
WARMUP_CALLS = 3


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run PyTorch on `threads` intra-op threads inside the block; restore the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def best_ms_per_call(calls: Mapping[str, Callable[[], object]], rounds: int = ROUNDS) -> dict[str, float]:
    """Milliseconds per call of each callable in its fastest round of interleaved blocks (see above)."""
    block = {}
    for name, call in calls.items():
        start = time.perf_counter()
        for _ in range(WARMUP_CALLS):
            call()
        per_call = (time.perf_counter() - start) / WARMUP_CALLS
        block[name] = max(1, math.ceil(BLOCK_S / max(per_call, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(block[name]):
                call()
            samples[name].append((time.perf_counter() - start) / block[name] * 1e3)
    return {name: min(times) for name, times in samples.items()}


def measure(model: nn.Module, meta: Mapping, *, threads: int = 1,
            batch_sizes: tuple[int, ...] = BATCH_SIZES, rounds: int = ROUNDS) -> dict:
    """{"torch_ms": {batch: ms per call}, "onnx_ms": {…}, "onnx_bytes": size of the exported model}."""
    wrapped = normalised(model, meta)
    serialised = to_onnx(model, meta).SerializeToString()
    session = onnx_session(serialised, threads)
    generator = torch.Generator().manual_seed(0)
    result = {"torch_ms": {}, "onnx_ms": {}, "onnx_bytes": len(serialised)}
    with torch_threads(threads), torch.inference_mode():
        for batch in batch_sizes:
            images = torch.randint(0, 256, (batch, *meta["in_shape"]), dtype=torch.uint8,
                                   generator=generator)
            feed = {INPUT_NAME: images.numpy()}
            times = best_ms_per_call({"torch": lambda x=images: wrapped(x),
                                        "onnx": lambda f=feed: session.run([OUTPUT_NAME], f)}, rounds)
            result["torch_ms"][batch], result["onnx_ms"][batch] = times["torch"], times["onnx"]
    return result


def latency_rows(models: Mapping[str, tuple[nn.Module, Mapping]], *, threads: int = 1,
                 rounds: int = ROUNDS) -> list[dict]:
    """One row per model (label -> (model, metadata with in_shape, mean, std)), batch 1 and batch 256.

    Keys: model, arch, params, weights_mb (fp32 parameters and buffers), onnx_mb, torch_ms_b1, onnx_ms_b1,
    torch_ms_per_image_b256, onnx_ms_per_image_b256, threads.
    """
    rows = []
    for label, (model, meta) in models.items():
        timed = measure(model, meta, threads=threads, rounds=rounds)
        sizes = describe(model)
        rows.append({
            "model": label, "arch": meta.get("arch", ""), "params": sizes["params"],
            "weights_mb": sizes["bytes"] / 1e6, "onnx_mb": timed["onnx_bytes"] / 1e6,
            "torch_ms_b1": timed["torch_ms"][1], "onnx_ms_b1": timed["onnx_ms"][1],
            "torch_ms_per_image_b256": timed["torch_ms"][256] / 256,
            "onnx_ms_per_image_b256": timed["onnx_ms"][256] / 256, "threads": threads})
    return rows


DISPLAY_COLUMNS = {
    "model": "model", "params": "params", "weights_mb": "weights MB", "onnx_mb": "ONNX MB",
    "torch_ms_b1": "PyTorch ms (batch 1)", "onnx_ms_b1": "ONNX Runtime ms (batch 1)",
    "torch_ms_per_image_b256": "PyTorch ms/img (batch 256)",
    "onnx_ms_per_image_b256": "ONNX Runtime ms/img (batch 256)",
}


def latency_table(rows: list[dict]):
    """The rows as a display DataFrame (readable headers, rounded) for the app's results table."""
    import pandas as pd

    table = pd.DataFrame(rows)[list(DISPLAY_COLUMNS)].rename(columns=DISPLAY_COLUMNS)
    timings = {name: 4 for key, name in DISPLAY_COLUMNS.items() if "_ms" in key}
    return table.round({"weights MB": 2, "ONNX MB": 2, **timings})


def speedup_words(rows: list[dict], teacher: str = "teacher", student: str = "KD student") -> str:
    """One plain sentence: how much faster (ONNX Runtime, batch 1 and 256) and smaller the student is."""
    by_label = {row["model"]: row for row in rows}
    t, s = by_label[teacher], by_label[student]
    threads = s["threads"]
    return (
        f"On {threads} CPU thread{'s' if threads != 1 else ''} with ONNX Runtime, the {student} answers one "
        f"image in {s['onnx_ms_b1']:.3g} ms against the {teacher}'s {t['onnx_ms_b1']:.3g} ms "
        f"({_times(t['onnx_ms_b1'], s['onnx_ms_b1'], 'faster', 'slower')}), and in a batch of 256 takes "
        f"{s['onnx_ms_per_image_b256']:.3g} ms per image against {t['onnx_ms_per_image_b256']:.3g} ms "
        f"({_times(t['onnx_ms_per_image_b256'], s['onnx_ms_per_image_b256'], 'faster', 'slower')}). "
        f"It has {_times(t['params'], s['params'], 'fewer', 'more')} parameters ({s['params']:,} vs "
        f"{t['params']:,}), and its weights take {s['weights_mb']:.2f} MB against {t['weights_mb']:.2f} MB.")


def _times(teacher: float, student: float, better: str, worse: str) -> str:
    """'4.2× faster' when the student's figure is the smaller, '1.3× slower' when it is the larger."""
    if teacher <= 0 or student <= 0:
        return "not comparable"
    ratio, word = (teacher / student, better) if student <= teacher else (student / teacher, worse)
    return f"{ratio:.1f}× {word}" if ratio < 10 else f"{ratio:.0f}× {word}"
