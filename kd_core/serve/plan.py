"""How the stack pool turns compatible requests into stacks, and each stack's events back into a member's own.

`stack_key(run)` says which requests may share a stack: the same data, student, schedule and teacher file, whatever
their T, α, methods and seeds. `plan` splits the pending requests of one key into stacks: a stack trains the union of
its members' seeds × the union of their roles (CE once per seed, however many visitors asked for it), so a member
joins the stack it adds the fewest students to, unless it would add more than it trains alone (other seeds *and*
other roles); and the stacks are balanced over the `parallel` stacks the machine trains at full speed side by side
(its cores on a CPU, where each stack has one thread), so that a classroom's 160 students train as 80 on each core
of a 2-core machine rather than 95 on one and 65 on the other. `project` gives each member the engine's own events
projected onto its seeds and roles: the same vocabulary, the same axis order (seed × role), as if
`train_stack(run, roles)` had run alone. Every seed's students are the same whatever else the stack holds
(seed-major, per-seed data and init); the stacked arithmetic may differ in the last bits (tests/test_stack_pool.py
bounds it).
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kd_core.config import RunConfig
from kd_core.engine.events import StackEvaluated, StackFinished, StackResult, StackStarted, StackStep
from kd_core.engine.roles import Role
from kd_core.run import Run

# the fields a stack varies per role (T, α, methods and their weights) or per seed: requests differing only here
# are compatible (every other field, the teacher file and the device are the stack's)
PER_ROLE_OR_SEED = ("temperature", "alpha", "methods", "dkd_beta", "feature_weight", "seed", "repeats")
_alone = itertools.count()  # keys of work that never shares a stack


def stack_key(run: Run) -> tuple:
    """What compatible requests share: the config less what a stack varies, and the teacher file's content. An
    augmenting run draws its augmentations from one generator for all seeds, so its students would depend on the
    stack's other seeds: it is never pooled."""
    cfg = run.config
    if cfg.augment:
        return ("alone", next(_alone))
    base = RunConfig()
    return dataclasses.replace(cfg, **{name: getattr(base, name) for name in PER_ROLE_OR_SEED}), run.teacher.hash


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

def plan(pending: Stack, parallel: int, max_students: int,
         fits: Callable[[Run, int, int], bool]) -> list[Stack]:
    """`pending`'s members as stacks. Each member joins the stack it adds the fewest students to, when that is
    no more than it trains alone and the stack stays within the size and `fits`; else it opens one. The size
    (at most `max_students`) is chosen so that the `parallel` stacks the machine trains at full speed side by
    side share the work evenly (a member is never split: its events come from one stack)."""

    # by seeds (overlapping seed ranges pack together; the order is the arrival order otherwise); one who left
    # trains nothing
    if pending.work is not None:  # a job is its own stack
        return [pending]
    members = sorted((member for member in pending.members if member.readers), key=lambda m: m.cfg.seeds)
    fits_grid = functools.cache(lambda seeds, roles: fits(pending.run, seeds, roles))  # (the app's: ~10 ms)

    def pack(size: int) -> list[Stack]:
        stacks: list[Stack] = []
        for member in members:
            alone = len(member.cfg.seeds) * len(member.roles)
            best, best_more = None, alone + 1  # joining pays when it adds at most what it trains alone
            for stack in stacks:
                seeds, roles = stack.grid_with(member)
                more = seeds * roles - stack.students()
                if more < best_more and seeds * roles <= size and fits_grid(seeds, roles):
                    best, best_more = stack, more
            if best is None:
                best = Stack(pending.key, pending.run, pending.opened)
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


def busiest(stacks: Sequence[Stack], cores: int) -> int:
    """Students on the busiest of `cores` when the stacks go, largest first, each to the least busy core."""
    load = [0] * cores
    for size in sorted((stack.students() for stack in stacks), reverse=True):
        load[load.index(min(load))] += size
    return max(load)


class Member:
    """One request: its run and roles (or a job's work), its readers, and where it trains."""

    def __init__(self, run: Run | None, roles: tuple[Role, ...], work: Callable | None = None) -> None:
        self.run, self.roles = run, roles
        self.cfg = run.config if run is not None else None
        self.seeds = self.cfg.seeds if run is not None else ()  # (RunConfig.seeds makes a new tuple each time)
        self.work = work  # a job's work (StackPool.job), else None
        self.readers = 1
        self.stack: Stack | None = None  # the pending requests it joined, then the stack `plan` put it in
        self.projection: Projection | None = None  # once its stack starts
        # its Gradio request's context: a stack's thread runs in its first member's, so that ZeroGPU charges
        # the GPU call to a visitor rather than to no one
        self.context = contextvars.copy_context()


class Stack:
    """Pending compatible requests, then (planned) one stack of them."""

    def __init__(self, key, run: Run | None, opened: float | None = None,
                 work: Callable | None = None) -> None:
        self.key, self.run, self.work = key, run, work  # `work`: a job that is not a stack (kd_core.serve.stack_pool)
        self.cfg = run.config if run is not None else None
        self.members: list[Member] = []
        self.seeds: list[int] = []  # sorted union
        self.roles: list[Role] = []  # union, in arrival order (CE first: every request's first role)
        # the same as sets: `plan` asks `grid_with` thousands of times under the pool's lock for a classroom's rush,
        # and a set's union reuses its members' hashes where a new set of the lists would hash every Role again
        self._seed_set: set[int] = set()
        self._role_set: set[Role] = set()
        self.opened = self.joined = time.monotonic() if opened is None else opened
        self.started_at = 0.0
        self.state = "pending"  # -> running -> finished | failed | stopped
        self.events: list = []
        self.error: BaseException | None = None

    def students(self) -> int:
        return len(self.seeds) * len(self.roles)

    def grid_with(self, member: Member) -> tuple[int, int]:
        """(seeds, roles) of this stack with `member` added."""
        return len(self._seed_set.union(member.seeds)), len(self._role_set.union(member.roles))

    def add(self, member: Member) -> None:
        self.members.append(member)
        self.joined = time.monotonic()
        if member.work is not None:  # a job: no seeds or roles
            return
        self._seed_set.update(member.seeds)
        self.seeds = sorted(self._seed_set)
        for role in member.roles:
            if role not in self._role_set:
                self._role_set.add(role)
                self.roles.append(role)
        self.joined = time.monotonic()

    def due(self, now: float, window_s: float, max_window_s: float) -> bool:
        if self.work is not None:  # a job waits for no one to join it
            return True
        return now - self.joined >= window_s or now - self.opened >= max_window_s

    def has_readers(self) -> bool:
        return any(member.readers for member in self.members)


