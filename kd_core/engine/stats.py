"""Seed statistics: mean ± std of a student's accuracy over seeds, the paired difference KD − CE with its
95 % interval, and a verdict in plain words that never claims more than the seeds show.

Seeds are the unit of honesty. Seed i's CE and KD students share their initialisation, batches and
training subset, so the difference d_i = KD_i − CE_i is paired; over n seeds its mean d̄, sample standard
deviation s (n − 1 in the denominator) and Student-t interval d̄ ± t₀.₉₇₅,ₙ₋₁ · s / √n describe what a new
seed would do. A difference whose interval contains 0 is "no difference beyond seed-to-seed noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# two-sided 95 % critical values of Student's t by degrees of freedom (n − 1); beyond 30, the normal's
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the std of one value is 0."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Difference:
    """A paired difference over seeds, in the units of its inputs (the app and JSON use fractions)."""

    mean: float
    std: float
    ci95: tuple[float, float] | None  # Student-t interval of the mean; None for a single seed
    wins: int  # seeds where the first beat the second
    n: int

    def summary(self) -> dict:
        return {"mean": self.mean, "std": self.std, "ci95": None if self.ci95 is None else list(self.ci95),
                "n": self.n}

    @property
    def beyond_noise(self) -> bool:
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def paired_difference(first: Sequence[float], second: Sequence[float]) -> Difference:
    """first_i − second_i over seeds i: mean, std, 95 % interval, and how often first > second."""
    if len(first) != len(second) or not first:
        raise ValueError("a paired difference needs two equally long, non-empty lists")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    mean, std = mean_std(differences)
    n = len(differences)
    ci95 = None
    if n > 1:
        half = (T_975[n - 2] if n - 1 <= len(T_975) else 1.960) * std / math.sqrt(n)
        ci95 = (mean - half, mean + half)
    return Difference(mean, std, ci95, sum(d > 0 for d in differences), n)


def verdict(difference: Difference, better: str = "KD", worse: str = "CE") -> str:
    """One sentence, in percentage points, for a difference of accuracies given as fractions."""
    points = 100 * difference.mean
    if difference.n == 1:
        return (f"{better} − {worse} = {points:+.1f} points on one seed: one seed cannot tell a difference "
                f"from luck (train several seeds)")
    low, high = (100 * bound for bound in difference.ci95)
    interval = f"95 % interval {low:+.1f} to {high:+.1f} over {difference.n} seeds"
    ahead = f"{better} ahead in {difference.wins}/{difference.n} seeds"
    if not difference.beyond_noise:
        return f"no difference beyond seed-to-seed noise ({better} − {worse} = {points:+.1f} points, {interval})"
    word = "better" if points > 0 else "worse"
    return (f"{better} {word} than {worse}: {points:+.1f} ± {100 * difference.std:.1f} points "
            f"({interval}), {ahead}")
