"""Batched T × α sweep vs the same grid trained one student at a time, in one process.

    .venv/bin/python bench/sweep_bench.py [--json] [--student mlp-small] [--samples 60000] [--epochs 1]
        [--repeats 3] [--threads 1] [--T 1,2,4,8] [--alpha 0.25,0.5,0.75,0.9] [--no-distill]

The same students (the CE baseline + one KD student per (T, α)) from the same initialisation, on the
same batches in the same order, trained four ways:

* **batched** — `kd_core.engine.sweep.run_sweep`: all students in one `StudentStack`, one step for all;
* **sequential** — the very same code one student at a time (a `StudentStack` of one, `role_losses`,
  fused Adam, `StudentStack.logits`), so the ratio is what batching itself buys;
* **plain** — one student at a time as `distill` trains each of its students (`nn.Module`, `kd_loss`,
  default Adam): the natural loop;
* **distill** — `kd_core.engine.train.run` once per grid cell: what one would do without the sweep (each run
  also trains its own CE student and evaluates before training).

The four alternate `repeats` times; a ratio is the median of per-repeat ratios, so slow drifts of a
shared machine cancel. "train" times are training wall time only (evaluation excluded), "wall" times
include evaluation and setup. `--json` prints every figure as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from kd_core.config import RunConfig  # noqa: E402
from kd_core.data.datasets import Dataset, load_dataset, student_indices  # noqa: E402
from kd_core.engine.bench import matmul_gflops  # noqa: E402
from kd_core.engine.roles import role_losses  # noqa: E402
from kd_core.engine.stack import StudentStack  # noqa: E402
from kd_core.engine.sweep import run_sweep  # noqa: E402
from kd_core.engine.train import new_student, predictions, run  # noqa: E402
from kd_core.losses import kd_loss  # noqa: E402
from kd_core.models import checkpoints
from kd_core.models.zoo import flops_per_sample  # noqa: E402
from kd_core.teacher.logits import teacher_logits  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="mlp-small")
    parser.add_argument("--samples", type=int, default=60000, help="training samples (0 or 60000 = all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=RunConfig().batch_size)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=RunConfig().cpu_threads,
                        help="torch threads, the same for every mode")
    parser.add_argument("--T", type=floats, default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--alpha", type=floats, default=[0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--no-distill", action="store_true", help="skip the distill-runs baseline")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def one_by_one(cfg: RunConfig, dataset: Dataset, cells: list[tuple[float, float]], *, plain: bool) -> dict:
    """Each (T, α) student trained alone, with the sweep's kernels or (`plain`) as distill trains one;
    training seconds, wall seconds and test accuracies."""
    torch.set_num_threads(cfg.cpu_threads)
    logits = teacher_logits(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), dataset)
    index = student_indices(dataset.train_labels, train_size=cfg.train_size, seed=cfg.seed,
                            exclude=dataset.validation_index)
    data = (dataset.normalize(dataset.train_images[index]), logits.train[index], dataset.train_labels[index])
    wall, train_s, accs = time.perf_counter(), 0.0, []
    for T, alpha in cells:
        seconds, acc = train_alone(cfg, dataset, data, T, alpha, plain=plain)
        train_s += seconds
        accs.append(acc)
    return {"train_s": train_s, "wall_s": time.perf_counter() - wall, "acc": accs}


def train_alone(cfg: RunConfig, dataset: Dataset, data: tuple, T: float, alpha: float, *,
                plain: bool) -> tuple[float, float]:
    """One student, the batch order and init of distill; (training seconds, final test accuracy)."""
    inputs, soft_targets, labels = data
    if plain:
        module = new_student(cfg.student, dataset, cfg.seed)
        optimizer = torch.optim.Adam(module.parameters(), lr=cfg.lr)
    else:
        stack = StudentStack([new_student(cfg.student, dataset, cfg.seed)], 1, dataset.image_shape)
        optimizer = torch.optim.Adam(stack.parameters(), lr=cfg.lr, fused=True)
        T_vector, alpha_vector = torch.tensor([T]), torch.tensor([alpha])
    order_rng = torch.Generator().manual_seed(cfg.seed)
    n, seconds = len(labels), 0.0
    for _ in range(cfg.epochs):
        started = time.perf_counter()
        order = torch.randperm(n, generator=order_rng)
        for first in range(0, n, cfg.batch_size):
            batch = order[first:first + cfg.batch_size]
            if len(batch) < 2:
                continue
            if plain:
                loss = kd_loss(module(inputs[batch]), soft_targets[batch], labels[batch], T=T, alpha=alpha)
            else:
                out = stack(inputs[batch].unsqueeze(0), train=True)  # [1, K, B]: one seed, one role
                loss = role_losses(out.unsqueeze(0), soft_targets[batch].T.unsqueeze(0), labels[batch].unsqueeze(0),
                                   T_vector, alpha_vector).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        seconds += time.perf_counter() - started
        if plain:  # one evaluation per epoch, as distill and the sweep do
            predicted = predictions(module, dataset, dataset.test_images)
        else:
            predicted = stack.logits(dataset.normalize(dataset.test_images)).argmax(2)[0]
    return seconds, (predicted == dataset.test_labels).float().mean().item()


def distill_runs(cfg: RunConfig, dataset: Dataset, cells: list[tuple[float, float]]) -> dict:
    wall = time.perf_counter()
    results = [run(cfg.replace(temperature=T, alpha=alpha), dataset) for T, alpha in cells]
    return {"train_s": sum(r.seconds for r in results), "wall_s": time.perf_counter() - wall,
            "acc": [results[0].ce_acc] + [r.kd_acc for r in results]}


def measure(args: argparse.Namespace) -> dict:
    dataset = load_dataset("fashion-mnist")
    cfg = RunConfig(student=args.student, epochs=args.epochs, batch_size=args.batch_size,
                    train_size=0 if args.samples >= len(dataset.train_labels) else args.samples,
                    cpu_threads=args.threads, device="cpu", event_interval_s=3600.0, repeats=1).validate()
    grid = [(T, alpha) for T in args.T for alpha in args.alpha]
    teacher_logits(checkpoints.resolve_teacher(cfg.teacher, cfg.dataset), dataset)  # into memory once
    warm = cfg.replace(train_size=512)  # first calls pay one-off allocations and library start-up
    run_sweep(warm, args.T[:1], args.alpha[:1], dataset)
    for plain in (False, True):
        one_by_one(warm, dataset, grid[:1], plain=plain)
    load_before = os.getloadavg()
    batched, sequential, plain, distilled = [], [], [], []
    for _ in range(args.repeats):
        wall = time.perf_counter()
        result = run_sweep(cfg, args.T, args.alpha, dataset)
        batched.append({"train_s": result.seconds, "wall_s": time.perf_counter() - wall,
                        "acc": [result.ce_acc, *result.kd_acc]})
        sequential.append(one_by_one(cfg, dataset, [(1.0, 0.0), *grid], plain=False))
        plain.append(one_by_one(cfg, dataset, [(1.0, 0.0), *grid], plain=True))
        if not args.no_distill:
            distilled.append(distill_runs(cfg, dataset, grid))

    def median_ratio(runs: list[dict], key: str) -> float:
        return statistics.median(r[key] / b[key] for r, b in zip(runs, batched, strict=True))

    def summary(runs: list[dict]) -> dict:
        return {"train_s": statistics.median(r["train_s"] for r in runs),
                "wall_s": statistics.median(r["wall_s"] for r in runs),
                "train_s_all": [round(r["train_s"], 3) for r in runs],
                "speedup_train": median_ratio(runs, "train_s"), "speedup_wall": median_ratio(runs, "wall_s"),
                "max_acc_difference": max(abs(x - y) for r, b in zip(runs, batched, strict=True)
                                          for x, y in zip(r["acc"], b["acc"], strict=True))}

    student = new_student(cfg.student, dataset, cfg.seed)
    samples = len(student_indices(dataset.train_labels, train_size=cfg.train_size, seed=cfg.seed))
    # forward + weight-gradient FLOPs (the first layer needs no input gradient): a floor for training
    train_flops = 2 * flops_per_sample(student, dataset.image_shape) * samples * cfg.epochs * (len(grid) + 1)
    batched_s = statistics.median(b["train_s"] for b in batched)
    figures = {
        "student": cfg.student, "params": sum(p.numel() for p in student.parameters()),
        "students": len(grid) + 1, "grid": {"T": args.T, "alpha": args.alpha},
        "samples": samples,
        "epochs": cfg.epochs, "batch_size": cfg.batch_size, "threads": cfg.cpu_threads,
        "repeats": args.repeats,
        "batched": {"train_s": batched_s, "gflops": train_flops / batched_s / 1e9,
                    "wall_s": statistics.median(b["wall_s"] for b in batched),
                    "train_s_all": [round(b["train_s"], 3) for b in batched],
                    "ce_acc": batched[-1]["acc"][0], "kd_acc": batched[-1]["acc"][1:]},
        "sequential": summary(sequential), "plain": summary(plain),
        "matmul_peak_gflops": matmul_gflops(cfg.cpu_threads),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
    }
    if distilled:
        figures["distill"] = summary(distilled)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args)
    batched = figures["batched"]
    print(f"{figures['students']} × {figures['student']} students, {figures['samples']} samples × "
          f"{figures['epochs']} epoch(s), batch {figures['batch_size']}, {figures['threads']} thread(s), "
          f"median of {figures['repeats']}", file=sys.stderr)
    print(f"  batched     train {batched['train_s']:7.2f} s   wall {batched['wall_s']:7.2f} s   "
          f"{batched['gflops']:.0f} GFLOP/s of a {figures['matmul_peak_gflops']:.0f} GFLOP/s matmul peak",
          file=sys.stderr)
    for mode in ("sequential", "plain", "distill"):
        if mode in figures:
            f = figures[mode]
            print(f"  {mode:<11} train {f['train_s']:7.2f} s   wall {f['wall_s']:7.2f} s   speed-up "
                  f"{f['speedup_train']:.2f}× (train) {f['speedup_wall']:.2f}× (wall)   max |Δacc| "
                  f"{f['max_acc_difference']:.4f}", file=sys.stderr)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
