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

A visitor's side of it (`join_run`, `join_sweep`: the views each subscriber is sent) is kd_core.views.joined.
"""

from __future__ import annotations

import copy
import math
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator

from kd_core.engine.events import Queued
from kd_core.serve.stack_pool import wait_estimate

OWN, SHARED, REPLAY = "own", "shared", "replay"  # how a subscriber came to a run
NOTHING = object()  # what Subscription.next_within returns when no item came in time


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
