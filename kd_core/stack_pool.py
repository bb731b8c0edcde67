"""Compatible runs trained as one stack: a classroom's different requests share one engine pass.

Visitors whose requests differ only in what a stack already varies per role or per seed (T, α, the methods
and their weights, the seeds) need not train apart. `StackPool.events(cfg, roles)` puts a request into the
pending stack of its kind (`stack_key`: same data, student, schedule and teacher) or opens one; a pending
stack starts `window_s` after it opened, once one of `max_running` training slots is free, and takes every
compatible request that arrived meanwhile (a classroom pressing Start together, or asking while the slots were
busy). It trains the union of its members' seeds × the union of their roles (CE once per seed, however many
visitors asked for it). Each member gets the engine's own events projected onto its seeds and roles
(`project`): the same vocabulary, the same axis order (seed × role), as if `train_stack(cfg, roles)` had run
alone. Every seed's students are the same whatever else the stack holds (seed-major, per-seed data and init);
the stacked arithmetic may differ in the last bits (tests/test_stack_pool.py bounds it).

A member whose readers have all left gets nothing more, and the others train on; a stack none of whose
members has a reader stops at its next event. While a stack waits for a slot its members are told so
(`Queued`) about once a second.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import heapq
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from .config import RunConfig
from .engine import StackEvaluated, StackFinished, StackResult, StackStarted, StackStep, train_stack
from .roles import Role

# the fields a stack varies per role (T, α, methods and their weights) or per seed: requests differing only here
# are compatible (every other field, the teacher file and the device are the stack's)
PER_ROLE_OR_SEED = ("temperature", "alpha", "methods", "dkd_beta", "feature_weight", "seed", "repeats")
MAX_STACK_STUDENTS = 96  # seeds × roles in one pooled stack: more is a second stack, trained beside it (2 cores;
# 30 visitors with distinct T: result p95 35.6 s with 96, 53.1 s with 160, bench/RESULTS.md)
WINDOW_S = 0.3  # a new stack waits this long for compatible requests (a classroom's clicks land within it)


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


# ------------------------------------------------------------------------------------ the pool

class _Member:
    def __init__(self, cfg: RunConfig, roles: tuple[Role, ...]) -> None:
        self.cfg, self.roles = cfg, roles
        self.readers = 1
        self.projection: Projection | None = None  # once its stack starts


class _Stack:
    def __init__(self, key, cfg: RunConfig) -> None:
        self.key, self.cfg = key, cfg
        self.members: list[_Member] = []
        self.seeds: list[int] = []  # sorted union
        self.roles: list[Role] = []  # union, in arrival order (CE first: every request's first role)
        self.opened = time.monotonic()
        self.started_at = 0.0
        self.state = "pending"  # -> running -> finished | failed | stopped
        self.events: list = []
        self.error: BaseException | None = None
        # the first member's context (its Gradio request): the stack's thread runs in it, so that ZeroGPU charges
        # the GPU call to a visitor rather than to no one
        self.context = contextvars.copy_context()

    def grid_with(self, cfg: RunConfig, roles: Sequence[Role]) -> tuple[int, int]:
        """(seeds, roles) of this stack with cfg's request added."""
        return len(set(self.seeds) | set(cfg.seeds)), len(dict.fromkeys([*self.roles, *roles]))

    def add(self, member: _Member) -> None:
        self.members.append(member)
        self.seeds = sorted(set(self.seeds) | set(member.cfg.seeds))
        self.roles = list(dict.fromkeys([*self.roles, *member.roles]))

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
                 fits: Callable[[RunConfig, int, int], bool] | None = None) -> None:
        """`fits(cfg, seeds, roles)`: whether a stack of that many seeds × roles stays within the machine's
        budget (the app: train.check_cpu_budget); a request that would push a stack beyond it opens another."""
        if max_running < 1 or max_students < 1:
            raise ValueError("max_running and max_students must be at least 1")
        self.fits = fits or (lambda cfg, seeds, roles: True)
        self.train, self.max_running, self.window_s = train, max_running, window_s
        self.max_students, self.queued_every_s = max_students, queued_every_s
        self._changed = threading.Condition()  # guards everything below
        self._pending: list[_Stack] = []  # in the order they opened
        self._running: list[_Stack] = []
        self._durations: list[float] = []
        self._recent = recent
        self.stacks_started = 0  # (for tests and benchmarks)

    def events(self, cfg: RunConfig, roles: Sequence[Role]) -> Iterator:
        """cfg's own events (Queued while waiting, then StackStarted … StackFinished, projected). The request
        joins a stack now, at the call, not at the first `next`."""
        with self._changed:
            stack, member = self._join(cfg, tuple(roles))
        return _Stream(self._deliver(stack, member), lambda: self._leave(stack, member))

    def _leave(self, stack: _Stack, member: _Member) -> None:
        with self._changed:
            member.readers -= 1
            if stack.state == "pending" and not stack.has_readers():
                self._pending.remove(stack)
                stack.state = "stopped"
            self._changed.notify_all()

    def _join(self, cfg: RunConfig, roles: tuple[Role, ...]) -> tuple[_Stack, _Member]:
        key = stack_key(cfg)
        member = _Member(cfg, roles)
        stack = next((s for s in self._pending if s.key == key and self._room(s, cfg, roles)), None)
        if stack is None:
            stack = _Stack(key, dataclasses.replace(cfg, repeats=1))
            self._pending.append(stack)
        stack.add(member)
        self._changed.notify_all()
        return stack, member

    def _room(self, stack: _Stack, cfg: RunConfig, roles: tuple[Role, ...]) -> bool:
        seeds, stack_roles = stack.grid_with(cfg, roles)
        return seeds * stack_roles <= self.max_students and self.fits(stack.cfg, seeds, stack_roles)

    def _deliver(self, stack: _Stack, member: _Member) -> Iterator:
        delivered, told = 0, -float("inf")
        while True:
            with self._changed:
                event, notice = self._wait_next(stack, delivered, told)
            if notice is not None:
                told = time.monotonic()
                yield notice
            elif event is None:
                return  # the stack finished (or stopped)
            else:
                delivered += 1
                yield project(event, member.projection)

    def _wait_next(self, stack: _Stack, delivered: int, told: float):
        """(the next event, None), (None, a Queued notice) or (None, None) at the end (lock held)."""
        while True:
            self._start_ready()
            if delivered < len(stack.events):
                return stack.events[delivered], None
            if stack.state == "failed":
                raise copy.copy(stack.error).with_traceback(None)
            if stack.state in ("finished", "stopped"):
                return None, None
            now = time.monotonic()
            if stack.state == "pending" and now - stack.opened >= self.window_s and now - told >= self.queued_every_s:
                return None, self._queued(stack)
            self._changed.wait(self.window_s / 3 if stack.state == "pending" else 1.0)

    def _start_ready(self) -> None:
        """Start pending stacks whose window has passed, oldest first, while slots are free (lock held)."""
        now = time.monotonic()
        for stack in list(self._pending):
            if len(self._running) >= self.max_running:
                return
            if now - stack.opened < self.window_s:
                continue
            self._pending.remove(stack)
            self._running.append(stack)
            stack.state, stack.started_at = "running", now
            for member in stack.members:
                member.projection = Projection(
                    member.cfg, member.roles, member.cfg.seeds,
                    tuple(stack.seeds.index(s) for s in member.cfg.seeds),
                    tuple(stack.roles.index(r) for r in member.roles), len(stack.roles))
            self.stacks_started += 1
            threading.Thread(target=stack.context.run, args=(self._produce, stack),
                             name=f"stack-{self.stacks_started}", daemon=True).start()
            self._changed.notify_all()

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
                        if not stack.has_readers():
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
