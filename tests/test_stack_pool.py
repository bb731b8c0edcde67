"""Compatible visitors' runs as one stack: one engine pass, each visitor's results as if it had run alone."""

from __future__ import annotations

import contextvars
import threading

import pytest
import torch
from support import wait_for

from kd_core.config import RunConfig
from kd_core.engine.events import Queued
from kd_core.engine.loop import StackFinished, StackStarted, StackStep, train_stack
from kd_core.engine.train import roles
from kd_core.run import as_run, resolve_run
from kd_core.serve.plan import Projection, project, stack_key
from kd_core.serve.stack_pool import StackPool

# the stacked arithmetic (one batched matmul over more students) may round differently in the last bits; seen:
# equal accuracies; a student's weights within this of the solo run's
WEIGHT_ATOL = 1e-5
SMALL = dict(train_size=500, epochs=2, repeats=2, evaluations=2)


def drain(events) -> list:
    return list(events)


def result_of(events: list):
    return next(e.result for e in events if isinstance(e, StackFinished))


def run_together(pool: StackPool, cfgs: list[RunConfig]) -> list[list]:
    """Every cfg's events from `pool`, all asked for at once (threads), in cfgs' order."""
    out: list[list | None] = [None] * len(cfgs)

    def ask(i: int) -> None:
        out[i] = drain(pool.events(cfgs[i], roles(cfgs[i])))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(cfgs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return out


def test_the_key_ignores_only_what_a_stack_varies_per_role_or_seed(fashion):
    def key(cfg: RunConfig):
        return stack_key(resolve_run(cfg))

    base = key(RunConfig(**SMALL))
    for change in (dict(temperature=8.0), dict(alpha=0.3), dict(methods=("dkd", "dist")), dict(dkd_beta=2.0),
                   dict(feature_weight=0.5), dict(seed=7), dict(repeats=5)):
        assert key(RunConfig(**{**SMALL, **change})) == base, change
    for change in (dict(train_size=1000), dict(epochs=3), dict(lr=1e-3), dict(student="mlp-tiny"),
                   dict(hide_class=3), dict(unlabeled=5000), dict(batch_size=128)):
        assert key(RunConfig(**{**SMALL, **change})) != base, change
    augmenting = RunConfig(**SMALL, augment=True)
    assert key(augmenting) != key(augmenting)  # never pooled


def test_projection_takes_the_members_seeds_and_roles_in_the_stacks_order():
    cfg = RunConfig(**SMALL)
    p = Projection(cfg, tuple(roles(cfg)), (5, 6), seed_rows=(2, 3), role_columns=(0, 2), stack_roles=3)
    table = [[(s, r) for r in range(3)] for s in range(4)]
    assert p.grid(table) == [[(2, 0), (2, 2)], [(3, 0), (3, 2)]]
    assert p.flat() == [6, 8, 9, 11]
    step = project(StackStep(1, 3, 8, tuple(tuple(float(10 * s + r) for r in range(3)) for s in range(4)), 0.1), p)
    assert step.losses == ((20.0, 22.0), (30.0, 32.0))


def test_compatible_visitors_train_as_one_stack_and_each_equals_its_solo_run(fashion):
    """Three visitors (another T, other seeds, other methods) asking at once: one engine pass of the union, CE
    once per seed; each visitor's events and results are its own run's, as if it had trained alone."""
    cfgs = [RunConfig(**SMALL, seed=3), RunConfig(**SMALL, seed=3, temperature=8.0),
            RunConfig(**SMALL, seed=4, methods=("kd", "dist"))]
    calls = []

    def engine(cfg, stack_roles, seeds):
        calls.append((len(seeds), len(stack_roles)))
        yield from train_stack(cfg, stack_roles, seeds=seeds)

    pool = StackPool(train=engine, window_s=2.0)  # all three arrive well within the window
    together = run_together(pool, cfgs)
    assert pool.stacks_started == 1 and calls == [(3, 4)]  # seeds 3, 4, 5 × CE, KD T=4, KD T=8, DIST
    for cfg, events in zip(cfgs, together, strict=True):
        started = next(e for e in events if isinstance(e, StackStarted))
        assert started.config == cfg and started.seeds == (cfg.seed, cfg.seed + 1)
        assert [r.name for r in started.roles] == [r.name for r in roles(cfg)]
        shared, alone = result_of(events), result_of(drain(train_stack(as_run(cfg), roles(cfg))))
        assert shared.test_acc == alone.test_acc and shared.val_acc == alone.val_acc, cfg
        assert shared.test_logits.shape == alone.test_logits.shape
        assert torch.allclose(shared.test_logits, alone.test_logits, atol=1e-3)
        for i in range(len(alone.seeds) * len(alone.roles)):
            for name, value in alone.students.state_dict(i).items():
                assert torch.allclose(shared.students.state_dict(i)[name], value, atol=WEIGHT_ATOL), (cfg, i, name)


def test_a_stacks_thread_runs_in_its_first_members_context(fashion):
    """ZeroGPU reads the visitor (whose quota a GPU call charges) from a context variable."""
    visitor = contextvars.ContextVar("visitor", default=None)
    seen = []

    def engine(cfg, stack_roles, seeds):
        seen.append(visitor.get())
        yield from train_stack(cfg, stack_roles, seeds=seeds)

    pool = StackPool(train=engine, window_s=0.1)
    visitor.set("first visitor")
    drain(pool.events(RunConfig(**SMALL), roles(RunConfig(**SMALL))))
    assert seen == ["first visitor"]


def test_incompatible_requests_train_side_by_side(fashion):
    pool = StackPool(window_s=0.2)
    together = run_together(pool, [RunConfig(**SMALL), RunConfig(**{**SMALL, "train_size": 600})])
    assert pool.stacks_started == 2 and all(isinstance(events[-1], StackFinished) for events in together)


def test_a_full_stack_opens_a_second_one(fashion):
    pool = StackPool(window_s=2.0, max_students=4)  # 2 seeds × (CE, KD, KD T=8) = 6 > 4
    run_together(pool, [RunConfig(**SMALL), RunConfig(**SMALL, temperature=8.0)])
    assert pool.stacks_started == 2


def test_a_stack_beyond_the_budget_opens_a_second_one(fashion):
    asked = []

    def fits(cfg, seeds, roles):
        asked.append((seeds, roles))
        return seeds * roles <= 4

    pool = StackPool(window_s=2.0, fits=fits)  # both requests arrive well within the window
    run_together(pool, [RunConfig(**SMALL), RunConfig(**SMALL, temperature=8.0)])
    assert pool.stacks_started == 2 and asked == [(2, 3)]  # the second request would have made 2 × 3


def test_a_visitor_who_leaves_does_not_stop_the_others_and_the_last_one_stops_the_stack(fashion):
    cfg = RunConfig(train_size=500, epochs=50, repeats=2, event_interval_s=0.0)
    pool = StackPool(window_s=0.2)
    first, second = pool.events(cfg, roles(cfg)), pool.events(RunConfig(**{**cfg.__dict__, "temperature": 2.0}),
                                                                roles(cfg))
    items = [next(first), next(second)]  # both joined the same pending stack: the window, then it starts
    while not all(isinstance(i, StackStep) for i in items[-2:]):
        items = [*items, next(first), next(second)]
    assert pool.stacks_started == 1
    first.close()
    steps = [next(second) for _ in range(5)]  # the other visitor's students train on
    assert all(isinstance(e, StackStep) for e in steps) and steps[-1].step > steps[0].step
    second.close()
    assert wait_for(lambda: pool.running() == 0, seconds=10)  # everyone left: the stack stopped


def test_waiting_requests_are_told_and_join_the_next_stack(fashion):
    """With the one slot busy, compatible requests wait together (Queued), then train as one stack."""
    busy = RunConfig(train_size=500, epochs=50, repeats=1, event_interval_s=0.0)
    pool = StackPool(max_running=1, window_s=0.1, queued_every_s=0.1)
    running = pool.events(busy, roles(busy))
    assert wait_for(lambda: isinstance(next(running), StackStep), seconds=30)
    waiting = [pool.events(RunConfig(**SMALL, temperature=t), roles(RunConfig(**SMALL))) for t in (2.0, 3.0)]
    assert all(isinstance(next(w), Queued) for w in waiting)
    running.close()
    rest = [drain(w) for w in waiting]
    assert pool.stacks_started == 2 and all(isinstance(r[-1], StackFinished) for r in rest)


def test_a_waiting_stack_everyone_left_never_starts(fashion):
    busy = RunConfig(train_size=500, epochs=50, repeats=1, event_interval_s=0.0)
    pool = StackPool(max_running=1, window_s=0.1, queued_every_s=0.1)
    running = pool.events(busy, roles(busy))
    assert wait_for(lambda: isinstance(next(running), StackStep), seconds=30)
    waiting = [pool.events(RunConfig(**SMALL, seed=s), roles(RunConfig(**SMALL))) for s in (1, 2)]
    assert all(isinstance(next(w), Queued) for w in waiting)
    for w in waiting:
        w.close()
    running.close()
    assert wait_for(lambda: pool.running() == 0, seconds=10)
    assert pool.stacks_started == 1 and pool._pending == []


def planned(cfgs: list[RunConfig], parallel: int, **pool_options) -> list[tuple[int, int]]:
    """(seeds, roles) of each stack the pool trains for cfgs asked at once (an engine that trains nothing)."""
    calls = []

    def engine(cfg, stack_roles, seeds):
        calls.append((len(seeds), len(stack_roles)))
        yield from ()

    pool = StackPool(train=engine, window_s=2.0, parallel=parallel, **pool_options)
    run_together(pool, cfgs)
    return sorted(calls)


def test_a_classrooms_stacks_are_balanced_over_the_cores():
    """30 visitors with T = 0.5 … 15 and one seed, and one with other seeds: on 2 cores the T's are split so
    that each core trains about as many students (CE in every stack), and the other seeds' visitor trains
    alone rather than multiplying a stack's roles by its seeds."""
    rush = [RunConfig(**SMALL, seed=1, temperature=0.5 * (i + 1)) for i in range(30)]
    probe = RunConfig(**SMALL, seed=100)
    assert planned([*rush, probe], parallel=1, max_students=96) == [(2, 2), (2, 31)]
    # 34 students on one core, 30 + 4 on the other
    assert planned([*rush, probe], parallel=2, max_students=96) == [(2, 2), (2, 15), (2, 17)]
    assert planned(rush[:29], parallel=2, max_students=96) == [(2, 15), (2, 16)]  # 32 and 30, not 58 and 4
    # at most 20 students a stack: 18 + 18 = 36 and 18 + 14 + 4 = 36, where 20-student stacks leave 40 on one
    assert planned([*rush, probe], parallel=2, max_students=20) == [(2, 2), (2, 7), (2, 9), (2, 9), (2, 9)]


def test_identical_roles_on_other_seeds_share_a_stack_unless_the_cores_are_free():
    one, other = RunConfig(**SMALL, seed=1), RunConfig(**SMALL, seed=50)
    assert planned([one, other], parallel=1) == [(4, 2)]  # same roles: the seeds' union costs nothing extra
    assert planned([one, other], parallel=2) == [(2, 2), (2, 2)]  # one per core
    overlapping = [RunConfig(**SMALL, seed=s) for s in range(1, 9)]  # seeds 1-2, 2-3, …, 8-9
    assert planned(overlapping, parallel=1) == [(9, 2)]
    assert planned(overlapping, parallel=2) == [(5, 2), (5, 2)]  # seeds 1-5 and 5-9


def test_requests_arriving_one_after_another_join_until_a_quiet_window():
    """A classroom's clicks reach the server spread over a second: each request joins while the previous one
    came less than window_s before, up to max_window_s after the first."""
    calls = []

    def engine(cfg, stack_roles, seeds):
        calls.append(len(stack_roles))
        yield from ()

    def ask_spread(pool: StackPool) -> None:
        streams, readers = [], []
        for i in range(4):  # 0.6 s from the first to the last: beyond one window, within the quiet rule
            cfg = RunConfig(**SMALL, temperature=1.0 + i)
            streams.append(pool.events(cfg, roles(cfg)))
            readers.append(threading.Thread(target=drain, args=(streams[-1],)))  # waiting as visitors do
            readers[-1].start()
            threading.Event().wait(0.2)
        for reader in readers:
            reader.join(30)

    ask_spread(StackPool(train=engine, window_s=0.4, max_window_s=30.0))
    assert calls == [5]  # CE and four temperatures, one stack
    capped = StackPool(train=engine, window_s=0.4, max_window_s=0.5)
    ask_spread(capped)
    assert capped.stacks_started == 2


def test_a_visitor_who_left_before_the_start_trains_nothing():
    calls = []

    def engine(cfg, stack_roles, seeds):
        calls.append((tuple(seeds), len(stack_roles)))
        yield from ()

    pool = StackPool(train=engine, window_s=0.3)
    staying = pool.events(RunConfig(**SMALL, seed=1), roles(RunConfig(**SMALL)))
    leaving = pool.events(RunConfig(**SMALL, seed=7, temperature=9.0), roles(RunConfig(**SMALL)))
    leaving.close()
    drain(staying)
    assert calls == [((1, 2), 2)]


def test_a_plan_has_no_more_ways_than_free_slots(fashion):
    """With one slot free, a classroom's requests are one stack (up to the size), not halves that wait for a slot
    and are halved again."""
    calls = []

    def engine(cfg, stack_roles, seeds):
        calls.append(len(stack_roles))
        yield from train_stack(cfg, stack_roles, seeds=seeds)

    busy = RunConfig(train_size=500, epochs=50, repeats=1, event_interval_s=0.0, seed=99)
    pool = StackPool(train=engine, max_running=2, window_s=0.1, parallel=2)
    running = pool.events(busy, roles(busy))
    assert wait_for(lambda: isinstance(next(running), StackStep), seconds=30)
    rush = [RunConfig(**SMALL, temperature=1.0 + i) for i in range(6)]
    together = run_together(pool, rush)
    running.close()
    assert all(isinstance(events[-1], StackFinished) for events in together)
    assert calls == [2, 7]  # the busy run; CE and six temperatures in the one free slot


def test_shutdown_stops_running_stacks_and_waits_for_their_threads(fashion):
    """At exit: a stack thread still inside torch when the interpreter finalises aborts the process."""
    cfg = RunConfig(train_size=500, epochs=50, repeats=1, event_interval_s=0.0)
    pool = StackPool(window_s=0.1)
    stream = pool.events(cfg, roles(cfg))
    assert wait_for(lambda: isinstance(next(stream), StackStep), seconds=30)  # training, with a reader
    pool.shutdown(timeout_s=30)
    assert pool.running() == 0 and not pool._threads
    rest = list(stream)
    assert not any(isinstance(event, StackFinished) for event in rest)  # stopped, not finished
    assert not list(pool.events(cfg, roles(cfg)))  # and nothing starts any more


def test_a_teachers_training_in_a_slot_stops_at_the_next_batch_when_its_reader_leaves(fashion):
    """A Your-data teacher trains as a job in a pool slot: Stop (its stream closed) ends it at the next batch."""
    from kd_core.models.zoo import build
    from kd_core.teacher.training import TeacherEpoch, fit_teacher

    pool, batches = StackPool(max_running=1), []

    def work(emit, should_stop):
        def stop() -> bool:
            batches.append(1)
            return should_stop()

        model = build("mlp-small", fashion.image_shape, fashion.num_classes)
        fit_teacher(model, fashion, epochs=50, lr=1e-3, batch_size=256, on_epoch=emit, should_stop=stop)

    stream = pool.job(work)
    waiting = pool.job(lambda emit, should_stop: "done")  # over the bound: told its place in the queue
    assert isinstance(next(waiting), Queued)
    assert isinstance(next(event for event in stream if not isinstance(event, Queued)), TeacherEpoch)
    stream.close()
    assert list(waiting)[-1] == "done"  # the slot came free
    wait_for(lambda: pool.running() == 0, 3.0)
    seen = len(batches)
    assert seen < 2 * 220  # (an epoch is 215 batches) it stopped within the second epoch
    threading.Event().wait(0.5)
    assert len(batches) == seen  # and trains no more


def test_the_budget_is_counted_once_per_run_before_it_joins_outside_the_pools_lock(fashion, monkeypatch):
    """The app's plan asks the budget for every grid it considers while it holds the pool's lock: each request's
    budget is counted by `warm`, before it joins and without the lock, and the plan's asks only read it."""
    from kd_core.engine import budget as engine_budget

    counted, locked = [], []
    count = engine_budget.cpu_budget
    monkeypatch.setattr(engine_budget, "cpu_budget",
                        lambda run, *rest: counted.append(run.config.temperature) or count(run, *rest))
    budgets = engine_budget.BudgetCache()

    def warm(run) -> None:
        free = []  # whether another thread can take the pool's lock now

        def probe() -> None:
            free.append(pool._changed.acquire(timeout=5))
            if free[0]:
                pool._changed.release()

        prober = threading.Thread(target=probe)
        prober.start()
        prober.join()
        locked.append(not free[0])
        budgets(run)

    def fits(run, seeds, stack_roles) -> bool:
        budget = budgets(run)
        return budget.needed(seeds, stack_roles) <= budget.max_tflop

    def engine(cfg, stack_roles, seeds):
        yield from ()

    pool = StackPool(train=engine, window_s=1.0, fits=fits, warm=warm)
    cfgs = [RunConfig(**SMALL, seed=1, temperature=t) for t in (1.0, 2.0, 3.0, 4.0)]
    run_together(pool, cfgs)
    # one count for the four temperatures (a budget does not depend on T), before the first joined
    assert pool.stacks_started == 1 and len(counted) == 1 and locked == [False] * 4
    one = resolve_run(cfgs[0])
    assert budgets(one.replace(repeats=8, alpha=0.2)) is budgets(one)  # the grid gives the seeds: one for any
    assert budgets(one.replace(epochs=1)).needed(1, 2) < budgets(one).needed(1, 2)  # other epochs: its own
    budget = budgets(one)
    assert budget.needed(2, 2) == pytest.approx(2 * budget.needed(1, 2)) and budget.needed(1, 2) > 0  # students only
    with pytest.raises(ValueError, match="over the CPU limit"):
        engine_budget.check_cpu_budget(one, max_tflop=0.9999 * budget.needed(2, 2))
    engine_budget.check_cpu_budget(one, max_tflop=1.0001 * budget.needed(2, 2))


def test_a_budget_that_counts_the_teachers_logits_pass_is_counted_again(fashion, monkeypatch):
    from kd_core.engine import budget as engine_budget

    monkeypatch.setattr(engine_budget, "logits_cached", lambda *args: False)
    budgets, run = engine_budget.BudgetCache(), resolve_run(RunConfig(**SMALL))
    first = budgets(run)
    assert first.fixed_images == 70_000 and budgets(run) is not first  # (kept once the logits are cached)
