"""Identical requests share one run: a registry of runs in flight and just finished, keyed by configuration.

A classroom presses Start at once with the same settings; the runs are deterministic, so one run serves
them all. `SharedRuns.subscribe(key, start)` returns a `Subscription`, an iterator over every item of the
run for `key`: the first subscriber's `start()` makes the generator (say `run_view.live_run(cfg)`), later
ones join it and get its backlog, then the live items, and a request equal to one of the last
`keep_finished` finished runs replays its recorded items. Each run's generator is driven by a thread of
its own. One subscriber leaving does not stop the run; when the last one leaves, the thread closes the
generator at its next item (as a Gradio cancel closes a lone run's). At most `max_running` runs train at once;
the others wait in arrival order, and their subscribers receive a `Queued` item about once a second: how
many runs are ahead and an estimated wait taken from recent run times. (The app's Train tab lets every distinct
request through, `max_running` = its visitors, and its `kd_core.serve.stack_pool` trains compatible ones as one stack
with its own slots; the Sweep tab's runs take slots here.)

The second half applies it to the app: `join_run` / `join_sweep` key a run by its `RunConfig` and the
teacher checkpoint's file hash, give every subscriber its own copy of what it could change (students,
run directory, CSV, checkpoint, figures), and say in the status line when the results are shared.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import statistics
import tempfile
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

from kd_core.config import RunConfig
from kd_core.engine.events import Queued
from kd_core.run import Run, resolve_run
from kd_core.serve.stack_pool import queued_status, wait_estimate
from kd_core.views import plots, run_view, sweep

OWN, SHARED, REPLAY = "own", "shared", "replay"  # how a subscriber came to a run
NOTHING = object()  # what Subscription.next_within returns when no item came in time
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


# ------------------------------------------------------------------------------------ the registry

class _Run:
    """One run of an underlying generator, as its subscribers share it."""

    def __init__(self, key: Hashable, start: Callable[[], Iterator]) -> None:
        self.key = key
        self.start = start  # makes the generator, once the run has a training slot
        self.items: list = []  # everything the generator yielded, in order
        self.state = "pending"  # -> running -> finished | failed | stopped (its subscribers left)
        self.error: BaseException | None = None
        self.subscribers: set[Subscription] = set()  # of a pending or running run, until they close
        self.started_at = 0.0


class Subscription:
    """One visitor's view of a shared run: iterate it for the items; `close()` leaves the run."""

    def __init__(self, registry: SharedRuns, run: _Run, how: str) -> None:
        self.how = how  # OWN, SHARED or REPLAY
        self._registry, self._run = registry, run
        self.delivered = 0  # items of the run this subscriber has had
        self.closed = False
        self.last_read = time.monotonic()  # when it last asked for an item (or was waiting for one)
        self.last_queued = -math.inf  # when it was last told it waits

    def __iter__(self) -> Subscription:
        return self

    def __next__(self):
        return self._registry._next(self)

    def next_within(self, seconds: float):
        """The next item if one comes within `seconds`, else NOTHING (StopIteration at the run's end)."""
        return self._registry._next(self, time.monotonic() + seconds)

    def close(self) -> None:
        self._registry._leave(self)


class SharedRuns:
    """Runs in flight and recently finished, keyed by whatever hashable the caller computes.

    Each run has a thread of its own that drives its generator, so a run never waits for a slow or
    vanished reader. A subscriber that neither reads nor closes for `abandoned_s` (a generator Gradio
    dropped without closing) no longer keeps a run going.
    """

    def __init__(self, max_running: int = 1, keep_finished: int = 8, queued_every_s: float = 1.0,
                 recent: int = 20, abandoned_s: float = 30.0) -> None:
        if max_running < 1 or keep_finished < 0:
            raise ValueError("max_running must be at least 1 and keep_finished at least 0")
        self.max_running = max_running  # runs training at once; later ones wait, first come first served
        self.keep_finished = keep_finished  # finished runs kept for replay (with their students)
        self.queued_every_s = queued_every_s
        self.abandoned_s = abandoned_s
        self._changed = threading.Condition()  # guards everything below; notified on every change
        self._in_flight: dict[Hashable, _Run] = {}  # pending or running
        self._waiting: list[_Run] = []  # pending runs, in arrival order
        self._finished: OrderedDict[Hashable, _Run] = OrderedDict()  # least recently asked for first
        self._durations: deque[float] = deque(maxlen=recent)  # seconds from start to end of recent runs
        self._producing = 0  # runs whose thread has not ended: those that hold a training slot
        self.runs_started = 0  # generators made so far (for tests and benchmarks)

    def subscribe(self, key: Hashable, start: Callable[[], Iterator]) -> Subscription:
        """Join the run for `key`: a finished one's replay, the one in flight, or a new one from `start()`."""
        with self._changed:
            if key in self._finished:
                self._finished.move_to_end(key)
                return Subscription(self, self._finished[key], REPLAY)
            run, how = self._in_flight.get(key), SHARED
            if run is None:
                run, how = _Run(key, start), OWN
                self._in_flight[key] = run
                self._waiting.append(run)
            sub = Subscription(self, run, how)
            run.subscribers.add(sub)
            self._start_waiting()
            return sub

    def running(self) -> int:
        """Runs holding a training slot (one that is stopping holds it until its generator is closed)."""
        with self._changed:
            return self._producing

    def finished_keys(self) -> list[Hashable]:
        """Keys of the runs kept for replay, least recently asked for first."""
        with self._changed:
            return list(self._finished)

    def kept_items(self) -> list[list]:
        """The recorded items of the runs kept for replay (they hold the registry's own students)."""
        with self._changed:
            return [list(run.items) for run in self._finished.values()]

    def _next(self, sub: Subscription, deadline: float = math.inf):
        """The subscriber's next item, as soon as the run has it; a Queued notice while it waits; NOTHING if
        none came by `deadline` (time.monotonic())."""
        run = sub._run
        with self._changed:
            while True:
                sub.last_read = time.monotonic()
                if sub.closed:
                    raise StopIteration
                if sub.delivered < len(run.items):
                    sub.delivered += 1
                    return run.items[sub.delivered - 1]
                if run.state in ("finished", "stopped"):
                    raise StopIteration
                if run.state == "failed":
                    raise copy.copy(run.error).with_traceback(None)
                if run.state == "pending" and (notice := self._queued_notice(sub)) is not None:
                    return notice
                if time.monotonic() >= deadline:
                    return NOTHING
                self._changed.wait(min(self.queued_every_s / 4, max(0.0, deadline - time.monotonic())))

    def _start_waiting(self) -> None:
        """Start the earliest waiting runs while training slots are free (lock held)."""
        while self._waiting and self._producing < self.max_running:
            run = self._waiting.pop(0)
            run.state, run.started_at = "running", time.monotonic()
            self.runs_started += 1
            self._producing += 1
            threading.Thread(target=self._produce, args=(run,), name=f"shared-run-{self.runs_started}",
                             daemon=True).start()
        self._changed.notify_all()

    def _produce(self, run: _Run) -> None:
        """The run's thread: record every item of its generator; stop when nobody reads any more."""
        try:
            generator = run.start()
            for item in generator:
                with self._changed:
                    run.items.append(item)
                    self._changed.notify_all()
                    stop = run.state == "stopped" or not self._has_readers(run)
                if stop:
                    generator.close()
                    self._end(run, "stopped")
                    return
        except BaseException as error:  # noqa: BLE001 -- handed to every subscriber, who raise it
            run.error = error
            self._end(run, "failed")
            return
        self._end(run, "finished")

    def _has_readers(self, run: _Run) -> bool:
        now = time.monotonic()
        return any(now - sub.last_read < self.abandoned_s for sub in run.subscribers)

    def _end(self, run: _Run, state: str) -> None:
        with self._changed:
            if run.state == "stopped":  # its last subscriber left while the generator was busy
                state = "stopped"
            run.state = state
            run.subscribers.clear()
            self._producing -= 1
            if self._in_flight.get(run.key) is run:  # (a new run for the key may have begun meanwhile)
                del self._in_flight[run.key]
            if state == "finished":
                self._durations.append(time.monotonic() - run.started_at)
                self._finished[run.key] = run
                while len(self._finished) > self.keep_finished:
                    self._finished.popitem(last=False)
            self._start_waiting()  # a slot is free

    def _queued_notice(self, sub: Subscription) -> Queued | None:
        """A Queued item if this subscriber has not been told for `queued_every_s` (lock held)."""
        now = time.monotonic()
        if now - sub.last_queued < self.queued_every_s:
            return None
        sub.last_queued = now
        ahead = self._waiting.index(sub._run)
        running = [run for run in self._in_flight.values() if run.state == "running"]
        mean = statistics.fmean(self._durations) if self._durations else None
        estimate = self._estimate(ahead, running, mean)
        return Queued(ahead, self._producing, estimate, len(self._durations), mean)

    def _estimate(self, ahead: int, running: list[_Run], mean: float | None) -> float | None:
        """Seconds until a run with `ahead` runs before it starts, if every run takes `mean` seconds."""
        return wait_estimate(ahead, [run.started_at for run in running], mean, self.max_running)

    def _leave(self, sub: Subscription) -> None:
        """Unsubscribe; when a run's last subscriber leaves, it stops (at its generator's next item)."""
        run = sub._run
        with self._changed:
            if sub.closed:
                return
            sub.closed = True
            run.subscribers.discard(sub)
            if run.subscribers or run.state not in ("pending", "running"):
                return
            if run.state == "pending":
                self._waiting.remove(run)
            run.state = "stopped"  # its thread closes the generator at its next item, then frees the slot
            del self._in_flight[run.key]
            self._start_waiting()  # (a pending run's slot: it never had one)


# ------------------------------------------------------------------------------------ the app's runs

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
                view = (run_view.RunView(queued_status(item) + NOTICES[sub.how], 0.0, elapsed, empty.losses(), None,
                                         0, cfg.epochs)
                        if isinstance(item, Queued) else own_view(item, sub.how, elapsed))
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


def own_view(view: run_view.RunView, how: str, elapsed_s: float) -> run_view.RunView:
    """`view` for one subscriber: its own elapsed time and notice; at the end its own students and files."""
    view = dataclasses.replace(view, status=view.status + NOTICES[how], elapsed_s=elapsed_s)
    if view.students is None:
        return view  # frames and tables are only read, never changed: shared as they are
    run_dir = Path(tempfile.mkdtemp(prefix="kd-run-"))
    for path in view.students.run_dir.iterdir():  # the CSV, the checkpoint, its model card
        shutil.copy2(path, run_dir / path.name)
    log_csv, kd_checkpoint = (None if path is None else run_dir / path.name
                              for path in (view.log_csv, view.kd_checkpoint))
    # copied together, so that `kd` stays one of `methods` in the copy
    ce, kd, methods = copy.deepcopy((view.students.ce, view.students.kd, view.students.methods))
    students = dataclasses.replace(view.students, ce=ce, kd=kd, methods=methods, run_dir=run_dir)
    weakref.finalize(students, shutil.rmtree, run_dir, ignore_errors=True)  # as run_view.finished_view
    return dataclasses.replace(view, log_csv=log_csv, kd_checkpoint=kd_checkpoint, students=students)


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
