"""Benchmarks: kd_core's engine against a faithful seed-style loop, and against the FLOP limit.

Everything is measured in one process, on the same Fashion-MNIST samples, with the same teacher
checkpoint and student architecture:

* **reference** — the seed notebook's loop: a torchvision-style dataset returning PIL images through
  `ToTensor()` + `Normalize`, `DataLoader(batch_size=64, shuffle=True)`, the CE student trained in its own
  loop, then the KD student trained in a second loop that runs the teacher forward on every batch;
* **engine** — `kd_core.train.distill`: tensors in memory, cached teacher logits, both students in lockstep;
* **FLOP limit** — a large fp32 matmul's GFLOP/s with the engine's thread count, and the students' training
  FLOPs per paired sample (≈ 3 × forward, two students) give the ideal paired samples/s.

Reference and engine alternate `repeats` times; the ratio reported is the median of per-repeat ratios, so
slow drifts of a noisy machine cancel. `python -m kd_core bench --json` prints every figure as the last line.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from . import checkpoints, models
from .config import MAX_EPOCHS, RunConfig
from .data import Dataset, load_dataset, student_indices
from .losses import kd_loss
from .teacher import clear_memory_cache, predict_logits, teacher_logits
from .train import Finished, Step, distill, new_student, predictions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=60000, help="training samples per run (≤ 60000)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating reference/engine repetitions")
    parser.add_argument("--student", default="mlp-small", choices=sorted(models.STUDENTS))
    parser.add_argument("--teacher", default="default", help="teacher checkpoint, or 'default'")
    parser.add_argument("--batch-size", type=int, default=256, help="the engine's batch size")
    parser.add_argument("--threads", type=int, default=RunConfig().cpu_threads,
                        help="torch threads for both the engine and the reference loop")
    parser.add_argument("--scaling", action="store_true",
                        help="also measure samples/s for train_size 1k/10k/60k and every student")
    parser.add_argument("--json", action="store_true")


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


def reference_run(dataset: Dataset, index: torch.Tensor, teacher: torch.nn.Module, student: str,
                  cfg: RunConfig) -> dict:
    """The seed notebook's two loops; returns seconds, paired samples/s and both accuracies."""
    loader = torch.utils.data.DataLoader(SeedStyleDataset(dataset, index), batch_size=64, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    ce_student = new_student(student, dataset, cfg.seed)
    kd_student = new_student(student, dataset, cfg.seed)
    teacher.eval()
    start = time.perf_counter()
    optimizer = torch.optim.Adam(ce_student.parameters(), lr=cfg.lr)
    for images, labels in loader:
        loss = F.cross_entropy(ce_student(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer = torch.optim.Adam(kd_student.parameters(), lr=cfg.lr)
    for images, labels in loader:
        with torch.no_grad():
            teacher_out = teacher(images)
        loss = kd_loss(kd_student(images), teacher_out, labels, T=cfg.temperature, alpha=cfg.alpha)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples_per_s": len(index) / seconds,
            "ce_acc": accuracy(ce_student, dataset), "kd_acc": accuracy(kd_student, dataset)}


def accuracy(model: torch.nn.Module, dataset: Dataset) -> float:
    return (predictions(model, dataset, dataset.test_images) == dataset.test_labels).float().mean().item()


def engine_run(cfg: RunConfig, dataset: Dataset) -> dict:
    """One distill run; also the time from calling distill() to its first Step event."""
    start = time.perf_counter()
    first_event = None
    for event in distill(cfg, dataset):
        if isinstance(event, Step) and first_event is None:
            first_event = time.perf_counter() - start
        if isinstance(event, Finished):
            result = event.result
    return {"seconds": result.seconds, "samples_per_s": result.samples_per_s, "ce_acc": result.ce_acc,
            "kd_acc": result.kd_acc, "time_to_first_event_s": first_event}


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


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------- the bench

def run_bench(args: argparse.Namespace) -> dict:
    if not 1000 <= args.samples <= 60000:
        raise ValueError("--samples must be in [1000, 60000]")
    if not 1 <= args.repeats <= 20:
        raise ValueError("--repeats must be in [1, 20]")
    dataset = load_dataset("fashion-mnist")
    cfg = RunConfig(teacher=args.teacher, student=args.student, epochs=1, train_size=args.samples,
                    batch_size=args.batch_size, cpu_threads=args.threads, device="cpu").validate()
    teacher_path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
    teacher, _ = checkpoints.load_model(teacher_path)
    index = student_indices(dataset.train_labels, train_size=cfg.train_size, seed=cfg.seed)

    # building the cache = the teacher's forward over the training images (here the run's `samples`)
    logits_build_s = _timed(lambda: predict_logits(teacher, dataset, dataset.train_images[index], "cpu"))
    clear_memory_cache()
    teacher_logits(teacher_path, dataset)  # warm the memory cache from disk (or compute) once
    references, engines, engines_b64 = [], [], []
    default_threads = torch.get_num_threads()
    for _ in range(args.repeats):
        # same thread count as the engine: on a 2-core machine shared with anything else, 2 torch threads
        # collapse (they spin-wait for a busy core), which would flatter the engine unfairly
        torch.set_num_threads(cfg.cpu_threads)
        references.append(reference_run(dataset, index, teacher, cfg.student, cfg))
        engines.append(engine_run(cfg, dataset))
        # the reference's batch size: the same number of optimizer steps, so accuracies are comparable
        engines_b64.append(engine_run(cfg.replace(batch_size=64), dataset))
    torch.set_num_threads(default_threads)
    ratios = [e["samples_per_s"] / r["samples_per_s"] for r, e in zip(references, engines, strict=True)]
    ratios_b64 = [e["samples_per_s"] / r["samples_per_s"]
                  for r, e in zip(references, engines_b64, strict=True)]

    student = models.build(cfg.student, dataset.image_shape, dataset.num_classes)
    flops_per_pair = 2 * 3 * models.flops_per_sample(student, dataset.image_shape)
    gflops = matmul_gflops(cfg.cpu_threads)
    ideal = gflops * 1e9 / flops_per_pair
    engine_rate = statistics.median(e["samples_per_s"] for e in engines)
    figures = {
        "samples": len(index), "repeats": args.repeats, "student": cfg.student,
        "teacher": str(teacher_path), "threads": cfg.cpu_threads,
        "reference_samples_per_s": statistics.median(r["samples_per_s"] for r in references),
        "engine_samples_per_s": engine_rate,
        "speedup_median": statistics.median(ratios), "speedups": ratios,
        "engine_b64_samples_per_s": statistics.median(e["samples_per_s"] for e in engines_b64),
        "speedup_b64_median": statistics.median(ratios_b64),
        "reference_acc": {"ce": references[-1]["ce_acc"], "kd": references[-1]["kd_acc"]},
        "engine_acc": {"ce": engines[-1]["ce_acc"], "kd": engines[-1]["kd_acc"]},
        "engine_b64_acc": {"ce": engines_b64[-1]["ce_acc"], "kd": engines_b64[-1]["kd_acc"]},
        "teacher_logits_build_s": logits_build_s,
        "time_to_first_event_s": statistics.median(e["time_to_first_event_s"] for e in engines),
        "matmul_gflops": gflops, "student_train_flops_per_paired_sample": flops_per_pair,
        "ideal_samples_per_s": ideal, "fraction_of_flop_limit": engine_rate / ideal,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
    }
    if args.scaling:
        figures["scaling"] = scaling(cfg, dataset)
    return figures


def scaling(cfg: RunConfig, dataset: Dataset) -> dict:
    """Engine samples/s by training-set size (≥ 60k samples seen each) and by student."""
    by_size = {}
    for size in (1000, 10000, 60000):
        epochs = min(MAX_EPOCHS, max(1, 60000 // size))  # ~60k samples seen per measurement
        by_size[str(size)] = engine_run(cfg.replace(train_size=size, epochs=epochs), dataset)["samples_per_s"]
    by_student = {name: engine_run(cfg.replace(student=name, train_size=0), dataset)["samples_per_s"]
                  for name in models.STUDENTS}
    return {"by_train_size": by_size, "by_student": by_student}
