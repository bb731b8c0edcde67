"""The GPU time the app declares to ZeroGPU for the defaults, each preset and the default sweep, as a table.

    .venv/bin/python bench/zerogpu_durations.py [--time] [--ops]

Each row: the estimate's parts (training steps, TFLOP) and the declared duration (kd_core.serve.zerogpu.duration).
`--time` adds each run's wall time on this machine as the app runs it (`run_view.live_run`, device "auto":
the GPU where there is one, else the CPU; the dataset loaded once before), to check the estimate against.
`--ops` adds the aten ops one training step dispatches (each is about one kernel launch on a GPU), counted
on the CPU from a run of one and one of two epochs (one live evaluation each), the difference per step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from kd_core.data.datasets import load_dataset  # noqa: E402
from kd_core.engine.loop import StackStarted  # noqa: E402
from kd_core.engine.sweep import parse_values  # noqa: E402
from kd_core.engine.train import distill  # noqa: E402
from kd_core.serve import settings, zerogpu
from kd_core.views import run_view, session
from kd_core.views.sweep import live_sweep  # noqa: E402


class OpCount(TorchDispatchMode):
    """Counts the aten ops dispatched while it is on."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(cfg) -> float:
    dataset = load_dataset(cfg.dataset)
    counts = []
    for epochs in (1, 2):
        counter, steps = OpCount(), 0
        with counter:
            for event in distill(cfg.replace(epochs=epochs, evaluations=1), dataset):
                steps = event.total_steps if isinstance(event, StackStarted) else steps
        counts.append((steps, counter.ops))
    (steps_1, ops_1), (steps_2, ops_2) = counts
    return (ops_2 - ops_1) / (steps_2 - steps_1)


def wall_seconds(start) -> float:
    began = time.perf_counter()
    for _ in start():
        pass
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", action="store_true", help="also time each run on this machine")
    parser.add_argument("--ops", action="store_true", help="also count aten ops per training step (runs only)")
    args = parser.parse_args()
    s = settings.SWEEP_DEFAULTS
    sweep_cfg = settings.sweep_config(s["epochs"], s["train_size"], s["repeats"])
    grid = parse_values("temperatures", s["temperatures"]), parse_values("alphas", s["alphas"])
    rows = [(name, settings.preset(name), len(settings.preset(name).methods)) for name in settings.PRESETS]
    rows.append((f"Sweep defaults: T {s['temperatures']} × α {s['alphas']}", sweep_cfg, len(grid[0]) * len(grid[1])))
    if args.time:
        load_dataset(sweep_cfg.dataset)
    print("| run | steps | TFLOP | declared (s) |" + (f" wall on {session.device_label()} (s) |" if args.time else "")
          + (" ops/step |" if args.ops else ""))
    print("|---|---:|---:|---:|" + ("---:|" if args.time else "") + ("---:|" if args.ops else ""))
    for name, cfg, roles in rows:
        is_sweep = name.startswith("Sweep")
        work = zerogpu.stack_work(cfg, grid=roles if is_sweep else 0)
        declared = zerogpu.sweep_duration(cfg, *grid) if is_sweep else zerogpu.duration(cfg)
        line = f"| {name} | {work.steps:,} | {work.flops / 1e12:.2f} | {declared} |"
        if args.time:
            start = (lambda c=cfg: live_sweep(c, *grid)) if is_sweep else (lambda c=cfg: run_view.live_run(c))
            line += f" {wall_seconds(start):.1f} |"
        if args.ops:
            line += " |" if is_sweep else f" {ops_per_step(cfg):.0f} |"
        print(line, flush=True)


if __name__ == "__main__":
    main()
