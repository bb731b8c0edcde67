"""Choose the app's default run on the validation split: candidate settings × 5 seeds, KD − CE per seed.

    .venv/bin/python bench/choose_defaults.py [--repeats 5] [--json out.json]

Every candidate trains `repeats` CE/KD pairs in one batched pass. The choice looks only at the validation
columns (the paired gain KD − CE on the 5,000 held-out training images, and how many seeds KD wins); the
test columns are printed to report what the chosen setting does, never to choose. README "Presets and
defaults" quotes this script's output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd_core.config import RunConfig  # noqa: E402
from kd_core.engine.stats import paired_difference  # noqa: E402
from kd_core.engine.train import run  # noqa: E402

CANDIDATES = {
    "1k images, 20 epochs, lr 3e-3, T=4, α=0.9": dict(train_size=1000, epochs=20, lr=3e-3, temperature=4.0, alpha=0.9),
    "2k images, 20 epochs, lr 3e-3, T=4, α=0.9": dict(train_size=2000, epochs=20, lr=3e-3, temperature=4.0, alpha=0.9),
    "2k images, 15 epochs, lr 1e-3, T=4, α=0.9": dict(train_size=2000, epochs=15, lr=1e-3, temperature=4.0, alpha=0.9),
    "2k images, 20 epochs, lr 3e-3, T=8, α=0.9": dict(train_size=2000, epochs=20, lr=3e-3, temperature=8.0, alpha=0.9),
    "5k images, 10 epochs, lr 3e-3, T=4, α=0.9": dict(train_size=5000, epochs=10, lr=3e-3, temperature=4.0, alpha=0.9),
    "all 55k images, 3 epochs, lr 1e-3, T=2, α=0.5": dict(train_size=0, epochs=3, lr=1e-3, temperature=2.0, alpha=0.5),
}


def measure(name: str, changes: dict, repeats: int) -> dict:
    result = run(RunConfig(repeats=repeats, **changes))
    val = paired_difference(result.accuracies("kd", "val"), result.accuracies("ce", "val"))
    test = result.difference
    return {"candidate": name, "config": changes, "val_gain": val.mean, "val_ci95": val.ci95, "val_wins": val.wins,
            "ce_val_acc": sum(result.accuracies("ce", "val")) / repeats,
            "kd_val_acc": sum(result.accuracies("kd", "val")) / repeats,
            "test_gain": test.mean, "test_ci95": test.ci95, "test_wins": test.wins,
            "ce_acc": result.ce_acc, "kd_acc": result.kd_acc, "seconds": result.seconds, "verdict": result.verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="substring of the candidates to run")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for name, changes in CANDIDATES.items():
        if args.only and args.only not in name:
            continue
        row = measure(name, changes, args.repeats)
        rows.append(row)
        print(f"{name:48s} val KD−CE {100 * row['val_gain']:+.2f} pts ({row['val_wins']}/{args.repeats})  "
              f"test CE {100 * row['ce_acc']:.2f} KD {100 * row['kd_acc']:.2f} KD−CE {100 * row['test_gain']:+.2f} "
              f"({row['test_wins']}/{args.repeats})  {row['seconds']:.1f}s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
