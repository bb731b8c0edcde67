"""A visitor joined to a shared run (kd_core.serve.shared_runs): the views that one subscriber is sent.

`join_run` / `join_sweep` key a run by the resolved run (its config and the teacher file's hash), give every
subscriber its own copy of what it could change (students, run directory, CSV, checkpoint) and say in the status
line when the results are shared; a visitor's Train tab is sent the newest view at a bounded rate (`view_interval`).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Hashable, Iterator

from kd_core.config import RunConfig
from kd_core.engine.events import Queued
from kd_core.run import Run, resolve_run
from kd_core.serve.shared_runs import NOTHING, OWN, REPLAY, SHARED, SharedRuns
from kd_core.serve.stack_pool import queued_status
from kd_core.views import plots, run_view, sweep

# a visitor's Train tab gets at most one update per VIEW_INTERVAL_S, or per VIEW_INTERVAL_S × viewers / VIEWERS_AT_BASE
# when more watch (30 viewers: one every 1.9 s), after the first curve, which goes at once: each update costs
# the server about 10 ms per viewer (Gradio's diff, JSON, the event stream), and 30 viewers at 4 updates a
# second kept 2 cores busier than the training (bench/RESULTS.md, classroom)
VIEW_INTERVAL_S = 0.25
VIEWERS_AT_BASE = 4
NOTICES = {  # appended to the status line of a run that is not the visitor's own
    OWN: "",
    SHARED: " · same settings as a run already in progress: sharing its results (change the seed for "
            "your own run)",
    REPLAY: " · same settings as a run that just finished: replaying its results (change the seed for "
            "your own run)",
}


def distill_key(run: Run) -> Hashable:
    return ("distill", *run.key)  # the config and the teacher file's hash, read once when the run was resolved


def sweep_key(run: Run, temperatures: list[float], alphas: list[float]) -> Hashable:
    return ("sweep", *run.key, tuple(temperatures), tuple(alphas))


def join_run(runs: SharedRuns, run: Run | RunConfig, start: Callable[[Run], Iterator] = run_view.live_run,
             key: Hashable | None = None) -> Iterator[run_view.RunView]:
    """`run_view.live_run(cfg)` shared with identical requests: every view this visitor's own to keep.

    `start(cfg)` makes the run's generator of RunViews (the app passes `run_view.live_run` training through its
    stack pool); `key` defaults to `distill_key(cfg)`.
    """
    asked = time.perf_counter()
    run = resolve_run(run) if isinstance(run, RunConfig) else run  # (scripts, tests: where the request enters)
    cfg = run.config
    sub = runs.subscribe(distill_key(run) if key is None else key, lambda: start(run))
    empty = run_view.RunLog(cfg)
    pending, last = None, -math.inf  # the newest view not yet sent (views are cumulative: the newest says all)
    with _viewers_lock:
        _viewers[0] += 1
    try:
        while True:
            wait = math.inf if pending is None else max(0.0, last + view_interval() - time.monotonic())
            try:
                item = sub.next_within(wait) if wait < math.inf else next(sub)
            except StopIteration:
                break
            if item is not NOTHING:
                elapsed = time.perf_counter() - asked
                if isinstance(item, Queued):
                    view = run_view.RunView(queued_status(item) + NOTICES[sub.how], 0.0, elapsed, empty.losses(),
                                            None, 0, cfg.epochs)
                else:  # frames and tables are only read, never changed: shared as they are; files and students not
                    view = dataclasses.replace(item, status=item.status + NOTICES[sub.how], elapsed_s=elapsed)
                    view = view if view.students is None else run_view.own_copy(view)
                pending = newest(pending, view)
                if view.students is None and time.monotonic() - last < view_interval():
                    continue  # (the last view, with the results, always goes at once)
            yield pending
            if pending.losses.steps:  # the first curve goes at once; the throttle starts after it
                last = time.monotonic()
            pending = None
        if pending is not None:
            yield pending
    finally:
        with _viewers_lock:
            _viewers[0] -= 1
        sub.close()


_viewers_lock = threading.Lock()
_viewers = [0]  # Train-tab visitors watching a run now


def view_interval() -> float:
    return VIEW_INTERVAL_S * max(1.0, _viewers[0] / VIEWERS_AT_BASE)


def newest(older: run_view.RunView | None, view: run_view.RunView) -> run_view.RunView:
    """`view`, keeping the accuracy chart of an older unsent view when `view` leaves it unchanged (None)."""
    if older is None or view.accuracies is not None or older.accuracies is None:
        return view
    return dataclasses.replace(view, accuracies=older.accuracies)


def join_sweep(runs: SharedRuns, run: Run | RunConfig, temperatures: list[float], alphas: list[float],
               start: Callable[..., Iterator] = sweep.live_sweep) -> Iterator[sweep.SweepView]:
    """`sweep.live_sweep` shared with identical requests; every visitor is sent the one heatmap the run drew."""
    run = resolve_run(run) if isinstance(run, RunConfig) else run
    sub = runs.subscribe(sweep_key(run, temperatures, alphas), lambda: start(run, temperatures, alphas))
    empty = plots.sweep_frame(temperatures, alphas, [math.nan] * (len(temperatures) * len(alphas)))
    try:
        for item in sub:
            if isinstance(item, Queued):
                yield sweep.SweepView(queued_status(item) + NOTICES[sub.how], None, empty, False)
            else:
                yield dataclasses.replace(item, status=item.status + NOTICES[sub.how])
    finally:
        sub.close()
