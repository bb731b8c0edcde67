"""The live run's views: chart data made once per view and shared by every viewer."""

from __future__ import annotations

import threading
import time

from kd_core.engine.loop import StackStep
from kd_core.views import plots
from kd_core.views.run_view import LossCurves


def made_in_threads(make, threads: int = 8, seconds: float = 10.0) -> list:
    """make() called from several threads at once; every answer (a thread still waiting after `seconds` is a
    deadlock: the test fails instead of hanging)."""
    answers, go = [], threading.Barrier(threads)

    def call() -> None:
        go.wait()
        answers.append(make())

    workers = [threading.Thread(target=call, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    assert not any(worker.is_alive() for worker in workers), "a viewer never got the chart's data"
    return answers


def test_the_loss_rows_are_made_once_per_view_whoever_asks():
    steps = (StackStep(1, 1, 4, ((2.0, 3.5), (3.0, 2.5)), 0.1), StackStep(1, 3, 4, ((1.5, 2.0), (1.5, 2.0)), 0.2))
    curves = LossCurves(steps)
    answers = made_in_threads(curves.split)
    assert all(answer is answers[0] for answer in answers)  # one object, shared
    split = answers[0]
    assert split["columns"] == ["step", "loss", "student"] and split["datatypes"]["student"] == "nominal"
    rows = [row for row in split["data"] if row[1] is not None]  # after the legend's placeholder rows
    assert rows == [[1, 2.5, "CE"], [1, 3.0, "KD"], [3, 1.5, "CE"], [3, 2.0, "KD"]]
    assert len(split["data"]) == len(rows) + len(plots.LOSS_COLOURS)
