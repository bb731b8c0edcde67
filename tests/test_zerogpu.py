"""kd_core.serve.zerogpu: the GPU time a call declares, the visitor's line for each ZeroGPU refusal, the CPU fallback,
and that nothing touches CUDA outside the decorated call."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kd_core.config import CPU_MAX_TFLOP, RunConfig
from kd_core.engine.loop import StackFinished, StackStarted, train_stack
from kd_core.engine.roles import METHODS
from kd_core.engine.sweep import parse_values
from kd_core.engine.train import roles
from kd_core.models import zoo as models
from kd_core.run import as_run
from kd_core.serve import settings, zerogpu
from kd_core.serve.zerogpu import CAP_SECONDS, Work
from kd_core.views.sweep import SweepView

ROOT = Path(__file__).resolve().parent.parent
TINY = RunConfig(train_size=500, epochs=1, repeats=1, evaluations=2)  # trains in a few seconds
BIGGEST = RunConfig(student="cnn-tiny", train_size=0, epochs=settings.MAX_APP_EPOCHS, repeats=8,
                    methods=tuple(METHODS), unlabeled=max(settings.UNLABELED_SIZES))  # the app's largest run
# what the app declares (docs/zerogpu.md shows this table)
DECLARED = {"Defaults: 1,000 images, KD beats CE": 20, "Full data: no gain here": 25,
            "The teacher labels images for the student": 35, "Hidden class: no dresses for the students": 20,
            "Methods side by side: KD, DKD, DIST, hint, cosine": 20, "Seed script: T=3.5, α=0.6": 20,
            "Pure CE (α=0): twin students": 20}


def default_sweep() -> tuple[RunConfig, list[float], list[float]]:
    s = settings.SWEEP_DEFAULTS
    return (settings.sweep_config(s["epochs"], s["train_size"], s["repeats"]),
            parse_values("temperatures", s["temperatures"]), parse_values("alphas", s["alphas"]))


# ------------------------------------------------------------------------------------------ durations

def test_the_defaults_every_preset_and_the_default_sweep_declare_well_under_a_minute():
    assert {name: zerogpu.duration(settings.preset(name)) for name in settings.PRESETS} == DECLARED
    assert zerogpu.duration(RunConfig()) == DECLARED["Defaults: 1,000 images, KD beats CE"]
    assert zerogpu.sweep_duration(*default_sweep()) == 20
    assert max(DECLARED.values()) <= 40


def test_the_readme_table_shows_what_the_app_declares():
    section = (ROOT / "docs/zerogpu.md").read_text()
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "|---" not in line]
    declared = {row[0].strip(): int(row[3]) for row in rows if len(row) > 3 and row[3].strip().isdigit()}
    sweep = next(name for name in declared if name.startswith("Sweep defaults"))
    assert declared == {**DECLARED, sweep: zerogpu.sweep_duration(*default_sweep())}


def test_the_declared_duration_never_exceeds_the_cap():
    assert zerogpu.gpu_seconds(BIGGEST) > CAP_SECONDS
    assert zerogpu.duration(BIGGEST) == CAP_SECONDS
    cfg, temperatures, alphas = default_sweep()
    many = [float(t) for t in range(1, 6)]
    assert zerogpu.sweep_duration(cfg.replace(train_size=0, repeats=8), many, many) == CAP_SECONDS


def test_the_estimate_follows_its_formula():
    assert zerogpu.estimate_seconds(Work(steps=0, evaluations=0, flops=0.0)) == 15  # 1.5 × 10 s start-up
    # 1.5 × (10 + 0.005 × 1,000 + 2e12 / 1e12) = 25.5, rounded up to 30
    assert zerogpu.estimate_seconds(Work(steps=990, evaluations=10, flops=2e12)) == 30
    work = zerogpu.stack_work(RunConfig())  # 4 steps × 20 epochs; CE + KD × 5 seeds, 3 × forward per sample
    evaluated = 500 * 13 + 5_000 + 10_000
    assert (work.steps, work.evaluations) == (80, 15)
    assert work.flops == 10 * models.flops_per_sample(models.build("mlp-small"), (1, 28, 28)) * (3 * 20_000 + evaluated)


@pytest.mark.parametrize("student", models.STUDENTS)
def test_flop_counter_agrees_with_the_zoo_count(student):
    shape = (3, 32, 32) if student.startswith("resnet") else (1, 28, 28)
    dataset = "cifar10" if shape[0] == 3 else "fashion-mnist"
    assert zerogpu.student_flops(student, dataset) == models.flops_per_sample(models.build(student, shape), shape)


def test_a_run_over_the_cap_is_beyond_the_cpu_budget_too():
    """Why such a run is refused, not sent to the CPU: the app's longest run in steps, with a CPU budget's
    worth of FLOPs, still fits the cap."""
    longest = zerogpu.stack_work(BIGGEST.replace(student="mlp-tiny", repeats=1, methods=("kd",)))
    assert longest.steps == 4300
    assert zerogpu.estimate_seconds(Work(longest.steps, longest.evaluations, CPU_MAX_TFLOP * 1e12)) <= CAP_SECONDS


@pytest.mark.parametrize("base", [RunConfig(), settings.preset("Full data: no gain here"),
                                  settings.preset("The teacher labels images for the student")])
def test_more_epochs_seeds_methods_or_images_never_declare_less(base):
    def never_less(configs):
        seconds = [zerogpu.gpu_seconds(cfg) for cfg in configs]
        assert seconds == sorted(seconds)
        assert [min(CAP_SECONDS, s) for s in seconds] == [zerogpu.duration(cfg) for cfg in configs]

    never_less([base.replace(epochs=e) for e in range(1, settings.MAX_APP_EPOCHS + 1)])
    never_less([base.replace(repeats=r) for r in range(1, 9)])
    never_less([base.replace(methods=tuple(METHODS)[:n]) for n in range(1, len(METHODS) + 1)])
    never_less([base.replace(train_size=n) for n in sorted(settings.TRAIN_SIZES[1:]) + [0]])
    never_less([base.replace(unlabeled=n) for n in settings.UNLABELED_SIZES])
    cfg, _, _ = default_sweep()
    grids = [zerogpu.sweep_gpu_seconds(cfg.replace(epochs=base.epochs), [float(t) for t in range(1, n + 1)], [0.5])
             for n in range(1, 8)]
    assert grids == sorted(grids)


def test_a_stack_of_visitors_is_counted_as_its_roles_times_its_seeds():
    cfg = RunConfig()
    alone = zerogpu.stack_work(cfg).flops  # CE + KD × 5 seeds
    kd_and_dkd = roles(cfg.replace(methods=("kd", "dkd")))  # two visitors' runs sharing CE: 3 roles
    assert zerogpu.stack_work(cfg, kd_and_dkd, seeds=range(5)) == zerogpu.stack_work(cfg.replace(methods=("kd", "dkd")))
    assert zerogpu.stack_work(cfg, roles(cfg), seeds=range(10)).flops == 2 * alone  # other visitors' seeds too
    assert zerogpu.duration(cfg, roles(cfg), seeds=range(5)) == zerogpu.duration(cfg)
    assert [zerogpu.gpu_seconds(cfg, kd_and_dkd, range(n)) for n in range(1, 9)] == sorted(
        zerogpu.gpu_seconds(cfg, kd_and_dkd, range(n)) for n in range(1, 9))


# ---------------------------------------------------------------------- the decorator, off Spaces

def test_spaces_gpu_is_given_a_callable_and_off_spaces_hands_the_run_back(monkeypatch):
    spaces = pytest.importorskip("spaces")
    given = []
    real = spaces.GPU
    monkeypatch.setattr(spaces, "GPU", lambda **kwargs: given.append(kwargs) or real(**kwargs))

    def run(cfg):
        yield cfg

    assert zerogpu.on_gpu(run) is run
    assert zerogpu.on_gpu(run, zerogpu.sweep_duration) is run
    assert [sorted(kwargs) for kwargs in given] == [["duration"], ["duration"]]
    assert given[0]["duration"] is zerogpu.duration and given[1]["duration"] is zerogpu.sweep_duration
    assert given[0]["duration"](RunConfig(), roles(RunConfig()), seeds=range(5)) == 20


def test_without_the_spaces_package_the_run_is_handed_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError

    def run(cfg):
        yield cfg

    assert zerogpu.on_gpu(run) is run


def results(events: list) -> tuple:
    """A run's results as two runs with the same config share them: every accuracy of every seed and role."""
    result = events[-1].result
    assert isinstance(events[-1], StackFinished)
    return result.device, result.test_acc, result.val_acc, result.agreement


def test_the_apps_training_functions_are_the_engines_off_spaces():
    pytest.importorskip("spaces")
    import app

    assert app.train_on_device is train_stack  # stacks, sweeps included, train through it in the pool's slots


# -------------------------------------------------------------------- ZeroGPU's refusals, stood in for

def zerogpu_error(title: str, message: str) -> Exception:
    """The error the `spaces` package raises (a gr.Error with a title), as spaces/zero/gradio.py makes it."""
    import gradio as gr

    return gr.Error(message, title=title, print_exception=False)


QUOTA = ("ZeroGPU quota exceeded", "You have exceeded your free ZeroGPU quota (20s requested vs. 8s left). "
                                   "Try again in 21:13:03. ")
ILLEGAL = ("ZeroGPU illegal duration", "The requested GPU duration (20s) is larger than the maximum allowed")
NO_GPU = ("ZeroGPU client error", "No GPU was available")
QUEUE_TIMEOUT = ("ZeroGPU quota exceeded", "No GPU was available after 60s. Try re-running outside of examples if "
                                           "it happened after clicking one")
LINES = {
    QUOTA: "ZeroGPU: the 20 s of GPU time this run asks for are more than your daily quota has left (about 2 "
           "minutes a day without login, 3.5 with a free Hugging Face account); log in, wait for the quota to "
           "refill, or lower the epochs, seeds or training images",
    ILLEGAL: "ZeroGPU: 20 s of GPU time is more than your account may reserve for one run; log in, or lower the "
             "epochs, seeds or training images",
    NO_GPU: "ZeroGPU: no GPU is free right now; try again in a minute",
    QUEUE_TIMEOUT: "ZeroGPU: no GPU is free right now; try again in a minute",
}


class StandIn:
    """A stand-in for `spaces.GPU`: the decorated call raises `error` after yielding `before` items."""

    def __init__(self, error: Exception, before: int = 0) -> None:
        self.error, self.before, self.durations, self.calls = error, before, [], []

    def __call__(self, *, duration):
        self.durations.append(duration)
        return self.decorate

    def decorate(self, run):
        def on_gpu(*args, **kwargs):
            self.calls.append(args)
            items = run(*args, **kwargs)
            for _ in range(self.before):
                yield next(items)
            items.close()
            raise self.error

        return on_gpu


@pytest.mark.parametrize("refusal", list(LINES))
def test_each_refusal_reaches_the_visitor_as_its_one_line(refusal):
    stand_in = StandIn(zerogpu_error(*refusal))
    run = zerogpu.on_gpu(train_stack, gpu=stand_in, cpu_fallback=False)
    with pytest.raises(ValueError) as raised:
        next(run(as_run(TINY), roles(TINY)))
    assert str(raised.value) == LINES[refusal]
    assert stand_in.durations == [zerogpu.duration] and len(stand_in.calls) == 1


def test_a_refused_run_trains_on_the_cpu_with_the_same_results_saying_why():
    stand_in = StandIn(zerogpu_error(*QUOTA))
    events = list(zerogpu.on_gpu(train_stack, gpu=stand_in)(as_run(TINY), roles(TINY), seeds=(0, 1)))
    started = next(event for event in events if isinstance(event, StackStarted))
    assert started.notes[-1] == f"{LINES[QUOTA]}; training on the CPU instead"  # shown in the status line
    assert results(events) == results(list(train_stack(as_run(TINY.replace(device="cpu")), roles(TINY), seeds=(0, 1))))
    assert results(events)[0] == "cpu"


def test_a_refused_sweep_says_so_in_its_status_line():
    frame = None
    view = SweepView("epoch 1/20", None, frame, False)
    assert zerogpu.noted(view, "ZeroGPU: no GPU is free right now").status == (
        "epoch 1/20 · ZeroGPU: no GPU is free right now")
    assert zerogpu.noted("anything else", "a note") == "anything else"


def test_gpu_time_running_out_mid_run_is_one_line_and_no_second_run():
    stand_in = StandIn(zerogpu_error("ZeroGPU worker error", "GPU task aborted"), before=2)
    events, run = [], zerogpu.on_gpu(train_stack, gpu=stand_in)(as_run(TINY), roles(TINY))
    with pytest.raises(ValueError) as raised:
        events.extend(run)
    assert str(raised.value) == ("ZeroGPU stopped this run before it finished (it may have used up its 20 s of GPU "
                                 "time); lower the epochs, seeds or training images and start again")
    assert len(events) == 2 and isinstance(events[0], StackStarted) and events[0].notes == ()


def test_other_errors_pass_through_unchanged():
    for error in (ValueError("lr must be a number in (0, 1]; got 2"),
                  zerogpu_error("ZeroGPU worker error", "KeyError")):
        with pytest.raises(type(error)) as raised:
            list(zerogpu.on_gpu(train_stack, gpu=StandIn(error))(as_run(TINY), roles(TINY)))
        assert raised.value is error


def test_a_run_over_the_cap_is_refused_before_the_call():
    stand_in = StandIn(zerogpu_error(*QUOTA))
    with pytest.raises(ValueError) as raised:
        next(zerogpu.on_gpu(train_stack, gpu=stand_in)(BIGGEST, roles(BIGGEST)))
    assert str(raised.value) == (f"this run needs about {zerogpu.gpu_seconds(BIGGEST)} s of GPU time, over the 120 s "
                                 f"one ZeroGPU call may reserve; lower the epochs, seeds, methods, training or "
                                 f"transfer images, or pick a smaller student")
    assert stand_in.calls == []


def test_the_run_keeps_the_callers_context_in_a_worker_thread():
    visitor = contextvars.ContextVar("visitor", default=None)

    def run(cfg):
        yield visitor.get()
        yield visitor.get()

    visitor.set("visitor 1")
    in_context = zerogpu.in_caller_context(run)
    visitor.set(None)
    seen = []
    worker = threading.Thread(target=lambda: seen.extend(in_context(TINY)))
    worker.start()
    worker.join()
    assert seen == ["visitor 1", "visitor 1"]
    assert list(run(TINY)) == [None, None]


def test_a_train_tab_stack_runs_in_its_first_visitors_context():
    """The Train tab's path: the handler, the shared run's thread, the live run, the stack pool, then the stack's
    thread, which is where ZeroGPU looks for the visitor's request."""
    from kd_core.serve import shared_runs, stack_pool
    from kd_core.ui.common import live_run_here
    from kd_core.views import joined

    visitor = contextvars.ContextVar("visitor", default=None)
    seen = []

    def engine(cfg, stack_roles, seeds):
        seen.append(visitor.get())
        yield from train_stack(cfg, stack_roles, seeds=seeds)

    pool = stack_pool.StackPool(train=engine, window_s=0.1)
    visitor.set("visitor 1")
    views = list(joined.join_run(shared_runs.SharedRuns(max_running=2), TINY, live_run_here(pool),
                                      key="context test"))
    assert seen == ["visitor 1"] and views[-1].table is not None


# ------------------------------------------------------------------------------------------- CUDA

NO_CUDA = """
import torch
calls = []
torch.cuda._lazy_init = lambda: calls.append("CUDA initialised")  # what creating any CUDA tensor calls first
torch.cuda.is_available, torch.cuda.device_count = lambda: True, lambda: 1  # as ZeroGPU patches them outside a call
import app
from kd_core.views import run_view
from kd_core.serve import settings
from kd_core.serve import zerogpu
from tests.test_zerogpu import QUOTA, TINY, StandIn, default_sweep, zerogpu_error
[zerogpu.duration(settings.preset(name)) for name in settings.PRESETS]
zerogpu.sweep_duration(*default_sweep())
refused = zerogpu.on_gpu(app.train_on_device, gpu=StandIn(zerogpu_error(*QUOTA)))
views = list(run_view.live_run(TINY, train=refused))  # as the app's run thread does, the pool aside
assert views[-1].table is not None and any("training on the CPU instead" in view.status for view in views)
print(calls)
"""


def test_nothing_touches_cuda_outside_the_decorated_call():
    """Importing the app, declaring durations and the CPU fallback never initialise CUDA (ZeroGPU forbids
    it outside a GPU call), even where torch says a GPU is there, as ZeroGPU's patches say outside a call."""
    done = subprocess.run([sys.executable, "-c", NO_CUDA], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_stop_during_the_cpu_fallback_ends_its_process(monkeypatch):
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(zerogpu.subprocess, "Popen", lambda *args, **kwargs: started.append(popen(*args, **kwargs))
                        or started[-1])
    events = zerogpu.on_gpu(train_stack, gpu=StandIn(zerogpu_error(*NO_GPU)))(as_run(TINY), roles(TINY))
    assert next(events).notes == (f"{LINES[NO_GPU]}; training on the CPU instead",)
    events.close()  # what Stop does
    assert len(started) == 1 and started[0].poll() is not None


# ------------------------------------------------------------------------------------------ a classroom

class Counting:
    """A stand-in for `spaces.GPU` that runs the call and counts it (one ZeroGPU call charged per call)."""

    def __init__(self) -> None:
        self.calls, self.lock = [], threading.Lock()

    def __call__(self, *, duration):
        return self.decorate

    def decorate(self, run):
        def on_gpu(*args, **kwargs):
            with self.lock:
                self.calls.append(len(args[1]) * len(kwargs["seeds"]))  # the call's students
            yield from run(*args, **kwargs)

        return on_gpu


def test_a_rush_of_30_pooled_visitors_costs_at_most_3_gpu_calls():
    """30 classmates with T = 0.5 … 15 pressing Start together, through the app's path (shared runs, the live
    run, the stack pool as the app makes it on a GPU: parallel 1), ZeroGPU stood in for."""
    from kd_core.serve import shared_runs, stack_pool
    from kd_core.ui.common import live_run_here
    from kd_core.views import joined

    gpu = Counting()
    pool = stack_pool.StackPool(train=zerogpu.on_gpu(train_stack, gpu=gpu), parallel=1)
    runs = shared_runs.SharedRuns(max_running=32)
    results, errors = {}, []

    def visitor(T: float) -> None:
        try:
            views = list(joined.join_run(runs, resolved[T], live_run_here(pool)))
            results[T] = views[-1].students.summary
        except Exception as error:  # noqa: BLE001 -- collected, asserted below
            errors.append(error)

    temperatures = [0.5 * i for i in range(1, 31)]
    # resolved first, as each handler does where its request enters: the 30 requests reach the pool together
    resolved = {T: as_run(TINY.replace(temperature=T)) for T in temperatures}
    threads = [threading.Thread(target=visitor, args=(T,)) for T in temperatures]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    pool.shutdown()
    assert errors == [] and sorted(results) == temperatures
    assert all(results[T]["config"]["temperature"] == T for T in temperatures)
    assert 1 <= len(gpu.calls) <= 3, gpu.calls
    print(f"30 pooled visitors: {len(gpu.calls)} GPU call(s) of {gpu.calls} students")
    assert sum(gpu.calls) >= 31  # every visitor's KD student and CE, trained in those calls


def test_the_classroom_note_shows_on_zerogpu_only(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert zerogpu.classroom_note() == ""  # not on a Space
    monkeypatch.setenv("SPACE_ID", "teacher/kd-playground")
    monkeypatch.setenv("SPACES_ZERO_GPU", "false")
    assert zerogpu.classroom_note() == ""  # a Space on other hardware
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert "per IP address" in zerogpu.classroom_note() and "one anonymous quota" in zerogpu.classroom_note()


def test_on_zerogpu_the_first_screen_and_the_board_say_so_beside_the_sign_in(monkeypatch):
    import gradio as gr
    from gradio import oauth
    from smoke_runtime import SPACE_ENV

    import app
    from kd_core import ui

    for name, value in {**SPACE_ENV, "SPACES_ZERO_GPU": "true"}.items():  # a Space on ZeroGPU, OAuth configured
        monkeypatch.setenv(name, value)
        if hasattr(oauth, name):  # (gradio.oauth reads these once, when it is imported)
            monkeypatch.setattr(oauth, name, value)
    page = ui.build(app.SERVICES, delete_cache=app.CACHE_CLEANUP)
    blocks = list(page.blocks.values())
    notes = [b for b in blocks if isinstance(b, gr.Markdown) and b.value == zerogpu.CLASSROOM_NOTE]
    assert len(notes) == 2  # the first screen's and the board's
    intro, board = (next(b for b in blocks if getattr(b, "elem_id", None) == name) for name in ("kd-intro", "kd-board"))
    for column in (intro, board):
        inside = {id(child) for child in descendants(column)}
        assert any(id(note) in inside for note in notes)
        assert any(isinstance(child, gr.LoginButton) for child in descendants(column))
    monkeypatch.setenv("SPACES_ZERO_GPU", "false")
    plain = ui.build(app.SERVICES, delete_cache=app.CACHE_CLEANUP)
    assert not any(isinstance(b, gr.Markdown) and b.value == zerogpu.CLASSROOM_NOTE for b in plain.blocks.values())


def descendants(block) -> list:
    found = []
    for child in getattr(block, "children", []):
        found += [child, *descendants(child)]
    return found
