"""Compatible runs trained as one stack: a classroom's different requests share one engine pass.

Visitors whose requests differ only in what a stack already varies per role or per seed (T, α, the methods
and their weights, the seeds) need not train apart. `StackPool.events(cfg, roles)` puts a request into the
pending requests of its kind (`stack_key`: same data, student, schedule and teacher) or opens them. They start
once no compatible request has joined for `window_s` (a classroom's clicks reach the server over a second or
so), or `max_window_s` after the first, when one of `max_running` training slots is free; requests that
arrive while the slots are busy wait together. Then `plan` splits them into stacks. A stack trains the union
of its members' seeds × the union of their roles (CE once per seed, however many visitors asked for it), so a
member joins the stack it adds the fewest students to, unless it would add more than it trains alone (other
seeds *and* other roles); and the stacks are balanced over the `parallel` stacks the machine trains at full
speed side by side (its cores on a CPU, where each stack has one thread), so that a classroom's 160 students
train as 80 on each core of a 2-core machine rather than 95 on one and 65 on the other. Each member gets the
engine's own events projected onto its seeds and roles (`project`): the same vocabulary, the same axis order
(seed × role), as if `train_stack(cfg, roles)` had run alone. Every seed's students are the same whatever
else the stack holds (seed-major, per-seed data and init); the stacked arithmetic may differ in the last bits
(tests/test_stack_pool.py bounds it).

A member whose readers have all left gets nothing more, and the others train on; a stack none of whose
members has a reader stops at its next event. While a stack waits for a slot its members are told so
(`Queued`) about once a second.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import dataclasses
import functools
import heapq
import statistics
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from kd_core.config import RunConfig
from kd_core.engine.loop import StackEvaluated, StackFinished, StackResult, StackStarted, StackStep, train_stack
from kd_core.engine.roles import Role

# the fields a stack varies per role (T, α, methods and their weights) or per seed: requests differing only here
# are compatible (every other field, the teacher file and the device are the stack's)
PER_ROLE_OR_SEED = ("temperature", "alpha", "methods", "dkd_beta", "feature_weight", "seed", "repeats")
MAX_STACK_STUDENTS = 96  # seeds × roles in one pooled stack at most (`plan` balances them below this over the
# cores; with one stack of up to 160, 30 visitors with distinct T waited 53 s for their results, bench/RESULTS.md)
WINDOW_S = 0.5  # pending requests start once no compatible one has joined for this long,
MAX_WINDOW_S = 1.5  # or this long after the first
_POOLS: weakref.WeakSet = weakref.WeakSet()  # every pool, stopped at exit (StackPool.shutdown)


@atexit.register
def _shut_down_pools() -> None:
    for pool in list(_POOLS):
        pool.shutdown()


@dataclass(frozen=True)
class Queued:
    """What a request still waiting for a training slot is told (about once a second)."""

    runs_ahead: int  # stacks asked for earlier, also waiting
    running: int  # stacks training now
    estimate_s: float | None  # until this run starts; None until a run has finished
    recent_runs: int  # how many recent run times the estimate comes from
    mean_run_s: float | None


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


def stack_key(cfg: RunConfig) -> RunConfig | tuple:
    """What compatible requests share. An augmenting run draws its augmentations from one generator for all
    seeds, so its students would depend on the stack's other seeds: it is never pooled."""
    if cfg.augment:
        return ("alone", id(cfg), time.monotonic_ns())
    base = RunConfig()
    return dataclasses.replace(cfg, **{name: getattr(base, name) for name in PER_ROLE_OR_SEED})


# ------------------------------------------------------------------------------------ projection

class StudentsView:
    """A member's students inside the stack's: `module(i)` is the member's i-th (seed-major) student."""

    def __init__(self, students, indices: Sequence[int]) -> None:
        self.students, self.indices = students, tuple(indices)

    def module(self, index: int) -> torch.nn.Module:
        return self.students.module(self.indices[index])

    def state_dict(self, index: int) -> dict[str, torch.Tensor]:
        return self.students.state_dict(self.indices[index])


@dataclass(frozen=True)
class Projection:
    """Where one member's seeds and roles sit in its stack."""

    cfg: RunConfig
    roles: tuple[Role, ...]
    seeds: tuple[int, ...]
    seed_rows: tuple[int, ...]  # the stack's seed index of each of the member's seeds
    role_columns: tuple[int, ...]  # the stack's role index of each of the member's roles
    stack_roles: int  # roles in the stack

    def grid(self, table):
        """[seed][role] rows of the stack's table -> the member's [seed][role] (tuples stay tuples)."""
        kind = type(table)
        return kind(type(table[row])(table[row][c] for c in self.role_columns) for row in self.seed_rows)

    def flat(self) -> list[int]:
        """The stack's flat (seed-major) student index of each of the member's students."""
        return [row * self.stack_roles + column for row in self.seed_rows for column in self.role_columns]


def project(event, p: Projection):
    """A stack's event as the member's own run would have yielded it."""
    if isinstance(event, StackStarted):
        return dataclasses.replace(event, config=p.cfg, roles=p.roles, seeds=p.seeds)
    if isinstance(event, StackStep):
        return dataclasses.replace(event, losses=p.grid(event.losses))
    if isinstance(event, StackEvaluated):
        hidden = None if event.hidden_accuracy is None else p.grid(event.hidden_accuracy)
        return dataclasses.replace(event, accuracy=p.grid(event.accuracy), hidden_accuracy=hidden)
    if isinstance(event, StackFinished):
        return StackFinished(project_result(event.result, p))
    return event


def project_result(result: StackResult, p: Projection) -> StackResult:
    index = torch.tensor(p.flat())
    return dataclasses.replace(
        result, config=p.cfg, roles=p.roles, seeds=p.seeds, test_acc=p.grid(result.test_acc),
        val_acc=p.grid(result.val_acc), class_acc=p.grid(result.class_acc), agreement=p.grid(result.agreement),
        test_logits=result.test_logits[index], val_logits=result.val_logits[index],
        samples_per_s=result.samples_per_s * len(p.seeds) / len(result.seeds),  # this member's seeds' samples
        students=StudentsView(result.students, p.flat()))


# ------------------------------------------------------------------------------------ planning

def plan(pending: _Stack, parallel: int, max_students: int,
         fits: Callable[[RunConfig, int, int], bool]) -> list[_Stack]:
    """`pending`'s members as stacks. Each member joins the stack it adds the fewest students to, when that is
    no more than it trains alone and the stack stays within the size and `fits`; else it opens one. The size
    (at most `max_students`) is chosen so that the `parallel` stacks the machine trains at full speed side by
    side share the work evenly (a member is never split: its events come from one stack)."""

    # by seeds (overlapping seed ranges pack together; the order is the arrival order otherwise); one who left
    # trains nothing
    members = sorted((member for member in pending.members if member.readers), key=lambda m: m.cfg.seeds)
    fits_grid = functools.cache(lambda seeds, roles: fits(pending.cfg, seeds, roles))  # (the app's: ~10 ms)

    def pack(size: int) -> list[_Stack]:
        stacks: list[_Stack] = []
        for member in members:
            alone = len(member.cfg.seeds) * len(member.roles)
            best, best_more = None, alone + 1  # joining pays when it adds at most what it trains alone
            for stack in stacks:
                seeds, roles = stack.grid_with(member)
                more = seeds * roles - stack.students()
                if more < best_more and seeds * roles <= size and fits_grid(seeds, roles):
                    best, best_more = stack, more
            if best is None:
                best = _Stack(pending.key, pending.cfg, pending.opened)
                stacks.append(best)
            best.add(member)
        return stacks

    stacks = pack(max_students)
    if parallel > 1 and len(members) > 1:
        # each smaller size (just below the last plan's largest stack), down to the largest member: the plan
        # whose stacks, spread over the cores largest first, leave the busiest core the least work (ties: the
        # fewer stacks); 95 + 65 students on 2 cores become 80 + 80
        smallest = max(len(m.cfg.seeds) * len(m.roles) for m in members)
        best, candidate = (busiest(stacks, parallel), len(stacks)), stacks
        while (size := max(stack.students() for stack in candidate) - 1) >= smallest:
            candidate = pack(size)
            if (score := (busiest(candidate, parallel), len(candidate))) < best:
                best, stacks = score, candidate
    for stack in stacks:
        for member in stack.members:
            member.stack = stack
    return stacks


def busiest(stacks: Sequence[_Stack], cores: int) -> int:
    """Students on the busiest of `cores` when the stacks go, largest first, each to the least busy core."""
    load = [0] * cores
    for size in sorted((stack.students() for stack in stacks), reverse=True):
        load[load.index(min(load))] += size
    return max(load)


# ------------------------------------------------------------------------------------ the pool

class _Member:
    def __init__(self, cfg: RunConfig, roles: tuple[Role, ...]) -> None:
        self.cfg, self.roles = cfg, roles
        self.readers = 1
        self.stack: _Stack | None = None  # the pending requests it joined, then the stack `plan` put it in
        self.projection: Projection | None = None  # once its stack starts
        # its Gradio request's context: a stack's thread runs in its first member's, so that ZeroGPU charges
        # the GPU call to a visitor rather than to no one
        self.context = contextvars.copy_context()


class _Stack:
    """Pending compatible requests, then (planned) one stack of them."""

    def __init__(self, key, cfg: RunConfig, opened: float | None = None) -> None:
        self.key, self.cfg = key, cfg
        self.members: list[_Member] = []
        self.seeds: list[int] = []  # sorted union
        self.roles: list[Role] = []  # union, in arrival order (CE first: every request's first role)
        self.opened = self.joined = time.monotonic() if opened is None else opened
        self.started_at = 0.0
        self.state = "pending"  # -> running -> finished | failed | stopped
        self.events: list = []
        self.error: BaseException | None = None

    def students(self) -> int:
        return len(self.seeds) * len(self.roles)

    def grid_with(self, member: _Member) -> tuple[int, int]:
        """(seeds, roles) of this stack with `member` added."""
        return len(set(self.seeds) | set(member.cfg.seeds)), len(dict.fromkeys([*self.roles, *member.roles]))

    def add(self, member: _Member) -> None:
        self.members.append(member)
        self.seeds = sorted(set(self.seeds) | set(member.cfg.seeds))
        self.roles = list(dict.fromkeys([*self.roles, *member.roles]))
        self.joined = time.monotonic()

    def due(self, now: float, window_s: float, max_window_s: float) -> bool:
        return now - self.joined >= window_s or now - self.opened >= max_window_s

    def has_readers(self) -> bool:
        return any(member.readers for member in self.members)


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
    """Pending and running stacks of compatible requests; `events(cfg, roles)` is one request's stream.

    `train(cfg, roles, seeds=…)` is the engine (the app passes its GPU-decorated wrapper): one call per stack.
    """

    def __init__(self, train: Callable[..., Iterator] = train_stack, max_running: int = 4,
                 window_s: float = WINDOW_S, max_students: int = MAX_STACK_STUDENTS,
                 queued_every_s: float = 1.0, recent: int = 20,
                 fits: Callable[[RunConfig, int, int], bool] | None = None, parallel: int = 1,
                 max_window_s: float = MAX_WINDOW_S) -> None:
        """`fits(cfg, seeds, roles)`: whether a stack of that many seeds × roles stays within the machine's
        budget (the app: train.check_cpu_budget); `parallel`: how many stacks train at full speed side by
        side (the app: its CPU cores; 1 on a GPU, where one big stack is fastest)."""
        if max_running < 1 or max_students < 1 or parallel < 1:
            raise ValueError("max_running, max_students and parallel must be at least 1")
        self.fits = fits or (lambda cfg, seeds, roles: True)
        self.train, self.max_running, self.window_s = train, max_running, window_s
        self.max_window_s = max(window_s, max_window_s)
        self.max_students, self.queued_every_s, self.parallel = max_students, queued_every_s, parallel
        self._changed = threading.Condition()  # guards everything below
        self._pending: list[_Stack] = []  # in the order they opened
        self._running: list[_Stack] = []
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

    def events(self, cfg: RunConfig, roles: Sequence[Role]) -> Iterator:
        """cfg's own events (Queued while waiting, then StackStarted … StackFinished, projected). The request
        joins the pending ones now, at the call, not at the first `next`."""
        member = _Member(cfg, tuple(roles))
        with self._changed:
            if self._closing:  # (at exit) nothing starts any more
                return _Stream((event for event in ()), lambda: None)
            self._join(member)
        return _Stream(self._deliver(member), lambda: self._leave(member))

    def _leave(self, member: _Member) -> None:
        with self._changed:
            member.readers -= 1
            stack = member.stack
            if stack.state == "pending" and not stack.has_readers():
                self._pending.remove(stack)
                stack.state = "stopped"
            self._changed.notify_all()

    def _join(self, member: _Member) -> None:
        key = stack_key(member.cfg)
        stack = next((s for s in self._pending if s.key == key), None)
        if stack is None:
            stack = _Stack(key, dataclasses.replace(member.cfg, repeats=1))
            self._pending.append(stack)
        stack.add(member)
        member.stack = stack
        self._changed.notify_all()

    def _deliver(self, member: _Member) -> Iterator:
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
                yield project(event, member.projection)

    def _wait_next(self, member: _Member, delivered: int, told: float):
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

    def _start(self, stack: _Stack) -> None:
        self._running.append(stack)
        stack.state, stack.started_at = "running", time.monotonic()
        for member in stack.members:
            member.projection = Projection(
                member.cfg, member.roles, member.cfg.seeds, tuple(stack.seeds.index(s) for s in member.cfg.seeds),
                tuple(stack.roles.index(r) for r in member.roles), len(stack.roles))
        self.stacks_started += 1
        thread = threading.Thread(target=stack.members[0].context.run, args=(self._produce, stack),
                                  name=f"stack-{self.stacks_started}", daemon=True)
        self._threads.add(thread)
        thread.start()

    def _produce(self, stack: _Stack) -> None:
        """The stack's thread: record every engine event; stop when no member has a reader."""
        state = "finished"
        try:
            generator = self.train(stack.cfg, tuple(stack.roles), seeds=tuple(stack.seeds))
            try:
                for event in generator:
                    with self._changed:
                        stack.events.append(event)
                        self._changed.notify_all()
                        if not stack.has_readers() or self._closing:
                            state = "stopped"
                            break
            finally:
                generator.close()
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

    def _queued(self, stack: _Stack) -> Queued:
        ahead = self._pending.index(stack)
        mean = statistics.fmean(self._durations) if self._durations else None
        estimate = wait_estimate(ahead, [s.started_at for s in self._running], mean, self.max_running)
        return Queued(ahead, len(self._running), estimate, len(self._durations), mean)

    def running(self) -> int:
        with self._changed:
            return len(self._running)
