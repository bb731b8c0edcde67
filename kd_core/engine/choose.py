"""T and α chosen on the run's own validation split, before the run: for data nobody tuned the defaults for.

The defaults (T = 4, α = 0.9) were chosen on Fashion-MNIST's validation split. On a user's data the CLI (`--T auto
--alpha auto`, the default with `--data`) and the app's Your data tab first train a small grid as one stack over the
run's seeds (`kd_core.engine.sweep`: CE plus one Hinton-KD student per (T, α), every seed's students sharing their
initial weights and batches), and pick the cell with the largest mean paired gain over CE on the validation split.
The run then trains its CE and KD students with the chosen values and reports the test set once. Nothing here reads
a test image: the grid is trained with `test=False`, or, when a stack pool trains it, its test figures are not read.

The grid: T ∈ {1, 2, 4} and α ∈ {0.1, 0.5, 0.9}. α = 0.1 is nearly plain CE, so when the teacher has little to give
the choice can fall back towards the CE student; 0.9 is the setting the defaults use. T = 8 never won on the sets
measured for issue 33 (T ∈ {1, 2, 4, 8}: −0.4 to −4.8 points, the best at low T), and each cell is a student per
seed: nine KD students and CE, about five times the students of one run, trained in one stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence

from kd_core.engine.events import StackEvent, StackFinished, StackResult
from kd_core.engine.loop import train_stack
from kd_core.engine.stats import mean_std
from kd_core.engine.sweep import sweep
from kd_core.run import Run

TEMPERATURES = (1.0, 2.0, 4.0)
ALPHAS = (0.1, 0.5, 0.9)


def grid(temperature: float | None, alpha: float | None) -> tuple[list[float], list[float]] | None:
    """The grid for a run whose T or α (or both) is "auto" (None); a number keeps its value (a one-value axis).
    None when both are numbers: nothing to choose."""
    if temperature is not None and alpha is not None:
        return None
    return ([float(temperature)] if temperature is not None else list(TEMPERATURES),
            [float(alpha)] if alpha is not None else list(ALPHAS))


def choice(stack: StackResult, temperatures: Sequence[float], alphas: Sequence[float]) -> dict:
    """The chosen cell of a finished grid stack (role 0 CE, then the cells row-major over T × α), read from the
    validation split alone: {"T", "alpha", "grid": [{"T", "alpha", "val_kd_minus_ce"}]}, `val_kd_minus_ce` the
    mean over seeds of the paired difference of validation accuracy. Ties go to the first cell: the lowest T,
    then the lowest α (the one nearest CE)."""
    cells = [(float(t), float(a)) for t in temperatures for a in alphas]
    rows = [{"T": t, "alpha": a, "val_kd_minus_ce": mean_std([seed[1 + i] - seed[0] for seed in stack.val_acc])[0]}
            for i, (t, a) in enumerate(cells)]
    best = max(range(len(rows)), key=lambda i: rows[i]["val_kd_minus_ce"])
    return {"T": rows[best]["T"], "alpha": rows[best]["alpha"], "grid": rows, "chosen_on": "validation"}


def choosing(run: Run, temperatures: Sequence[float], alphas: Sequence[float],
             train: Callable[..., Iterator[StackEvent]] | None = None) -> Iterator[StackEvent]:
    """The grid's stack as the engine's events (its StackFinished's result goes to `choice`). `train(run, roles)`
    is the app's stack pool; by default the engine itself, with no test image read."""
    return sweep(run, list(temperatures), list(alphas), train=train or functools.partial(train_stack, test=False))


def choose(run: Run, temperatures: Sequence[float], alphas: Sequence[float],
           on_event: Callable[[StackEvent], None] = lambda event: None) -> dict:
    """Train the grid to the end (each event to `on_event`) and return `choice`, with the seconds it trained."""
    for event in choosing(run, temperatures, alphas):
        on_event(event)
        if isinstance(event, StackFinished):
            return {**choice(event.result, temperatures, alphas), "seconds": event.result.seconds}
    raise RuntimeError("the grid ended without a StackFinished event")
