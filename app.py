"""KD Playground, the Gradio app: process settings, the services every visitor shares, and the page.

The page lives in kd_core.ui (one module per tab); the logic in the rest of kd_core. This file makes what one
process holds once: the malloc arenas, the shared runs and sweeps, the stack pool that owns every training slot
(on ZeroGPU's GPU where there is one), and Gradio's launch options. `import app` builds the page without starting
a server or loading the dataset; `python app.py` serves it.
API (gradio_client): /distill, /predict, /predict_sketch, /soften, /sweep, /class_board; see docs/api.md.
"""

from __future__ import annotations

import ctypes
import os

from kd_core import ui
from kd_core.engine.budget import BudgetCache
from kd_core.engine.loop import resolve_device, train_stack
from kd_core.models.checkpoints import CHECKPOINT_DIR
from kd_core.run import Run
from kd_core.serve import own_data, shared_runs, stack_pool
from kd_core.serve.zerogpu import on_gpu


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc gives each allocating thread a malloc arena of its own (up to 8 per core) and seldom returns their
    free pages: under mixed load the server's resident memory kept climbing (tests/test_soak.py), and with 2
    arenas it levels off. Whether it was set (False off glibc)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, arenas))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


limit_malloc_arenas()  # before the server's threads start
# training slots of the one pool (kd_core.serve.stack_pool.SLOTS): Train-tab stacks, sweeps and Your-data teachers
# all take one; others queue. Compatible Starts (differing only in T, α, methods, their
# weights or seeds) train as one stack of up to stack_pool.MAX_STACK_STUDENTS students (kd_core/serve/stack_pool.py),
# so a classroom trying its own settings is one or two stacks, not thirty runs. Under the 3-minute mixed soak
# (tests/test_soak.py) 8 runs at once left the server too busy to answer 3 of 81 cancels within gradio_client's
# timeout, 4 answered all: 4 is the default; $KD_CONCURRENT_RUNS overrides
CONCURRENT_RUNS = int(os.environ.get("KD_CONCURRENT_RUNS", stack_pool.SLOTS))
TRAINING_VISITORS = 32  # /distill and /sweep calls served at once (each holds a thread); more wait in Gradio
# identical requests share one run (and replay one of the last 8 finished); every distinct request goes on to
# POOL, which holds training to CONCURRENT_RUNS stacks and tells those who wait their place and an estimated wait
RUNS = shared_runs.SharedRuns(max_running=TRAINING_VISITORS, keep_finished=8)
SWEEPS = shared_runs.SharedRuns(max_running=TRAINING_VISITORS, keep_finished=8)  # each takes a slot of POOL
SESSIONS_KEPT = 200  # sessions whose widgets and students the server holds (Gradio's default: 10,000)
# (every s, older than s): Gradio's copies of the files it serves (run logs, students, uploads, previews) are
# deleted 60 to 70 minutes after they were made (the example pictures are kept): a finished run stays
# downloadable for an hour and the disk holds about an hour of files; without it Gradio keeps every copy until
# the server stops (0.4 MB per run)
CACHE_CLEANUP = (600, 3600)

# ---- ZeroGPU (kd_core.serve.zerogpu): the only code that touches the GPU, one call per stack however many visitors'
# runs it trains (a sweep is a stack of its own); what it yields (the engine's events, the students on the CPU)
# is plain CPU data. Each call declares the GPU time its stack needs; one over a call's cap is refused, saying
# what to lower; one ZeroGPU refuses (quota, no GPU) trains on the CPU in a fresh process, saying so
train_on_device = on_gpu(train_stack)


BUDGETS = BudgetCache()  # each request's CPU budget, counted once before it joins the pool (StackPool's `warm`)


def stack_fits(run: Run, seeds: int, roles: int) -> bool:
    """Whether a stack of seeds × roles stays within the CPU budget each run is held to (a stack beyond it would
    train long enough to reach the time cap, and its visitors' results would differ from their solo runs'). The
    pool asks for every grid it considers while it holds its lock: the budget is BUDGETS', so each ask is
    arithmetic."""
    budget = BUDGETS(run)
    return budget is None or budget.needed(seeds, roles) <= budget.max_tflop


# a CPU trains a stack on one thread, so a classroom's stacks are balanced over its cores; a GPU (ZeroGPU's
# included) trains one big stack fastest
PARALLEL = 1 if train_on_device is not train_stack or resolve_device("auto").type == "cuda" else len(
    os.sched_getaffinity(0))
POOL = stack_pool.StackPool(train=train_on_device, max_running=CONCURRENT_RUNS, fits=stack_fits, parallel=PARALLEL,
                            warm=BUDGETS)
SERVICES = ui.Services(runs=RUNS, sweeps=SWEEPS, pool=POOL,
                       training_visitors=TRAINING_VISITORS, concurrent_runs=CONCURRENT_RUNS)

demo = ui.build(SERVICES, delete_cache=CACHE_CLEANUP)

LAUNCH_OPTIONS = {"css": ui.CSS, "allowed_paths": [str(CHECKPOINT_DIR / "examples")],
                  # uploads above this are refused by Gradio before any handler (Your data's zips: 50 MB)
                  "max_file_size": f"{own_data.sources.SPACE_LIMITS.upload_bytes // 2**20}mb",
                  # beyond this many sessions, the least recently used one is forgotten (its Predict tab
                  # falls back to the shipped students): a bound on the memory that open tabs can hold
                  "state_session_capacity": SESSIONS_KEPT,
                  # Gradio's 40 threads stay for Predict, Dark knowledge and the rest: training visitors hold
                  # one each while they wait for their run's next update
                  "max_threads": 40 + TRAINING_VISITORS}

if __name__ == "__main__":
    demo.launch(**LAUNCH_OPTIONS)
