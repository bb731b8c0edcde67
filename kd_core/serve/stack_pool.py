"""The one owner of training work: a bounded number of slots, and the queue of requests that wait for one.

Every heavy job of the app takes a slot here: a Train-tab stack, a sweep, a Your-data teacher's training and its
logits pass, a study stack the app starts. The safe bound is `SLOTS` (the app may pass another); no code of the
app trains in a thread of its own. A request waits in line, and its stream carries `Queued` (its place, the runs
training now and an estimated wait) about once a second until it starts.

Training requests (`events(run, roles)`) that differ only in what a stack varies per role or per seed (T, α, the
methods and their weights, the seeds) need not train apart: a request joins the pending requests of its kind
(`kd_core.serve.plan.stack_key`) or opens them. They start once no compatible request has joined for `window_s` (a
classroom's clicks reach the server over a second or so), or `max_window_s` after the first, when a slot is free;
`plan` then splits them into stacks, and each member gets the engine's events projected onto its own seeds and
roles. Other work (`job(work)`: a teacher's preparation) runs alone in its slot and reports through the same
stream. A member whose readers have all left gets nothing more, and the others train on; a stack or a job none of
whose members has a reader stops at its next event (a teacher's training at its next batch).
"""

from __future__ import annotations

import atexit
import copy
import heapq
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence

from kd_core.config import RunConfig
from kd_core.engine.events import Queued
from kd_core.engine.loop import train_stack
from kd_core.engine.roles import Role
from kd_core.run import Run, resolve_run
from kd_core.serve.plan import Member, Projection, Stack, plan, project, stack_key
from kd_core.teacher.training import Stopped

SLOTS = 4  # jobs training at once: the measured safe bound on a 2-core CPU Space (bench/RESULTS.md)
MAX_STACK_STUDENTS = 96  # seeds × roles in one pooled stack at most (`plan` balances them below this over the
# cores; with one stack of up to 160, 30 visitors with distinct T waited 53 s for their results, bench/RESULTS.md)
WINDOW_S = 0.5  # pending requests start once no compatible one has joined for this long,
MAX_WINDOW_S = 1.5  # or this long after the first
_POOLS: weakref.WeakSet = weakref.WeakSet()  # every pool, stopped at exit (StackPool.shutdown)


@atexit.register
def _shut_down_pools() -> None:
    for pool in list(_POOLS):
        pool.shutdown()


def queued_status(item: Queued) -> str:
    ahead = f"{item.runs_ahead} run{'s' if item.runs_ahead != 1 else ''} ahead of yours"
    status = f"waiting for a free training slot: {ahead}, {item.running} training now"
    if item.estimate_s is None:
        return status + " · no wait estimate until a run has finished"
    return (status + f" · estimated wait {item.estimate_s:.0f} s (from the last {item.recent_runs} "
                     f"run{'s' if item.recent_runs != 1 else ''}: {item.mean_run_s:.1f} s each on average)")


def wait_estimate(ahead: int, running_since: Sequence[float], mean: float | None, slots: int) -> float | None:
    """Seconds until a run with `ahead` runs before it starts, if every run takes `mean` seconds and the
    running ones started at `running_since` (time.monotonic())."""
    if mean is None:
        return None
    now = time.monotonic()
    free_at = [max(0.0, mean - (now - since)) for since in running_since]  # when each busy slot frees
    free_at += [0.0] * (slots - len(free_at))
    heapq.heapify(free_at)
    for _ in range(ahead):
        heapq.heapreplace(free_at, free_at[0] + mean)
    return free_at[0]


# ------------------------------------------------------------------------------------ the pool

class _Stream:
    """One request's events; `close()` leaves the stack, whether or not the stream was ever read."""

    def __init__(self, events: Iterator, leave: Callable[[], None]) -> None:
        self._events, self._leave, self._open = events, leave, True

    def __iter__(self) -> _Stream:
        return self

    def __next__(self):
        if not self._open:
            raise StopIteration
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            self._events.close()
            self._leave()

    def __del__(self) -> None:  # a stream dropped unclosed (a vanished reader) must not keep its stack going
        self.close()


class StackPool:
    """Pending and running work; `events(run, roles)` is one training request's stream, `job(work)` another job's.

    `train(run, roles, seeds=…)` is the engine (the app passes its GPU-decorated wrapper): one call per stack.
    """

    def __init__(self, train: Callable[..., Iterator] = train_stack, max_running: int = SLOTS,
                 window_s: float = WINDOW_S, max_students: int = MAX_STACK_STUDENTS,
                 queued_every_s: float = 1.0, recent: int = 20,
                 fits: Callable[[Run, int, int], bool] | None = None, parallel: int = 1,
                 max_window_s: float = MAX_WINDOW_S, warm: Callable[[Run], object] | None = None) -> None:
        """`fits(run, seeds, roles)`: whether a stack of that many seeds × roles stays within the machine's
        budget (the app: its run's kd_core.engine.budget.CpuBudget); `parallel`: how many stacks train at full
        speed side by side (the app: its CPU cores; 1 on a GPU, where one big stack is fastest); `warm(run)`:
        called with each request before it joins, outside the pool's lock, where the slow part of `fits` can be
        done and kept (the app: kd_core.engine.budget.BudgetCache), so that planning under the lock is
        arithmetic and every other request's events wait less."""
        if max_running < 1 or max_students < 1 or parallel < 1:
            raise ValueError("max_running, max_students and parallel must be at least 1")
        self.fits = fits or (lambda run, seeds, roles: True)
        self.warm = warm
        self.train, self.max_running, self.window_s = train, max_running, window_s
        self.max_window_s = max(window_s, max_window_s)
        self.max_students, self.queued_every_s, self.parallel = max_students, queued_every_s, parallel
        self._changed = threading.Condition()  # guards everything below
        self._pending: list[Stack] = []  # in the order they opened
        self._running: list[Stack] = []
        self._durations: list[float] = []
        self._recent = recent
        self._threads: set[threading.Thread] = set()
        self._closing = False
        self.stacks_started = 0  # (for tests and benchmarks)
        _POOLS.add(self)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop every stack at its next event, start no more, and wait up to `timeout_s` for their threads. At
        exit (atexit): a stack thread still inside torch when the interpreter finalises aborts the process
        ("terminate called without an active exception")."""
        with self._changed:
            self._closing = True
            for stack in self._pending:
                stack.state = "stopped"
            self._pending.clear()
            threads = list(self._threads)
            self._changed.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def events(self, run: Run | RunConfig, roles: Sequence[Role]) -> Iterator:
        """The run's own events (Queued while waiting, then StackStarted … StackFinished, projected). The request
        joins the pending ones now, at the call, not at the first `next`. A bare RunConfig (scripts, tests) is
        resolved here, the caller being where it enters; a teacher still to prepare is a `job` first."""
        if isinstance(run, RunConfig):
            run = resolve_run(run)
        if not run.prepared:
            raise ValueError("this run's teacher must be prepared first (StackPool.job with kd_core.run.prepare)")
        if self.warm is not None:
            self.warm(run)
        return self._enter(Member(run, tuple(roles)))

    def job(self, work: Callable[[Callable[[object], None], Callable[[], bool]], object]) -> Iterator:
        """A job that is not a stack (a teacher's preparation) in a slot of its own: `work(emit, should_stop)`
        emits its events and asks `should_stop()` at every batch (then raises `Stopped`); the stream is Queued
        while it waits, its events, then what `work` returned."""
        return self._enter(Member(None, (), work))

    def _enter(self, member: Member) -> Iterator:
        with self._changed:
            if self._closing:  # (at exit) nothing starts any more
                return _Stream((event for event in ()), lambda: None)
            self._join(member)
        return _Stream(self._deliver(member), lambda: self._leave(member))

    def _leave(self, member: Member) -> None:
        with self._changed:
            member.readers -= 1
            stack = member.stack
            if stack.state == "pending" and not stack.has_readers():
                self._pending.remove(stack)
                stack.state = "stopped"
            self._changed.notify_all()

    def _join(self, member: Member) -> None:
        work = member.work
        key = ("job", id(member)) if work is not None else stack_key(member.run)
        stack = next((s for s in self._pending if s.key == key), None)
        if stack is None:
            stack = Stack(key, None if work else member.run.replace(repeats=1), work=work)
            self._pending.append(stack)
        stack.add(member)
        member.stack = stack
        self._changed.notify_all()

    def _deliver(self, member: Member) -> Iterator:
        delivered, told = 0, -float("inf")
        while True:
            with self._changed:
                event, notice = self._wait_next(member, delivered, told)
            if notice is not None:
                told = time.monotonic()
                yield notice
            elif event is None:
                return  # the stack finished (or stopped)
            else:
                delivered += 1
                yield event if member.projection is None else project(event, member.projection)

    def _wait_next(self, member: Member, delivered: int, told: float):
        """(the next event, None), (None, a Queued notice) or (None, None) at the end (lock held)."""
        while True:
            self._start_ready()
            stack = member.stack  # planning may have moved the member into another stack
            if delivered < len(stack.events):
                return stack.events[delivered], None
            if stack.state == "failed":
                raise copy.copy(stack.error).with_traceback(None)
            if stack.state in ("finished", "stopped"):
                return None, None
            now = time.monotonic()
            if (stack.state == "pending" and stack.due(now, self.window_s, self.max_window_s)
                    and now - told >= self.queued_every_s):  # due, so waiting for a slot
                return None, self._queued(stack)
            self._changed.wait(self.window_s / 3 if stack.state == "pending" else 1.0)

    def _start_ready(self) -> None:
        """Plan and start due pending requests, oldest first, while slots are free (lock held). Planned stacks
        that find no free slot wait in their place, due, and are planned again (with any newcomers) later."""
        now, index, started = time.monotonic(), 0, False
        while index < len(self._pending) and len(self._running) < self.max_running and not self._closing:
            pending = self._pending[index]
            if not pending.due(now, self.window_s, self.max_window_s):
                index += 1
                continue
            free = self.max_running - len(self._running)
            # balanced over the cores, but no more ways than free slots (a plan's stacks beyond them would wait,
            # and be split again when planned anew)
            stacks = plan(pending, min(self.parallel, free), self.max_students, self.fits)
            self._pending[index:index + 1] = stacks[free:]  # (these stay due: they keep `opened`)
            for stack in stacks[:free]:
                self._start(stack)
            index, started = index + len(stacks[free:]), True
        if started:  # (only then: every waiter calls this, and a notice each time would wake them all in turn)
            self._changed.notify_all()

    def _start(self, stack: Stack) -> None:
        self._running.append(stack)
        stack.state, stack.started_at = "running", time.monotonic()
        for member in stack.members if stack.work is None else ():
            member.projection = Projection(
                member.cfg, member.roles, member.cfg.seeds, tuple(stack.seeds.index(s) for s in member.cfg.seeds),
                tuple(stack.roles.index(r) for r in member.roles), len(stack.roles))
        self.stacks_started += 1
        thread = threading.Thread(target=stack.members[0].context.run, args=(self._produce, stack),
                                  name=f"stack-{self.stacks_started}", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _produce(self, stack: Stack) -> None:
        """The stack's thread: record every engine event; stop when no member has a reader."""
        try:
            state = (self._train if stack.work is None else self._work)(stack)
        except BaseException as error:  # noqa: BLE001 -- handed to every member, who raise it
            stack.error, state = error, "failed"
        with self._changed:
            stack.state = state
            self._running.remove(stack)
            if state == "finished":
                self._durations = [*self._durations, time.monotonic() - stack.started_at][-self._recent:]
            self._threads.discard(threading.current_thread())
            self._start_ready()
            self._changed.notify_all()

    def _train(self, stack: Stack) -> str:
        """A stack's thread: every engine event recorded; "stopped" when no member has a reader any more."""
        generator = self.train(stack.run, tuple(stack.roles), seeds=tuple(stack.seeds))
        try:
            for event in generator:
                with self._changed:
                    stack.events.append(event)
                    self._changed.notify_all()
                    if not stack.has_readers() or self._closing:
                        return "stopped"
        finally:
            generator.close()
        return "finished"

    def _work(self, stack: Stack) -> str:
        """A job's thread: `work(emit, should_stop)`, its result the last event; "stopped" when its readers left."""

        def emit(event) -> None:
            with self._changed:
                stack.events.append(event)
                self._changed.notify_all()

        def should_stop() -> bool:
            with self._changed:
                return not stack.has_readers() or self._closing

        try:
            emit(stack.work(emit, should_stop))
        except Stopped:
            return "stopped"
        return "finished"

    def _queued(self, stack: Stack) -> Queued:
        ahead = self._pending.index(stack)
        mean = statistics.fmean(self._durations) if self._durations else None
        estimate = wait_estimate(ahead, [s.started_at for s in self._running], mean, self.max_running)
        return Queued(ahead, len(self._running), estimate, len(self._durations), mean)

    def running(self) -> int:
        with self._changed:
            return len(self._running)
