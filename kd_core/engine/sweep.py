"""A T × α grid of KD students, plus the CE baseline, trained together: a view over the one engine.

Roles: CE, then one Hinton-KD role per (T, α), row-major over temperatures × alphas; times `cfg.repeats`
seeds. Every role of a seed starts from that seed's initialisation and sees its batches, exactly as the CE
and KD students of `distill` with the same seed, so a grid cell equals the KD student `distill` trains for
its (T, α) (tests/test_sweep.py checks the weights). Each cell's accuracy is the mean over seeds; its gain
over CE is paired by seed, with a 95 % interval (`stats`), so a gain inside the seed noise reads as none.
The best cell is chosen on the validation split, never the test set.

The grid's students learn by Hinton KD, or by KD on standardised logits (`method="kd-std"`): the methods
set by T and α alone (kd_core.engine.roles).

`sweep(cfg, temperatures, alphas)` yields `SweepStarted`, `SweepStep`* (at most one per
`cfg.event_interval_s`), `SweepEvaluated` (`cfg.evaluations` times, on the live validation subset) and
`SweepFinished(result)`; `run_sweep` returns the `SweepResult`, whose `.summary()` is the CLI's JSON and
`.frame()` a pandas DataFrame for plots.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
from torch import nn

from kd_core.config import RunConfig
from kd_core.data.datasets import Dataset
from kd_core.engine.loop import StackEvaluated, StackFinished, StackResult, StackStarted, StackStep, train_stack
from kd_core.engine.roles import CE_ROLE, Role
from kd_core.engine.stats import mean_std, paired_difference
from kd_core.views import plots

MAX_GRID = 25  # KD students per seed in a sweep (the CE baseline comes on top): bounds memory and CPU
SWEEP_METHODS = ("kd", "kd-std")  # the methods whose loss T and α set (DKD, DIST and the feature methods have no α)


# ------------------------------------------------------------------------------------------ events

@dataclass(frozen=True)
class SweepStarted:
    config: RunConfig
    device: str
    grid: list[tuple[float, float]]  # (T, α) per KD student, row-major over temperatures × alphas
    teacher_acc: float
    total_steps: int
    train_samples: int  # labelled samples per epoch every student sees
    steps_per_epoch: int
    logits_seconds: float  # time to get the teacher's logits (0 when already in memory)
    seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class SweepStep:
    epoch: int  # 1-based epoch this step belongs to
    step: int  # steps done so far, over all epochs
    total_steps: int
    elapsed_s: float  # training wall time so far (evaluation excluded)
    ce_loss: float  # the CE baseline's loss, mean over seeds and over the steps since the previous SweepStep
    kd_loss: list[float]  # each grid student's full loss, same averaging and order as the grid


@dataclass(frozen=True)
class SweepEvaluated:
    epoch: int  # the epoch in progress (completed at its end)
    step: int
    ce_acc: float  # the CE baseline's accuracy on the live validation subset, mean over seeds
    kd_acc: list[float]  # per grid student, same order as SweepStarted.grid
    elapsed_s: float
    ce_hidden_acc: float | None = None  # on the subset's images of the hidden class, when one is hidden
    kd_hidden_acc: list[float] | None = None


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
                "stopped": self.stopped, "device": self.device, "config": self.config.__dict__.copy()}

    def frame(self):
        """The grid as a pandas DataFrame: T, alpha, kd_acc, kd_hidden_acc, kd_acc_std, kd_val_acc, the gain
        over CE (mean, 95 % interval) and kd_wins, one row per cell."""
        import pandas as pd

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


@dataclass(frozen=True)
class SweepFinished:
    result: SweepResult


SweepEvent = SweepStarted | SweepStep | SweepEvaluated | SweepFinished


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

def sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float], dataset: Dataset | None = None,
          method: str = "kd"):
    """Train the CE baseline and one `method` student per (T, α) of `cfg`'s run together; yields events.

    `cfg.temperature`, `cfg.alpha` and `cfg.methods` are ignored (the grid replaces them); every other field
    means what it means for `distill`. Closing the generator stops training at the next event.
    """
    check_grid(temperatures, alphas)
    if method not in SWEEP_METHODS:
        raise ValueError(f"a sweep's grid is T × α, so its method must be one of {', '.join(SWEEP_METHODS)} "
                         f"(the others have no α); got {method!r}")
    grid = [(float(t), float(a)) for t in temperatures for a in alphas]
    roles = [CE_ROLE, *(Role(f"T={t:g}, α={a:g}", method, t, a) for t, a in grid)]
    for event in train_stack(cfg, roles, dataset):
        yield sweep_event(event, grid, temperatures, alphas)


def role_means(table: tuple | list) -> list[float]:
    """[seed][role] -> per-role mean over seeds."""
    return [mean_std([row[i] for row in table])[0] for i in range(len(table[0]))]


def sweep_event(event, grid: list[tuple[float, float]], temperatures: list[float], alphas: list[float]):
    if isinstance(event, StackStarted):
        return SweepStarted(event.config, event.device, grid, event.teacher_acc, event.total_steps,
                            event.train_samples, event.steps_per_epoch, event.logits_seconds, event.seeds)
    if isinstance(event, StackStep):
        losses = role_means(event.losses)
        return SweepStep(event.epoch, event.step, event.total_steps, event.elapsed_s, losses[0], losses[1:])
    if isinstance(event, StackEvaluated):
        acc = role_means(event.accuracy)
        hidden = None if event.hidden_accuracy is None else role_means(event.hidden_accuracy)
        return SweepEvaluated(event.epoch, event.step, acc[0], acc[1:], event.elapsed_s,
                              None if hidden is None else hidden[0], None if hidden is None else hidden[1:])
    assert isinstance(event, StackFinished)
    stack, hidden = event.result, event.result.config.hide_class
    acc = role_means(stack.test_acc)
    hidden_acc = None if hidden is None else role_means([[c[hidden] for c in row] for row in stack.class_acc])
    return SweepFinished(SweepResult(
        config=stack.config, device=stack.device, temperatures=[float(t) for t in temperatures],
        alphas=[float(a) for a in alphas], teacher_acc=stack.teacher_acc, ce_acc=acc[0], kd_acc=acc[1:],
        ce_hidden_acc=None if hidden_acc is None else hidden_acc[0],
        kd_hidden_acc=None if hidden_acc is None else hidden_acc[1:], epochs=stack.epochs, seconds=stack.seconds,
        samples_per_s=stack.samples_per_s, stopped=stack.stopped, stack=stack))


def run_sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float],
              dataset: Dataset | None = None, method: str = "kd") -> SweepResult:
    """Run `sweep` to the end and return its result (for the CLI, scripts and tests)."""
    for event in sweep(cfg, temperatures, alphas, dataset, method):
        if isinstance(event, SweepFinished):
            return event.result
    raise RuntimeError("sweep ended without a SweepFinished event")


# ------------------------------------------------------------------------------------ the Sweep tab's view

@dataclass(frozen=True, eq=False)
class SweepView:
    """What the Sweep tab shows after one sweep event."""
    status: str
    heatmap: str | None  # at the end, the heatmap drawn once as a data URL (all viewers share it); None = none yet
    frame: pd.DataFrame  # T, alpha, accuracy (%); accuracy missing until an epoch has been evaluated
    done: bool


def finished_sweep_view(result, temperatures: list[float], alphas: list[float]) -> SweepView:
    """The heatmap of test accuracy coloured by the gain beyond seed noise, and the best cell chosen on the
    validation split."""
    grid = result.grid
    frame = plots.sweep_frame(temperatures, alphas, result.kd_acc).assign(
        gain=[round(100 * g["kd_minus_ce"]["mean"], 2) for g in grid],
        wins=[g["kd_wins"] for g in grid], beyond_noise=[g["beyond_noise"] for g in grid],
        seeds=len(result.stack.seeds))
    ce_mean, ce_std = mean_std(result.accuracies(0))
    T, alpha = result.best()
    beyond = sum(g["beyond_noise"] and g["kd_minus_ce"]["mean"] > 0 for g in grid)
    status = (f"done in {result.seconds:.1f} s ({result.epochs} epoch(s), {len(result.stack.seeds)} seeds): best "
              f"on validation T={T:g}, α={alpha:g}; {beyond} of {len(grid)} cells beat CE "
              f"({100 * ce_mean:.1f} ± {100 * ce_std:.1f}% test) beyond seed noise")
    # drawn once here, in the run's own thread: every viewer of a shared or replayed sweep gets the same image
    heatmap = plots.figure_data_url(plots.sweep_heatmap(frame, ce_mean, ce_std=ce_std))
    return SweepView(status, heatmap, frame, True)


def parse_values(name: str, text: str) -> list[float]:
    """'1, 2, 4' -> [1.0, 2.0, 4.0]; ValueError naming the field otherwise (duplicates dropped)."""
    try:
        values = [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers like 1, 2, 4; got {text!r}") from None
    return sorted(set(values))


def live_sweep(cfg: RunConfig, temperatures: list[float], alphas: list[float]) -> Iterator[SweepView]:
    """Train the T × α grid; yield a SweepView per event, the heatmap at the end."""
    # every (T, α) cell from the first update on, accuracy missing: the line charts fix their colour
    # legend on their first frame (see plots.with_every_series), so each line must be named already
    empty = plots.sweep_frame(temperatures, alphas, [math.nan] * (len(temperatures) * len(alphas)))
    events = sweep(cfg, temperatures, alphas)
    try:
        yield SweepView("loading the data and the teacher's logits…", None, empty, False)
        total = 1
        for event in events:
            if isinstance(event, SweepStarted):
                total = event.total_steps
                yield SweepView(f"{len(event.grid)} KD students + the CE baseline, trained together on "
                                f"{event.device}: {total:,} steps", None, empty, False)
            elif isinstance(event, SweepStep):
                yield SweepView(f"epoch {event.epoch}/{cfg.epochs} · step {event.step:,}/{total:,} · "
                                f"{event.elapsed_s:.1f} s", None, empty, False)
            elif isinstance(event, SweepEvaluated):
                frame = plots.sweep_frame(temperatures, alphas, event.kd_acc)
                status = (f"epoch {event.epoch}/{cfg.epochs}, validation subset: CE baseline "
                          f"{100 * event.ce_acc:.1f}%, best KD cell so far {frame['accuracy'].max():.1f}%")
                yield SweepView(status, None, frame, False)
            elif isinstance(event, SweepFinished):
                yield finished_sweep_view(event.result, temperatures, alphas)
    finally:
        events.close()

