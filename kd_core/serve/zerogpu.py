"""ZeroGPU (Hugging Face Spaces): how long a run asks the GPU for, and what a visitor sees when ZeroGPU says no.

ZeroGPU checks a call's *declared* duration before it runs: over the visitor tier's cap it fails at once
("ZeroGPU illegal duration"), over the visitor's remaining daily quota too ("ZeroGPU quota exceeded"), and a
shorter declaration ranks higher in the queue. So `duration(cfg)` declares what this run needs, estimated from
its work (README "Deploy on ZeroGPU"), never more than `CAP_SECONDS`:

    seconds = SAFETY × (STARTUP_S + STEP_S × (steps + evaluations) + FLOPs / GPU_FLOP_PER_S), rounded up to 5 s

FLOPs: every student's training (3 × its forward FLOPs, counted by torch's FlopCounterMode on the zoo model)
over every training sample (labelled and transfer images, every epoch) and its evaluations, plus the
teacher's forward passes the run needs (its logits when they are not shipped, its features for hint and
cosine, every augmented batch). One call trains one stack (`engine.train_stack(cfg, roles, seeds=...)`):
every visitor's roles that `kd_core.serve.stack_pool` put together, for the union of their seeds, so a stack of
thirty visitors is one call, its students counted as len(roles) × len(seeds).

`on_gpu(run)` is what the app decorates its training generator with: `spaces.GPU(duration=duration)` where
the `spaces` package is installed, nothing where it is not (or off Spaces, where `spaces.GPU` hands the
function back). On ZeroGPU a run over the cap is refused before the call, saying what to lower: the app's
runs take at most 4,300 steps (21.5 s here), so one over the cap is more than 48 TFLOP, beyond the CPU's
budget (`config.CPU_MAX_TFLOP`), and the CPU is no way out for it. A run ZeroGPU refuses (quota, duration,
no GPU free) trains on the CPU instead, in a fresh process that sees no GPU, the status line saying why.
`in_caller_context(run)` keeps the visitor's Gradio request with a run that a worker thread iterates, so
that ZeroGPU charges the visitor's quota, not the Space's.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from kd_core.config import RunConfig
from kd_core.data.datasets import IMAGE_SHAPES, TRAIN_SET_SIZES, VALIDATION_SIZE
from kd_core.engine.roles import FEATURE_METHODS, Role
from kd_core.engine.run_data import LIVE_VALIDATION
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.run import Run, Teacher
from kd_core.teacher import logits as teacher

CAP_SECONDS = 120  # the longest call a visitor without login may declare (the unauthenticated tier's cap)
# A conservative rate, derived, NOT measured (no GPU was lent to measure it): ZeroGPU's default `large` slice
# is half an H200 (spaces 0.51: "NVIDIA H200 MIG 3g.71gb", 60 of 132 SMs), about 30 TFLOP/s of fp32 from
# the H100/H200's published 67; a T4 gives 8.1. Assumed: small students at batch 256 use a few per cent of
# it, so 1 TFLOP/s, 1/30 of the slice and 1/8 of a T4 (14 × this CPU's measured config.CPU_TFLOP_PER_S)
GPU_FLOP_PER_S = 1.0e12
# a training step or evaluation of the stack, launch-bound for these students: a step dispatches about 100 aten
# ops (defaults), 130 (a transfer set), 480 (five methods), counted on the CPU (bench/zerogpu_durations.py
# --ops); each is about one kernel launch, 5-10 µs on a GPU: 1-5 ms a step
STEP_S = 0.005
STARTUP_S = 10.0  # the worker's fork, the CUDA context, the data, teacher and logits moved to the GPU
SAFETY = 1.5  # on top of the estimate: the rate and the start-up are not measured on ZeroGPU
ROUND_S = 5  # declared durations are multiples of this
TEST_SET_SIZE = 10_000  # Fashion-MNIST, MNIST and CIFAR-10 alike: evaluated once at the end


# ------------------------------------------------------------------------------------- the estimate

@dataclasses.dataclass(frozen=True)
class Work:
    """What one (possibly stacked) call computes."""

    steps: int  # training steps of the stack, all epochs
    evaluations: int  # live evaluations, plus the final validation and test passes
    flops: float  # students' training and evaluation, the teacher's passes


def stack_work(cfg: Run | RunConfig, roles: Sequence[Role] | None = None, seeds: Sequence[int] | None = None,
               grid: int = 0) -> Work:
    """The work of one call: `roles` (default: CE and cfg's methods, or CE and `grid` KD students for a sweep)
    for every one of `seeds` (default: cfg's repeats), over cfg's data. A resolved run's teacher is read from the
    run; a bare config's (the declared durations' table) is looked up."""
    teacher = cfg.teacher if isinstance(cfg, Run) else None
    cfg = cfg.config if isinstance(cfg, Run) else cfg
    steps, samples = _samples(cfg)
    per_seed = len(roles) if roles is not None else 1 + (grid or len(cfg.methods))
    students = per_seed * (len(seeds) if seeds is not None else cfg.repeats)
    methods = {role.method for role in roles} if roles is not None else set(cfg.methods)
    evaluated = LIVE_VALIDATION * (cfg.evaluations + 1) + VALIDATION_SIZE + TEST_SET_SIZE
    flops = students * student_flops(cfg.student, cfg.dataset) * (3 * samples + evaluated)
    return Work(steps, cfg.evaluations + 3, flops + _teacher_flops(cfg, methods, students // per_seed, teacher))


def _labelled(cfg: RunConfig) -> int:
    """Labelled training images, an upper bound (a hidden class is not subtracted): no data is loaded."""
    available = TRAIN_SET_SIZES[cfg.dataset] - VALIDATION_SIZE
    return min(cfg.train_size, available) if cfg.train_size else available


def _samples(cfg: RunConfig) -> tuple[int, int]:
    """(training steps, training samples of one student), as the engine walks the data."""
    labelled = _labelled(cfg)
    if cfg.unlabeled:  # both streams every step, ceil(longer stream / batch) steps per epoch
        steps = math.ceil(max(labelled, cfg.unlabeled) / cfg.batch_size) * cfg.epochs
        return steps, steps * (min(cfg.batch_size, labelled) + min(cfg.batch_size, cfg.unlabeled))
    return math.ceil(labelled / cfg.batch_size) * cfg.epochs, labelled * cfg.epochs


def _teacher_flops(cfg: RunConfig, methods: set[str], seeds: int, resolved: Teacher | None = None) -> float:
    """The teacher's forward passes: its logits when none are shipped beside the checkpoint, its features
    for the feature methods (cached or not: an upper bound), every augmented batch of every seed."""
    path = resolved.path if resolved else checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    samples = 0
    if not teacher.logits_paths(path, key="")[0].is_file():  # the shipped copy's name has no key in it
        samples += TRAIN_SET_SIZES[cfg.dataset] + TEST_SET_SIZE
    if methods & set(FEATURE_METHODS):
        samples += min(TRAIN_SET_SIZES[cfg.dataset], (_labelled(cfg) + cfg.unlabeled) * seeds)
    if cfg.augment:
        samples += _samples(cfg)[1] * seeds
    if not samples:
        return 0.0
    meta = resolved.meta if resolved else checkpoints.read_metadata(path)
    return samples * _forward_flops(meta["arch"], IMAGE_SHAPES[cfg.dataset])


def student_flops(name: str, dataset: str) -> int:
    """Forward FLOPs of one sample through the student `name` on `dataset`'s images."""
    return _forward_flops(name, IMAGE_SHAPES[dataset])


@functools.cache
def _forward_flops(arch: str, shape: tuple[int, int, int]) -> int:
    """FlopCounterMode's count of one forward pass, on the meta device: no weights, no RNG draw, no CUDA."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = models.build(arch, shape, 10).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *shape))
    return counter.get_total_flops()


def estimate_seconds(work: Work) -> int:
    """GPU seconds to declare for `work`, uncapped: the formula of the module docstring."""
    seconds = STARTUP_S + STEP_S * (work.steps + work.evaluations) + work.flops / GPU_FLOP_PER_S
    return ROUND_S * math.ceil(SAFETY * seconds / ROUND_S)


def gpu_seconds(cfg: Run | RunConfig, roles: Sequence[Role] | None = None, seeds: Sequence[int] | None = None) -> int:
    """Estimated GPU seconds of one call training `roles` × `seeds` (default: cfg's run), uncapped."""
    return estimate_seconds(stack_work(cfg, roles, seeds))


def sweep_gpu_seconds(cfg: RunConfig, temperatures: Sequence[float], alphas: Sequence[float]) -> int:
    """Estimated GPU seconds of a sweep: CE plus a KD student per (T, α) cell for every seed, uncapped."""
    return estimate_seconds(stack_work(cfg, grid=len(set(temperatures)) * len(set(alphas))))


def duration(cfg: Run | RunConfig, roles: Sequence[Role] | None = None, *args: Any,
             seeds: Sequence[int] | None = None, cap: float = CAP_SECONDS, **kwargs: Any) -> int:
    """What `spaces.GPU(duration=...)` is given for `engine.train_stack(run, roles, seeds=...)`: the call's
    estimate, at most `cap`. ZeroGPU calls it with the decorated function's arguments; others are ignored."""
    return int(min(cap, gpu_seconds(cfg, roles, seeds)))


def sweep_duration(cfg: RunConfig, temperatures: Sequence[float], alphas: Sequence[float], *args: Any,
                   cap: float = CAP_SECONDS, **kwargs: Any) -> int:
    """`duration` for the sweep's decorated function (cfg, temperatures, alphas)."""
    return int(min(cap, sweep_gpu_seconds(cfg, temperatures, alphas)))


def check_fits(seconds: int) -> None:
    """ValueError, saying what to lower, when a run needs more GPU time than one ZeroGPU call may have."""
    if seconds > CAP_SECONDS:
        raise ValueError(f"this run needs about {seconds} s of GPU time, over the {CAP_SECONDS} s one ZeroGPU "
                         f"call may reserve; lower the epochs, seeds, methods, training or transfer images, or "
                         f"pick a smaller student")


# ------------------------------------------------------------------------------ ZeroGPU's refusals

QUOTA, ILLEGAL_DURATION, NO_GPU, ABORTED = "quota exceeded", "illegal duration", "no GPU", "aborted"


def refusal(error: BaseException) -> str | None:
    """Which ZeroGPU refusal `error` is (QUOTA, ILLEGAL_DURATION, NO_GPU, ABORTED), or None for any other error.

    The `spaces` package raises each as a gr.Error with a title (spaces/zero/client.py, wrappers.py): read by
    attribute, so that kd_core needs no Gradio. A queue that gave no GPU within 60 s comes titled "quota
    exceeded" for a visitor without login, so the message is looked at first."""
    title, message = str(getattr(error, "title", "")), str(getattr(error, "message", error))
    if not title.startswith("ZeroGPU"):
        return None
    if "No GPU was available" in message or title in ("ZeroGPU queue timeout", "ZeroGPU pending credits exceeded"):
        return NO_GPU
    if title == "ZeroGPU illegal duration":
        return ILLEGAL_DURATION
    if title == "ZeroGPU quota exceeded":
        return QUOTA
    if title == "ZeroGPU worker error" and message == "GPU task aborted":
        return ABORTED
    return None


def visitor_line(kind: str, seconds: int) -> str:
    """The one line a visitor reads for a refusal of a call that declared `seconds`: what happened, what to do."""
    return {
        QUOTA: f"ZeroGPU: the {seconds} s of GPU time this run asks for are more than your daily quota has left "
               f"(about 2 minutes a day without login, 3.5 with a free Hugging Face account); log in, wait for "
               f"the quota to refill, or lower the epochs, seeds or training images",
        ILLEGAL_DURATION: f"ZeroGPU: {seconds} s of GPU time is more than your account may reserve for one run; "
                          f"log in, or lower the epochs, seeds or training images",
        NO_GPU: "ZeroGPU: no GPU is free right now; try again in a minute",
        ABORTED: f"ZeroGPU stopped this run before it finished (it may have used up its {seconds} s of GPU "
                 f"time); lower the epochs, seeds or training images and start again",
    }[kind]


# ------------------------------------------------------------------------------------- a classroom

# ZeroGPU counts a visitor without login by IP address: a class behind one school connection is one visitor
CLASSROOM_NOTE = ("**ZeroGPU counts its free GPU quota per IP address**: a class behind one school connection shares "
                  "one anonymous quota (about 2 minutes of GPU a day). Sign in with Hugging Face and each of you "
                  "trains on your own quota; classmates' runs that differ only in T, α, methods or seeds train "
                  "together as one GPU call.")


def zerogpu_active() -> bool:
    """Whether this process serves a Space on ZeroGPU hardware (SPACE_ID and SPACES_ZERO_GPU, as `spaces` reads
    them)."""
    return bool(os.environ.get("SPACE_ID")) and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def classroom_note() -> str:
    """What the first screen and the board say on ZeroGPU (beside the sign-in button); "" elsewhere."""
    return CLASSROOM_NOTE if zerogpu_active() else ""


# ---------------------------------------------------------------------------------- the app's wrapper

def on_gpu(run: Callable[..., Iterator], duration_of: Callable[..., int] = duration, *,
           gpu: Callable[..., Callable] | None = None, cpu_fallback: bool = True) -> Callable[..., Iterator]:
    """`run` (a generator function whose first argument is the RunConfig, importable by name: the CPU fallback
    runs it in another process) for ZeroGPU.

    `gpu`: the decorator factory, `spaces.GPU` when the package is installed (tests pass a stand-in). Where
    there is none, or where it hands `run` back (off Spaces), `run` itself is returned, unchanged. Else each
    call first refuses a run over CAP_SECONDS (ValueError, what to lower), then runs on the GPU; when ZeroGPU
    refuses the call before the run's first item, the same run trains on the CPU, each item's status line
    saying why (`cpu_fallback=False`: a ValueError with that line instead); a refusal after it (the GPU time
    ran out) is a ValueError with its line. `duration_of(*args, cap=...)`: `duration` or `sweep_duration`.
    """
    gpu = _spaces_gpu() if gpu is None else gpu
    decorated = run if gpu is None else gpu(duration=duration_of)(run)
    if decorated is run:
        return run

    @functools.wraps(run)
    def on_zerogpu(*args: Any, **kwargs: Any) -> Iterator:
        needed = duration_of(*args, cap=math.inf, **kwargs)
        check_fits(needed)
        yield from _with_cpu_fallback(decorated, run, needed, cpu_fallback, args, kwargs)

    return on_zerogpu


def _spaces_gpu() -> Callable[..., Callable] | None:
    try:
        import spaces
    except ImportError:  # not on Spaces, and not installed: no ZeroGPU
        return None
    return spaces.GPU


def _with_cpu_fallback(decorated: Callable[..., Iterator], run: Callable[..., Iterator], seconds: int,
                       cpu_fallback: bool, args: tuple, kwargs: dict) -> Iterator:
    started = False
    try:
        for item in decorated(*args, **kwargs):
            started = True
            yield item
        return
    except Exception as error:  # noqa: BLE001 -- any other error is raised again as it is
        kind = refusal(error)
        if kind is None:
            raise
        line = visitor_line(kind, seconds)
        if started or not cpu_fallback:  # a second run's frames after the first one's would mix two runs
            raise ValueError(line) from None
    first, *rest = args
    for item in in_a_fresh_process(run, (on_cpu(first), *rest), kwargs):
        yield noted(item, f"{line}; training on the CPU instead")


# ------------------------------------------------------------------------------------ the CPU fallback

def in_a_fresh_process(run: Callable[..., Iterator], args: tuple, kwargs: dict) -> Iterator:
    """The items of `run(*args, **kwargs)`, computed in a new Python process that sees no GPU.

    Not in this one: on ZeroGPU this process's torch is patched to report a GPU, and an optimiser's step then
    asks CUDA whether it is capturing a graph (torch.optim's capture health check), initialising CUDA where
    ZeroGPU forbids it. `run` must be importable by name (a kd_core function, not a closure); items and
    errors come back pickled. Closing the iterator (Stop) kills the process."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "SPACES_ZERO_GPU": "false"}
    child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        pickle.dump((run, args, kwargs), child.stdin)
        child.stdin.close()
        while True:
            try:
                kind, value = pickle.load(child.stdout)
            except EOFError:
                raise RuntimeError(f"the CPU run's process ended without a result (exit code {child.wait()})") \
                    from None
            if kind == "error":
                raise value
            if kind == "end":
                return
            yield value
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def _serve_one_run() -> None:
    """The fresh process's side: read (run, args, kwargs) from stdin, write each item (or the error) to stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, not into the pickle stream
    try:
        run, args, kwargs = pickle.load(sys.stdin.buffer)
        for item in run(*args, **kwargs):
            pickle.dump(("item", item), out)
            out.flush()
        pickle.dump(("end", None), out)
    except Exception as error:  # noqa: BLE001 -- handed to the parent, which raises it
        pickle.dump(("error", error), out)
    out.flush()


def on_cpu(cfg: Run | RunConfig) -> Run | RunConfig:
    """The same run on the CPU ("auto" would pick the GPU ZeroGPU pretends to have outside a call)."""
    return cfg.replace(device="cpu")  # (Run.replace changes its config's fields)


def noted(item: Any, note: str) -> Any:
    """`item` telling `note`: a view (SweepView) after its status line, the engine's StackStarted among its
    notes (the Train tab's status line shows them); any other item as it is."""
    status, notes = getattr(item, "status", None), getattr(item, "notes", None)
    if dataclasses.is_dataclass(item) and isinstance(status, str):
        return dataclasses.replace(item, status=f"{status} · {note}")
    if dataclasses.is_dataclass(item) and isinstance(notes, tuple):
        return dataclasses.replace(item, notes=(*notes, note))
    return item


def in_caller_context(run: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """`run`, iterated in this thread's context wherever it is iterated from.

    ZeroGPU reads the visitor's Gradio request (their token, so their quota) from a context variable when the
    decorated call starts; the app's shared runs iterate it in a worker thread, which has none. Call this in
    the handler, and hand the result to the worker. (The app's sweeps do; `kd_core.serve.stack_pool` runs each stack's
    thread in a copy of its first member's context.)"""
    context = contextvars.copy_context()

    @functools.wraps(run)
    def in_context(*args: Any, **kwargs: Any) -> Iterator:
        items = context.run(run, *args, **kwargs)
        try:
            while True:
                try:
                    item = context.run(next, items)
                except StopIteration:
                    return
                yield item
        finally:
            context.run(items.close)

    return in_context


if __name__ == "__main__":  # the CPU fallback's process (in_a_fresh_process)
    _serve_one_run()
