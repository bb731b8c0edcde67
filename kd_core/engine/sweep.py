"""A T × α grid of KD students, plus the CE baseline, trained together: a view over the one engine.

Roles: CE, then one Hinton-KD role per (T, α), row-major over temperatures × alphas; times `cfg.repeats`
seeds. Every role of a seed starts from that seed's initialisation and sees its batches, exactly as the CE
and KD students of `distill` with the same seed, so a grid cell equals the KD student `distill` trains for
its (T, α) (tests/test_sweep.py checks the weights). Each cell's accuracy is the mean over seeds; its gain
over CE is paired by seed, with a 95 % interval (`stats`), so a gain inside the seed noise reads as none.
The best cell is chosen on the validation split, never the test set.

The grid's students learn by Hinton KD, or by KD on standardised logits (`method="kd-std"`): the methods
set by T and α alone (kd_core.engine.roles).

`sweep(run, temperatures, alphas)` yields the engine's own events (kd_core.engine.events), [seed][role] with role 0
the CE baseline and role 1 + i the grid's cell i; `sweep_result` reads a `SweepResult` out of the finished stack, and
`run_sweep` returns it: its `.summary()` is the CLI's JSON and `.frame()` a pandas DataFrame for plots. The Sweep
tab's view is kd_core.views.sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import nn

from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset
from kd_core.engine.diagnosis import stack_teacher_check
from kd_core.engine.events import StackEvent, StackFinished, StackResult
from kd_core.engine.loop import train_stack
from kd_core.engine.roles import CE_ROLE, Role
from kd_core.engine.stats import mean_std, paired_difference
from kd_core.run import Run, as_run, resolve_device

MAX_GRID = 25  # KD students per seed in a sweep (the CE baseline comes on top): bounds memory and CPU
SWEEP_METHODS = ("kd", "kd-std")  # the methods whose loss T and α set (DKD, DIST and the feature methods have no α)


# ------------------------------------------------------------------------------------------ the result

@dataclass(frozen=True, eq=False)
class SweepResult:
    config: RunConfig
    device: str
    temperatures: list[float]
    alphas: list[float]
    teacher_acc: float
    ce_acc: float  # test accuracy, mean over seeds
    kd_acc: list[float]  # row-major over temperatures × alphas, means over seeds
    ce_hidden_acc: float | None  # None unless cfg.hide_class is set
    kd_hidden_acc: list[float] | None
    epochs: int  # epochs completed (fewer than asked when cfg.max_seconds stopped the sweep)
    seconds: float  # training wall time (evaluation excluded)
    samples_per_s: float  # training samples per second, each (seed, sample) counted once for all students
    stopped: str  # "" when all epochs ran, else why training stopped early
    stack: StackResult = field(repr=False)  # every seed's students (role 0 the CE baseline, then the grid)

    @property
    def method(self) -> str:
        """The grid students' method: "kd" or "kd-std"."""
        return self.stack.roles[1].method

    @property
    def cells(self) -> list[tuple[float, float]]:
        return [(t, a) for t in self.temperatures for a in self.alphas]

    def accuracies(self, role: int, split: str = "test") -> list[float]:
        """Per-seed accuracy of role `role` (0 = CE, 1 + cell index) on "test" or "val"."""
        return [row[role] for row in (self.stack.test_acc if split == "test" else self.stack.val_acc)]

    @property
    def grid(self) -> list[dict]:
        hidden = self.kd_hidden_acc or [None] * len(self.cells)
        rows = []
        ce = self.accuracies(0)
        for i, ((t, a), acc, h) in enumerate(zip(self.cells, self.kd_acc, hidden, strict=True)):
            difference = paired_difference(self.accuracies(1 + i), ce)
            rows.append({"T": t, "alpha": a, "kd_acc": acc, "kd_hidden_acc": h,
                         "kd_acc_std": mean_std(self.accuracies(1 + i))[1],
                         "kd_val_acc": mean_std(self.accuracies(1 + i, "val"))[0],
                         "kd_minus_ce": difference.summary(), "kd_wins": difference.wins,
                         "beyond_noise": difference.beyond_noise})
        return rows

    def best(self) -> tuple[float, float]:
        """The (T, α) whose KD students have the highest mean validation accuracy (never the test set's)."""
        val = [mean_std(self.accuracies(1 + i, "val"))[0] for i in range(len(self.cells))]
        return self.cells[max(range(len(val)), key=val.__getitem__)]

    def summary(self) -> dict:
        """The CLI's JSON (docs/contracts.md): {"ce_acc", "grid": [{"T", "alpha", "kd_acc", …}], "seconds", …}."""
        T, alpha = self.best()
        return {"ce_acc": self.ce_acc, "grid": self.grid, "seconds": self.seconds,
                "teacher_acc": self.teacher_acc, "ce_hidden_acc": self.ce_hidden_acc,
                "ce_acc_std": mean_std(self.accuracies(0))[1], "ce_val_acc": mean_std(self.accuracies(0, "val"))[0],
                "best": {"T": T, "alpha": alpha, "chosen_on": "validation"}, "method": self.method,
                "repeats": len(self.stack.seeds), "seeds": list(self.stack.seeds),
                "epochs": self.epochs, "samples_per_s": self.samples_per_s, "students": self.stack.students.copies,
                "stopped": self.stopped, "device": self.device, "config": self.config.__dict__.copy(),
                "diagnosis": [f.to_json() for f in (self.teacher_finding(alpha),) if f]}  # the best cell's α

    def teacher_finding(self, alpha: float):
        """The teacher check (kd_core.engine.diagnosis) against the CE student's validation accuracy."""
        return stack_teacher_check(self.stack, alpha)

    def frame(self):
        """The grid as a pandas DataFrame: T, alpha, kd_acc, kd_hidden_acc, kd_acc_std, kd_val_acc, the gain
        over CE (mean, 95 % interval) and kd_wins, one row per cell."""
        import pandas as pd  # (deferred: the engine does not need it)


        rows = [{**{k: v for k, v in row.items() if k != "kd_minus_ce"},
                 "gain": row["kd_minus_ce"]["mean"],
                 "gain_low": (row["kd_minus_ce"]["ci95"] or [None, None])[0],
                 "gain_high": (row["kd_minus_ce"]["ci95"] or [None, None])[1]} for row in self.grid]
        return pd.DataFrame(rows)

    def kd_student(self, T: float, alpha: float, seed_index: int = 0) -> nn.Module:
        """The trained KD student of one grid cell (the first seed's), as an ordinary module (CPU, eval)."""
        if (T, alpha) not in self.cells:
            raise ValueError(f"(T={T:g}, alpha={alpha:g}) is not in this sweep's grid")
        return self.stack.module(seed_index, 1 + self.cells.index((T, alpha)))

    def ce_student(self, seed_index: int = 0) -> nn.Module:
        return self.stack.module(seed_index, 0)


def check_grid(temperatures: list[float], alphas: list[float]) -> None:
    """ValueError unless both lists are non-empty, without repeats, valid and the grid is capped."""
    if len(temperatures) == 0 or len(alphas) == 0:
        raise ValueError("a sweep needs at least one temperature and at least one alpha")
    for name, values in (("temperatures", temperatures), ("alphas", alphas)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat a value; got {list(values)}")
    for T in temperatures:
        RunConfig(temperature=T).validate()
    for alpha in alphas:
        RunConfig(alpha=alpha).validate()
    size = len(temperatures) * len(alphas)
    if size > MAX_GRID:
        raise ValueError(f"a sweep trains at most {MAX_GRID} KD students; {len(temperatures)} "
                         f"temperatures × {len(alphas)} alphas = {size}")


# ------------------------------------------------------------------------------------------- the view

def grid_roles(temperatures: list[float], alphas: list[float], method: str = "kd") -> list[Role]:
    """CE, then one `method` student per (T, α), row-major over temperatures × alphas."""
    check_grid(temperatures, alphas)
    if method not in SWEEP_METHODS:
        raise ValueError(f"a sweep's grid is T × α, so its method must be one of {', '.join(SWEEP_METHODS)} "
                         f"(the others have no α); got {method!r}")
    return [CE_ROLE, *(Role(f"T={t:g}, α={a:g}", method, float(t), float(a)) for t in temperatures for a in alphas)]


def sweep(run: Run | RunConfig, temperatures: list[float], alphas: list[float], dataset: Dataset | None = None,
          method: str = "kd", train: Callable[..., Iterator[StackEvent]] = train_stack) -> Iterator[StackEvent]:
    """Train the CE baseline and one `method` student per (T, α) of the run together: the engine's events.

    The config's `temperature`, `alpha` and `methods` are ignored (the grid replaces them); every other field
    means what it means for `distill`. `train(run, roles)` is the engine, or the app's stack pool (a sweep takes a
    training slot like any stack). Closing the generator stops training at the next event.
    """
    roles = grid_roles(temperatures, alphas, method)
    if isinstance(run, RunConfig):  # (scripts, tests: where the request enters)
        run = as_run(run, dataset, resolve_device(run.device))
    return train(run, roles)


def role_means(table: tuple | list) -> list[float]:
    """[seed][role] -> per-role mean over seeds."""
    return [mean_std([row[i] for row in table])[0] for i in range(len(table[0]))]


def sweep_result(stack: StackResult, temperatures: list[float], alphas: list[float]) -> SweepResult:
    """The grid's view of a finished stack: role 0 the CE baseline, then the cells."""
    hidden = stack.config.hide_class
    acc = role_means(stack.test_acc)
    hidden_acc = None if hidden is None else role_means([[c[hidden] for c in row] for row in stack.class_acc])
    return SweepResult(
        config=stack.config, device=stack.device, temperatures=[float(t) for t in temperatures],
        alphas=[float(a) for a in alphas], teacher_acc=stack.teacher_acc, ce_acc=acc[0], kd_acc=acc[1:],
        ce_hidden_acc=None if hidden_acc is None else hidden_acc[0],
        kd_hidden_acc=None if hidden_acc is None else hidden_acc[1:], epochs=stack.epochs, seconds=stack.seconds,
        samples_per_s=stack.samples_per_s, stopped=stack.stopped, stack=stack)


def run_sweep(cfg: Run | RunConfig, temperatures: list[float], alphas: list[float],
              dataset: Dataset | None = None, method: str = "kd") -> SweepResult:
    """Run `sweep` to the end and return its result (for the CLI, scripts and tests)."""
    for event in sweep(cfg, temperatures, alphas, dataset, method):
        if isinstance(event, StackFinished):
            return sweep_result(event.result, temperatures, alphas)
    raise RuntimeError("sweep ended without a StackFinished event")


def parse_values(name: str, text: str) -> list[float]:
    """'1, 2, 4' -> [1.0, 2.0, 4.0]; ValueError naming the field otherwise (duplicates dropped)."""
    try:
        values = [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers like 1, 2, 4; got {text!r}") from None
    return sorted(set(values))
