"""The Sweep tab's view: the engine's events of a T × α sweep (kd_core.engine.sweep) -> one `SweepView` each, the
heatmap at the end, drawn once in the run's own thread so that every viewer of a shared sweep gets the same image."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from kd_core.config import RunConfig
from kd_core.engine.events import Queued, StackEvaluated, StackFinished, StackStarted, StackStep
from kd_core.engine.loop import train_stack
from kd_core.engine.stats import mean_std
from kd_core.engine.sweep import role_means, sweep, sweep_result
from kd_core.run import Run, resolve_run
from kd_core.serve.stack_pool import queued_status
from kd_core.views import plots


@dataclass(frozen=True, eq=False)
class SweepView:
    """What the Sweep tab shows after one sweep event."""
    status: str
    heatmap: str | None  # at the end, the heatmap drawn once as a data URL (all viewers share it); None = none yet
    frame: pd.DataFrame  # T, alpha, accuracy (%); accuracy missing until an epoch has been evaluated
    done: bool


def _points(interval: list[float] | None, end: int) -> float:
    return math.nan if interval is None else round(100 * interval[end], 2)


def finished_sweep_view(result, temperatures: list[float], alphas: list[float]) -> SweepView:
    """The heatmap of test accuracy coloured by the gain beyond seed noise, and the best cell chosen on the
    validation split."""
    grid = result.grid
    frame = plots.sweep_frame(temperatures, alphas, result.kd_acc).assign(
        gain=[round(100 * g["kd_minus_ce"]["mean"], 2) for g in grid],
        gain_low=[_points(g["kd_minus_ce"]["ci95"], 0) for g in grid],  # its 95 % interval (NaN: one seed)
        gain_high=[_points(g["kd_minus_ce"]["ci95"], 1) for g in grid],
        wins=[g["kd_wins"] for g in grid], beyond_noise=[g["beyond_noise"] for g in grid],
        seeds=len(result.stack.seeds))
    ce_mean, ce_std = mean_std(result.accuracies(0))
    T, alpha = result.best()
    beyond = sum(g["beyond_noise"] and g["kd_minus_ce"]["mean"] > 0 for g in grid)
    status = (f"done in {result.seconds:.1f} s ({result.epochs} epoch(s), {len(result.stack.seeds)} seeds): best "
              f"on validation T={T:g}, α={alpha:g}; {beyond} of {len(grid)} cells beat CE "
              f"({100 * ce_mean:.1f} ± {100 * ce_std:.1f}% test) beyond seed noise")
    # drawn once here, in the run's own thread: every viewer of a shared or replayed sweep gets the same image
    heatmap = plots.figure_data_url(plots.sweep_heatmap(frame, ce_mean, ce_std=ce_std))
    return SweepView(status, heatmap, frame, True)


def live_sweep(run: Run | RunConfig, temperatures: list[float], alphas: list[float],
               train: Callable[..., Iterator] = train_stack) -> Iterator[SweepView]:
    """Train the T × α grid (`train`: the engine, or the app's stack pool); a SweepView per event, the heatmap at
    the end."""
    run = resolve_run(run) if isinstance(run, RunConfig) else run  # (scripts: where the request enters)
    cfg = run.config
    # every (T, α) cell from the first update on, accuracy missing: the line charts fix their colour
    # legend on their first frame (see plots.with_every_series), so each line must be named already
    empty = plots.sweep_frame(temperatures, alphas, [math.nan] * (len(temperatures) * len(alphas)))
    events = sweep(run, temperatures, alphas, train=train)
    try:
        yield SweepView("loading the data and the teacher's logits…", None, empty, False)
        total = 1
        for event in events:
            if isinstance(event, Queued):  # waiting for a training slot in the app's pool
                yield SweepView(queued_status(event), None, empty, False)
            elif isinstance(event, StackStarted):
                total = event.total_steps
                yield SweepView(f"{len(event.roles) - 1} KD students + the CE baseline, trained together on "
                                f"{event.device}: {total:,} steps", None, empty, False)
            elif isinstance(event, StackStep):
                yield SweepView(f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{total:,} · "
                                f"{event.elapsed_s:.1f} s", None, empty, False)
            elif isinstance(event, StackEvaluated):
                accuracy = role_means(event.accuracy)  # CE, then the cells
                frame = plots.sweep_frame(temperatures, alphas, accuracy[1:])
                status = (f"epoch {event.epoch}/{cfg.epochs}, validation subset: CE baseline "
                          f"{100 * accuracy[0]:.1f}%, best KD cell so far {frame['accuracy'].max():.1f}%")
                yield SweepView(status, None, frame, False)
            elif isinstance(event, StackFinished):
                yield finished_sweep_view(sweep_result(event.result, temperatures, alphas), temperatures, alphas)
    finally:
        events.close()

