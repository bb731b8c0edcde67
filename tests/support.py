"""What several test modules share: a free loopback port for a launched page, a run ended as the app ends one,
a student's own top-k."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on (an explicit one: Gradio's own search leaks a socket per busy port it tries)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, seconds: float = 60.0, every: float = 0.02) -> bool:
    """Whether `condition()` became true within `seconds` (checked every `every` seconds)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def finished_session(cfg):
    """cfg's run ended as the app ends one (`run_view.finished_view`): (its RunResult, the session's students)."""
    from kd_core.engine.loop import StackFinished
    from kd_core.engine.train import distill, run_result
    from kd_core.views import run_view

    log = run_view.RunLog(cfg)
    for event in distill(cfg):
        if isinstance(event, StackFinished):
            result = run_result(event.result)
            return result, run_view.finished_view(result, log, 0.0).students
        log.add(event)
    raise RuntimeError("distill ended without a StackFinished event")


def own_top_k(model, dataset, image, k: int = 3, logit_bias: tuple[int, float] | None = None) -> dict[str, float]:
    """A student module's top-k {class: probability} on one uint8 [C, H, W] image of `dataset`, computed from the
    module alone (the dataset's own normalisation; `logit_bias`: (class, b) added to that class's logit)."""
    import torch

    with torch.no_grad():
        logits = model.eval()(dataset.normalize(image[None]))[0]
    if logit_bias is not None:
        logits[logit_bias[0]] += logit_bias[1]
    values, indices = torch.softmax(logits, 0).topk(k)
    return {dataset.classes[i]: p for p, i in zip(values.tolist(), indices.tolist(), strict=True)}
