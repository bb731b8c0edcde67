"""How long the stack pool holds its lock to plan a classroom rush, before and after the budget is kept per run.

    .venv/bin/python bench/plan_lock.py [--rounds 7] [--visitors 30] [--json out.json]

The rush of bench/classroom.py's "temperatures" load: N visitors with T = 0.5 … 0.5·N and the app's defaults, plus
one probe on other seeds, as one pending group; `plan` splits it into stacks, as StackPool._start_ready does while
it holds the lock every other request's events wait on. Each round times one plan with the app's old budget check
(engine_budget.check_cpu_budget for every grid, as app.stack_fits did) and one with the new (a BudgetCache, counted per
request before it joins, as StackPool's `warm` does, outside the lock), in alternating order, fresh seeds each
round; it reports the median seconds under the lock of each and their ratio. No training, no server: a focused
measure that a busy machine slows about equally on both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kd_core.engine import budget as engine_budget  # noqa: E402
from kd_core.engine import train  # noqa: E402
from kd_core.run import resolve_run  # noqa: E402
from kd_core.serve import settings  # noqa: E402
from kd_core.serve.plan import Member, Stack, plan, stack_key  # noqa: E402
from kd_core.serve.stack_pool import MAX_STACK_STUDENTS  # noqa: E402


def rush(visitors: int, seed: int) -> list:
    """The temperatures load's runs, resolved as the app's handler does, and its probe on other seeds."""
    base = dict(alpha=0.9, epochs=20, lr=3e-3, student="mlp-small", train_size=1000, hide_class="none")
    runs = [resolve_run(settings.make_config(temperature=0.5 * (i + 1), seed=seed, **base)) for i in range(visitors)]
    return [*runs, resolve_run(settings.make_config(temperature=4.0, seed=seed + 100, **base))]


def pending(runs: list) -> Stack:
    group = Stack(stack_key(runs[0]), runs[0].replace(repeats=1))
    for run in runs:
        member = Member(run, tuple(train.roles(run.config)))
        group.add(member)
        member.stack = group
    return group


def old_fits(run, seeds: int, roles: int) -> bool:
    try:
        engine_budget.check_cpu_budget(run, repeats=seeds, students_per_seed=roles)
    except ValueError:
        return False
    return True


def timed_plan(runs: list, fits, parallel: int) -> tuple[float, list]:
    group = pending(runs)
    start = time.perf_counter()
    stacks = plan(group, parallel, MAX_STACK_STUDENTS, fits)
    return time.perf_counter() - start, [(len(s.seeds), len(s.roles)) for s in stacks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=2, help="the machine's cores (the app's PARALLEL)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    timings = {"old": [], "new": [], "warm": []}
    plans = set()
    for round_ in range(args.rounds):
        runs = rush(args.visitors, seed=1000 * (round_ + 1))  # fresh seeds: nothing kept from the last round
        budgets = engine_budget.BudgetCache()

        def new_fits(run, seeds: int, roles: int, budgets=budgets) -> bool:
            budget = budgets(run)
            return budget is None or budget.needed(seeds, roles) <= budget.max_tflop

        for side in (("old", "new") if round_ % 2 == 0 else ("new", "old")):
            if side == "new":
                start = time.perf_counter()
                for run in runs:  # StackPool.events: each request, before it joins, outside the lock
                    budgets(run)
                timings["warm"].append(time.perf_counter() - start)
            seconds, stacks = timed_plan(runs, old_fits if side == "old" else new_fits, args.parallel)
            timings[side].append(seconds)
            plans.add((side, tuple(stacks)))
    old, new = statistics.median(timings["old"]), statistics.median(timings["new"])
    report = {"visitors": args.visitors, "rounds": args.rounds, "parallel": args.parallel,
              "plans": sorted({stacks for _, stacks in plans}),
              "old_lock_s": timings["old"], "new_lock_s": timings["new"], "warm_outside_lock_s": timings["warm"],
              "median_old_s": old, "median_new_s": new, "ratio_new_over_old": new / old}
    print(f"plan of {args.visitors} + 1 requests, {args.rounds} rounds: under the lock median {old:.4f} s with the "
          f"old budget check, {new:.4f} s with the kept budget (ratio {new / old:.4f}); the budgets' count before "
          f"joining, outside the lock: median {statistics.median(timings['warm']):.4f} s per rush; "
          f"plans {report['plans']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if len(report["plans"]) == 1 else 1  # both checks must plan the same stacks


if __name__ == "__main__":
    raise SystemExit(main())
