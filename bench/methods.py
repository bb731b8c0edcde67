"""Every distillation method beside CE and Hinton KD, 5 seeds, in three regimes; and what methods cost.

    .venv/bin/python bench/methods.py [--repeats 5] [--regimes default,full,transfer] [--json out.json]
    .venv/bin/python bench/methods.py --throughput [--pairs 2]

The table: one `distill --methods kd,kd-std,dkd,dkd-std,dist,hint,cosine` run per regime (each regime's
settings are its app preset), so every method's students share each seed's init and batches. Each cell is the
test accuracy (mean ± std over seeds), the paired difference with CE and its 95 % interval, and the seeds won;
the validation accuracy is in the JSON. README "Distillation methods side by side" quotes this output.

`--throughput`: training samples per second per student, on 55,000 images for 1 epoch with 1 thread, of the
CE + KD pair and of CE + three methods (KD, DIST and hint, cosine or DKD), alternating runs (`--pairs` rounds,
after one warm-up round that also caches the teacher's features): the ratio of the per-student figures is what
the methods cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd_core.config import RunConfig  # noqa: E402
from kd_core.engine.roles import METHODS  # noqa: E402
from kd_core.engine.train import run  # noqa: E402
from kd_core.serve.settings import PRESETS  # noqa: E402

REGIMES = {
    "default": ("default (1,000 images)", PRESETS["Defaults: 1,000 images, KD beats CE"]),
    "full": ("full data (55,000, 3 epochs, T=2, α=0.5)", PRESETS["Full data: no gain here"]),
    "transfer": ("transfer set (1,000 + 50,000 unlabelled)", PRESETS["The teacher labels images for the student"]),
}
NAMES = {"kd": "KD", "kd-std": "KD-std", "dkd": "DKD", "dkd-std": "DKD-std", "dist": "DIST", "hint": "Hint",
         "cosine": "Cosine"}


def measure(regime: str, repeats: int) -> dict:
    label, changes = REGIMES[regime]
    result = run(RunConfig(repeats=repeats, methods=tuple(METHODS), **changes))
    ce = result.accuracies("ce")
    mean = sum(ce) / len(ce)
    ce_std = (sum((a - mean) ** 2 for a in ce) / (len(ce) - 1)) ** 0.5 if len(ce) > 1 else 0.0
    print(f"{label}: {result.seconds:.1f} s of training, {result.stack.students.copies} students", file=sys.stderr)
    return {"regime": regime, "label": label, "config": changes, "seconds": result.seconds,
            "ce": {"acc": mean, "acc_std": ce_std, "val_acc": sum(result.accuracies("ce", "val")) / len(ce)},
            "methods": result.methods()}


def cell(method: dict) -> str:
    gain = method["minus_ce"]
    low, high = gain["ci95"] or (float("nan"), float("nan"))
    beyond = low > 0 or high < 0
    figure = f"{100 * gain['mean']:+.2f}"
    return (f"{100 * method['acc']:.2f} ± {100 * method['acc_std']:.2f} · {f'**{figure}**' if beyond else figure} "
            f"[{100 * low:+.2f}, {100 * high:+.2f}] {method['wins']}/{gain['n']}").replace("-", "−")


def table(rows: list[dict]) -> str:
    ce = " | ".join(f"{100 * r['ce']['acc']:.2f} ± {100 * r['ce']['acc_std']:.2f}" for r in rows)
    lines = ["| method | " + " | ".join(r["label"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|",
             f"| CE | {ce} |"]
    for i, method in enumerate(METHODS):
        lines.append(f"| {NAMES[method]} | " + " | ".join(cell(r["methods"][i]) for r in rows) + " |")
    return "\n".join(lines)


def throughput(pairs: int) -> list[dict]:
    base = RunConfig(train_size=0, epochs=1, repeats=1, evaluations=1)
    candidates = {"CE + KD": ("kd",), "CE + KD + DIST + hint": ("kd", "dist", "hint"),
                  "CE + KD + DIST + cosine": ("kd", "dist", "cosine"), "CE + KD + DKD + DIST": ("kd", "dkd", "dist")}
    for methods in candidates.values():  # warm-up; the first also caches the teacher's features
        run(base.replace(methods=methods))
    rows = []
    for _ in range(pairs):
        for name, methods in candidates.items():
            result = run(base.replace(methods=methods))
            students = 1 + len(methods)
            rows.append({"students": name, "samples_per_s": result.samples_per_s,
                         "student_samples_per_s": result.samples_per_s * students})
            print(f"{name}: {result.samples_per_s:,.0f} samples/s, {result.samples_per_s * students:,.0f} "
                  f"student-samples/s", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--regimes", default=",".join(REGIMES), help=f"comma-separated: {', '.join(REGIMES)}")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.throughput:
        out = throughput(args.pairs)
    else:
        out = [measure(regime, args.repeats) for regime in args.regimes.split(",")]
        print(table(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
