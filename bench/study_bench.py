"""Study throughput: K trials trained as one stack (`kd_core.study.trials`) vs the same trials one by one via `distill`.

    .venv/bin/python bench/study_bench.py [--stack 8] [--bench-repeats 1] [--json] [distill's run options]

K configurations are drawn from the default search space with a seeded random sampler, all at one learning
rate (a stack shares its Adam, so a worker trains one stack per learning rate; one learning rate makes the K
trials one stack). **stacked**: `study.run_worker` over a fresh journal study with pruning off (pruning
would stop members early and flatter the stack); **one by one**: `kd_core.engine.train.run` once per configuration
(`--methods M` and its hyper-parameters, CE beside it as every `distill` trains it), in the same process,
which is what `python -m kd_core distill` does minus its start-up. Both are wall time, setup and evaluation
included, after a one-epoch warm-up that loads the data, the teacher's logits and features; they alternate
`--bench-repeats` times. The validation accuracy of each trial is printed beside its
`distill` twin's (they should agree to within a validation image or two: a stack reproduces each run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from kd_core.__main__ import add_run_options, run_config  # noqa: E402
from kd_core.config import RunConfig  # noqa: E402
from kd_core.engine.train import run  # noqa: E402
from kd_core.study.space import SearchSpace  # noqa: E402
from kd_core.study.trials import open_study, run_worker  # noqa: E402


def configurations(space: SearchSpace, count: int) -> list[dict]:
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [space.suggest(sampler_study.ask()) for _ in range(count)]


def stacked(cfg: RunConfig, space: SearchSpace, params: list[dict]) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as directory:
        study = open_study(str(Path(directory) / "bench.journal"), "bench", cfg, space,
                           pruner=optuna.pruners.NopPruner())
        for p in params:
            study.enqueue_trial(p)
        start = time.perf_counter()
        run_worker(study, cfg, trials=len(params), stack=len(params))
        seconds = time.perf_counter() - start
        return seconds, [t.value for t in study.get_trials()]


def one_by_one(cfg: RunConfig, params: list[dict]) -> tuple[float, list[float]]:
    start, values = time.perf_counter(), []
    for p in params:
        result = run(cfg.replace(lr=p["lr"], methods=(p["method"],), temperature=p.get("T", cfg.temperature),
                                 alpha=p.get("alpha", cfg.alpha), dkd_beta=p.get("dkd_beta", cfg.dkd_beta),
                                 feature_weight=p.get("feature_weight", cfg.feature_weight)))
        values.append(result.methods()[0]["val_acc"])
    return time.perf_counter() - start, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_options(parser)
    parser.add_argument("--stack", type=int, default=8)
    parser.add_argument("--bench-repeats", type=int, default=1, help="alternations of the two ways")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = run_config(args)
    space = SearchSpace(lr=(cfg.lr,))
    params = configurations(space, args.stack)
    stacked(cfg.replace(epochs=1), space, params)  # warm-up: data, teacher logits and features in memory
    rounds = []
    for _ in range(args.bench_repeats):
        stack_s, stack_values = stacked(cfg, space, params)
        alone_s, alone_values = one_by_one(cfg, params)
        rounds.append({"stacked_s": stack_s, "one_by_one_s": alone_s, "ratio": alone_s / stack_s})
        print(f"stacked {stack_s:.1f} s ({60 * len(params) / stack_s:.2f} trials/min), one by one "
              f"{alone_s:.1f} s ({60 * len(params) / alone_s:.2f} trials/min): {alone_s / stack_s:.2f}x",
              file=sys.stderr, flush=True)
    for p, a, b in zip(params, stack_values, alone_values, strict=True):
        print(f"  {p}: stacked val {a:.4f}, distill val {b:.4f}", file=sys.stderr)
    result = {"stack": args.stack, "params": params, "rounds": rounds,
              "ratio_median": statistics.median(r["ratio"] for r in rounds),
              "stacked_trials_per_min": [60 * len(params) / r["stacked_s"] for r in rounds],
              "one_by_one_trials_per_min": [60 * len(params) / r["one_by_one_s"] for r in rounds],
              "stacked_val": stack_values, "distill_val": alone_values, "config": cfg.__dict__}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
