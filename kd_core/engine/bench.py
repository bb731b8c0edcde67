"""Benchmarks: kd_core's engine against a faithful seed-style loop, and against the FLOP limit.

Everything is measured in one process, on the same Fashion-MNIST samples, with the same teacher
checkpoint and student architecture:

* **reference** — the seed notebook's loop: a torchvision-style dataset returning PIL images through
  `ToTensor()` + `Normalize`, `DataLoader(batch_size=64, shuffle=True)`, the CE student trained in its own
  loop, then the KD student trained in a second loop that runs the teacher forward on every batch;
* **engine** — `kd_core.engine.train.distill`: tensors in memory, cached teacher logits, both students in lockstep,
  at its own batch size and at the reference's (64: as many optimizer steps, so accuracies compare);
* **FLOP limit** — a large fp32 matmul's GFLOP/s with the same thread count, and the students' training
  FLOPs per paired sample (≈ 3 × forward, two students) give the ideal paired samples/s.

Reference and engine alternate `repeats` times after one warm-up engine run (which also gives the time to
the first event with the teacher's logits read from disk, as a fresh process sees it); the ratio reported
is the median of per-repeat ratios, so slow drifts of a noisy machine cancel. `--scaling` adds samples/s by
training-set size and by student. `python -m kd_core bench --json` prints every figure as the last line.
The batched T×α sweep has its own benchmark: `bench/sweep_bench.py`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kd_core.config import MAX_EPOCHS, RunConfig
from kd_core.data.datasets import Dataset, load_dataset, student_indices
from kd_core.engine.loop import StackFinished, StackStarted, StackStep
from kd_core.engine.train import distill, new_student, predictions, run_result
from kd_core.losses import kd_loss
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.teacher.logits import clear_memory_cache, predict_logits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=60000,
                        help="training samples per run, in [1000, 60000] (class-balanced subset)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating reference/engine repetitions")
    parser.add_argument("--student", default="mlp-small", choices=models.SMALL_STUDENTS,
                        help="architecture of the students in both loops")
    parser.add_argument("--teacher", default="default", help="teacher checkpoint, or 'default'")
    parser.add_argument("--batch-size", type=int, default=RunConfig().batch_size,
                        help="the engine's batch size (it also runs at the reference's 64)")
    parser.add_argument("--threads", type=int, default=RunConfig().cpu_threads,
                        help="torch threads for both the engine and the reference loop")
    parser.add_argument("--scaling", action="store_true",
                        help="also measure samples/s for train_size 1k/10k/60k and for every small student")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON (last line)")


# ------------------------------------------------------------------------------ the seed-style loop

class SeedStyleDataset(torch.utils.data.Dataset):
    """Per-sample PIL image -> ToTensor -> Normalize, as torchvision.datasets.FashionMNIST does."""

    def __init__(self, dataset: Dataset, index: torch.Tensor):
        from torchvision import transforms

        self.images = dataset.train_images[index, 0].numpy()
        self.labels = dataset.train_labels[index].tolist()
        self.transform = transforms.Compose([transforms.ToTensor(),
                                             transforms.Normalize(dataset.mean, dataset.std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), self.labels[i]


def reference_run(dataset: Dataset, index: torch.Tensor, teacher: nn.Module, student: str,
                  cfg: RunConfig) -> dict:
    """The seed notebook's two loops; returns times, paired samples/s, samples seen and both accuracies."""
    loader = torch.utils.data.DataLoader(SeedStyleDataset(dataset, index), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    ce_student = new_student(student, dataset, cfg.seed)
    kd_student = new_student(student, dataset, cfg.seed)
    teacher.eval()
    start = time.perf_counter()
    ce_seen = kd_seen = 0
    optimizer = torch.optim.Adam(ce_student.parameters(), lr=cfg.lr)
    for images, labels in loader:
        loss = F.cross_entropy(ce_student(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ce_seen += len(labels)
    ce_loop_s = time.perf_counter() - start
    optimizer = torch.optim.Adam(kd_student.parameters(), lr=cfg.lr)
    for images, labels in loader:
        with torch.no_grad():
            teacher_out = teacher(images)
        loss = kd_loss(kd_student(images), teacher_out, labels, T=cfg.temperature, alpha=cfg.alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        kd_seen += len(labels)
    seconds = time.perf_counter() - start
    if ce_seen != kd_seen:
        raise RuntimeError(f"the reference's students saw {ce_seen} and {kd_seen} samples")
    return {"seconds": seconds, "samples_per_s": ce_seen / seconds, "samples_seen": ce_seen,
            "ce_loop_s": ce_loop_s, "kd_loop_s": seconds - ce_loop_s,
            "ce_acc": accuracy(ce_student, dataset), "kd_acc": accuracy(kd_student, dataset)}


def accuracy(model: nn.Module, dataset: Dataset) -> float:
    return (predictions(model, dataset, dataset.test_images) == dataset.test_labels).float().mean().item()


# ------------------------------------------------------------------------------------ the engine

def engine_run(cfg: RunConfig, dataset: Dataset) -> dict:
    """One distill run; also its wall time and the time from calling distill() to its first Step event."""
    start = time.perf_counter()
    first_event, source = None, ""
    for event in distill(cfg, dataset):
        if isinstance(event, StackStarted):
            source = event.logits_source
        if isinstance(event, StackStep) and first_event is None:
            first_event = time.perf_counter() - start
        if isinstance(event, StackFinished):
            result = run_result(event.result)
    # training samples seen by each student: samples_per_s is samples / seconds exactly
    seen = round(result.samples_per_s * result.seconds)
    return {"seconds": result.seconds, "samples_per_s": result.samples_per_s, "samples_seen": seen,
            "wall_s": time.perf_counter() - start, "ce_acc": result.ce_acc, "kd_acc": result.kd_acc,
            "time_to_first_event_s": first_event, "logits_source": source}


# ---------------------------------------------------------------------------------- the FLOP limit

def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """Best-of fp32 GFLOP/s of a size×size matmul on `threads` torch threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    finally:
        torch.set_num_threads(previous)
    return 2 * size ** 3 / best / 1e9


def training_flops(name: str, dataset: Dataset) -> tuple[int, int]:
    """(convention, exact) training FLOPs per sample of one student.

    Convention: 3 × forward — forward, input gradients, weight gradients. Exact: the first
    layer's input (the image) needs no gradient, so one of its three matmuls never runs; for an MLP on
    28×28 images that first layer is most of the FLOPs, so exact ≈ 2 × forward. Only Linear and Conv2d
    layers count (models.flops_per_sample); normalisation, activations, loss and Adam are memory-bound.
    """
    model = models.build(name, dataset.image_shape, dataset.num_classes)
    forward = models.flops_per_sample(model, dataset.image_shape)
    first = next(i for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d)))
    first_layer = models.flops_per_sample(model[:first + 1], dataset.image_shape)
    return 3 * forward, 3 * forward - first_layer


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ memory

def _status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MB, or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory of this process per phase and over the whole bench.

    On Linux, writing 5 to /proc/self/clear_refs resets the peak (VmHWM), so each phase gets its own
    window; elsewhere every phase reports the process's peak so far (getrusage).
    """

    def __init__(self) -> None:
        self.overall = self.peak()

    @staticmethod
    def peak() -> float:
        hwm = _status_mb("VmHWM")
        return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def phase(self, fn: Callable[..., dict], *args) -> dict:
        """fn(*args) (a dict) with `peak_rss_mb`, the process's peak resident memory while it ran."""
        self.overall = max(self.overall, self.peak())
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        result = fn(*args)
        peak = self.peak()
        self.overall = max(self.overall, peak)
        return {**result, "peak_rss_mb": peak}

    def total(self) -> float:
        return max(self.overall, self.peak())


# ---------------------------------------------------------------------------------------- the bench

def run_bench(args: argparse.Namespace) -> dict:
    if not 1000 <= args.samples <= 60000:
        raise ValueError("--samples must be in [1000, 60000]")
    if not 1 <= args.repeats <= 20:
        raise ValueError("--repeats must be in [1, 20]")
    load_before = os.getloadavg()[0]
    memory = PeakMemory()
    dataset = load_dataset("fashion-mnist")
    # one CE/KD pair (repeats=1) against the reference's one pair, on the same images (outside the validation
    # split), at the reference's learning rate
    cfg = RunConfig(teacher=args.teacher, student=args.student, epochs=1, train_size=args.samples,
                    batch_size=args.batch_size, cpu_threads=args.threads, device="cpu", repeats=1,
                    lr=1e-3, temperature=2.0, alpha=0.5).validate()
    teacher_path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    teacher, _ = checkpoints.load_model(teacher_path)
    index = student_indices(dataset.train_labels, train_size=cfg.train_size, seed=cfg.seed,
                            exclude=dataset.validation_index)
    b64 = cfg.replace(batch_size=64)

    default_threads = torch.get_num_threads()
    # both loops on the same thread count: on a 2-core machine shared with anything else, 2 torch threads
    # collapse (they spin-wait for a busy core), which would flatter whichever loop ran on 1
    torch.set_num_threads(cfg.cpu_threads)
    try:
        # building the cache = the teacher's forward over the training images (here the run's `samples`)
        logits_build_s = _timed(lambda: predict_logits(teacher, dataset, dataset.train_images[index], "cpu"))
        rss_before_runs = _status_mb("VmRSS")  # the dataset, teacher and interpreter, before any run
        clear_memory_cache()
        cold = engine_run(cfg, dataset)  # warm-up; logits from disk (or computed), as in a fresh process
        references, engines, engines_b64 = [], [], []
        for _ in range(args.repeats):
            references.append(memory.phase(reference_run, dataset, index, teacher, cfg.student, cfg))
            engines.append(memory.phase(engine_run, cfg, dataset))
            engines_b64.append(memory.phase(engine_run, b64, dataset))
        gflops = matmul_gflops(cfg.cpu_threads)
        scaling_figures = scaling(cfg, dataset, gflops) if args.scaling else None
    finally:
        torch.set_num_threads(default_threads)

    def median(runs: list[dict], key: str) -> float:
        return statistics.median(run[key] for run in runs)

    def ratios(engine_runs: list[dict]) -> list[float]:
        return [e["samples_per_s"] / r["samples_per_s"] for r, e in zip(references, engine_runs, strict=True)]

    def acc(runs: list[dict]) -> dict:
        return {"ce": median(runs, "ce_acc"), "kd": median(runs, "kd_acc")}

    def gap(runs: list[dict]) -> float:  # the larger of the CE and KD students' accuracy differences
        return max(abs(acc(runs)[k] - acc(references)[k]) for k in ("ce", "kd"))

    convention, exact = training_flops(cfg.student, dataset)
    engine_rate = median(engines, "samples_per_s")
    figures = {
        "samples": len(index), "repeats": args.repeats, "student": cfg.student,
        "teacher": str(teacher_path), "threads": cfg.cpu_threads, "batch_size": cfg.batch_size,
        "reference_samples_per_s": median(references, "samples_per_s"),
        "engine_samples_per_s": engine_rate,
        "engine_b64_samples_per_s": median(engines_b64, "samples_per_s"),
        "speedup_median": statistics.median(ratios(engines)), "speedups": ratios(engines),
        "speedup_b64_median": statistics.median(ratios(engines_b64)), "speedups_b64": ratios(engines_b64),
        "samples_seen": {"reference": [r["samples_seen"] for r in references],
                         "engine": [e["samples_seen"] for e in engines],
                         "engine_b64": [e["samples_seen"] for e in engines_b64]},
        "reference_ce_loop_s": median(references, "ce_loop_s"),
        "reference_kd_loop_s": median(references, "kd_loop_s"),
        "reference_acc": acc(references), "engine_acc": acc(engines), "engine_b64_acc": acc(engines_b64),
        "accuracy_gap": gap(engines), "accuracy_gap_b64": gap(engines_b64),
        "teacher_logits_build_s": logits_build_s,
        "time_to_first_event_s": median(engines, "time_to_first_event_s"),
        "time_to_first_event_cold_s": cold["time_to_first_event_s"],
        "cold_logits_source": cold["logits_source"],
        "matmul_gflops": gflops,
        "student_train_flops_per_paired_sample": 2 * convention,
        "student_exact_train_flops_per_paired_sample": 2 * exact,
        "ideal_samples_per_s": gflops * 1e9 / (2 * convention),
        "fraction_of_flop_limit": engine_rate * 2 * convention / (gflops * 1e9),
        "fraction_of_flop_limit_exact": engine_rate * 2 * exact / (gflops * 1e9),
        "rss_before_runs_mb": rss_before_runs,
        "reference_peak_rss_mb": max(r["peak_rss_mb"] for r in references),
        "engine_peak_rss_mb": max(e["peak_rss_mb"] for e in engines),
        "engine_b64_peak_rss_mb": max(e["peak_rss_mb"] for e in engines_b64),
        "peak_rss_mb": memory.total(),
        "load_average": {"start": load_before, "end": os.getloadavg()[0]},
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
    }
    if scaling_figures is not None:
        figures["scaling"] = scaling_figures
    return figures


def scaling(cfg: RunConfig, dataset: Dataset, gflops: float) -> dict:
    """Engine samples/s by training-set size (50k–60k samples seen each) and by student (cfg's train_size).

    `samples_per_s` counts training time only; `wall_samples_per_s` adds setup and the per-epoch test
    evaluation, which is what makes many short epochs (small training sets) cost more per sample.
    """
    by_size = {}
    for size in (1000, 10000, 60000):
        epochs = min(MAX_EPOCHS, max(1, 60000 // size))
        run = engine_run(cfg.replace(train_size=size, epochs=epochs), dataset)
        by_size[str(size)] = {"epochs": epochs, "samples_per_s": run["samples_per_s"],
                              "wall_samples_per_s": run["samples_seen"] / run["wall_s"]}
    by_student = {}
    for name in models.SMALL_STUDENTS:
        run = engine_run(cfg.replace(student=name), dataset)
        convention, exact = training_flops(name, dataset)
        by_student[name] = {"samples_per_s": run["samples_per_s"],
                            "train_flops_per_paired_sample": 2 * convention,
                            "fraction_of_flop_limit": run["samples_per_s"] * 2 * convention / (gflops * 1e9),
                            "fraction_of_flop_limit_exact": run["samples_per_s"] * 2 * exact / (gflops * 1e9),
                            "ce_acc": run["ce_acc"], "kd_acc": run["kd_acc"]}
    return {"by_train_size": by_size, "by_student": by_student}
