"""Plot frames: the tidy pandas DataFrames the app's charts draw, built from training events.

Each frame is "long" (one row per point, a column naming the series) so a chart colours by that
column: loss curves per student, one image's class probabilities at a temperature (the app draws T = 1
beside the chosen T), and a T × α sweep's accuracies. The app (gr.LinePlot, gr.BarPlot) or a notebook
(`frame.pivot(...).plot()`) draws the frames. Charts Gradio has no native form for are matplotlib figures
(imported only when one is drawn): the validation-accuracy curves with their band over seeds, the sweep
heatmap, and the hidden-class bias curve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from .predict import softened
from .train import Evaluated, Step

CE, KD, TEACHER = "CE student", "KD student", "teacher"
# a colour per student name (kd_core.roles.NAMES), the same in every chart
COLOURS = {CE: "#e4572e", KD: "#2e86ab", "KD-std student": "#59a14f", "DKD student": "#9c6ade",
           "DKD-std student": "#edc948", "DIST student": "#b07aa1", "Hint student": "#ff9da7",
           "Cosine student": "#76b7b2", TEACHER: "#7f7f7f"}
STUDENT_NAMES = tuple(name for name in COLOURS if name != TEACHER)


def short_name(student: str) -> str:
    """"DKD student" -> "DKD": the loss chart's legend (titled "student") fits six of these on a line."""
    return student.removesuffix(" student")


LOSS_COLOURS = {short_name(name): COLOURS[name] for name in STUDENT_NAMES}  # the loss chart's colour per series
CE_HIDDEN, KD_HIDDEN = "CE hidden", "KD hidden"


def loss_frame(steps: Sequence[Step], names: Sequence[str] = (CE, KD)) -> pd.DataFrame:
    """Columns step, loss, student: each Step event gives a point per student (CE and KD; with more methods,
    one per name of `names`, from Step.losses), the student by its `short_name`."""
    rows = [(s.step, loss, short_name(student)) for s in steps
            for loss, student in zip(s.losses if len(names) > 2 else (s.ce_loss, s.kd_loss), names, strict=True)]
    return typed(pd.DataFrame(rows, columns=["step", "loss", "student"]), step="int64", loss="float64")


def accuracy_figure(evaluations: Sequence[Evaluated], teacher_acc: float | None, total_epochs: int,
                    hidden: bool = False, names: Sequence[str] = (CE, KD)):
    """A matplotlib Figure: each student's mean validation accuracy over its seeds as a line, with a band of
    ± one standard deviation across seeds, against epochs (fractional); the teacher as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to images only
    from matplotlib.figure import Figure

    from .stats import mean_std

    figure = Figure(figsize=(6.4, 3.4), layout="constrained")
    axes = figure.subplots()
    x = [e.progress for e in evaluations]
    for role, name in enumerate(names):
        colour = COLOURS.get(name, None)
        stats = [mean_std(e.accs[role]) if e.accs else (math.nan, 0.0) for e in evaluations]
        mean = [100 * m for m, _ in stats]
        low, high = [100 * (m - s) for m, s in stats], [100 * (m + s) for m, s in stats]
        axes.plot(x, mean, color=colour, label=name, linewidth=2)
        axes.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
    if hidden:
        for name, field, colour in ((CE_HIDDEN, "ce_hidden_acc", "#f4a259"), (KD_HIDDEN, "kd_hidden_acc", "#76c7e8")):
            axes.plot(x, [100 * getattr(e, field) for e in evaluations], color=colour, label=name, linestyle=":")
    if teacher_acc is not None:
        axes.axhline(100 * teacher_acc, color="#7f7f7f", linestyle="--", label=TEACHER)
    seeds = len(evaluations[-1].ce_accs) if evaluations else 0
    axes.set_xlim(0, total_epochs)
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation accuracy (%)")
    axes.set_title(f"Validation accuracy (500 held-out images): mean of {seeds} seed(s), band ± 1 std",
                   fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize=8)
    return figure


def bias_figure(curve: Sequence[dict], value: float, auto: float, class_name: str):
    """A matplotlib Figure: accuracy on the hidden class and overall, for both students, against the bias
    added to the hidden class's logit; the current value and the automatic bias marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.0), layout="constrained")
    axes = figure.subplots()
    x = [row["bias"] for row in curve]
    for key, label, colour, style in (("kd_hidden_acc", f"KD: {class_name}", "#2e86ab", "-"),
                                      ("kd_acc", "KD: all classes", "#2e86ab", ":"),
                                      ("ce_hidden_acc", f"CE: {class_name}", "#e4572e", "-"),
                                      ("ce_acc", "CE: all classes", "#e4572e", ":")):
        axes.plot(x, [100 * row[key] for row in curve], color=colour, linestyle=style, label=label)
    axes.axvline(value, color="black", linewidth=1, label=f"chosen +{value:g}")
    axes.axvline(auto, color="#7f7f7f", linestyle="--", linewidth=1, label=f"automatic +{auto:.2f}")
    axes.set_xlabel(f"bias added to the {class_name} logit")
    axes.set_ylabel("test accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center right")
    return figure


def figure_data_url(figure, fmt: str = "webp") -> str:
    """A matplotlib Figure rendered once as a data URL, the form gr.Plot sends to the browser."""
    import base64
    import io

    with io.BytesIO() as buffer:
        figure.savefig(buffer, format=fmt)
        return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def with_every_series(frame: pd.DataFrame, column: str, series: Sequence[str], *, x: str) -> pd.DataFrame:
    """`frame` after one row per name in `series` at x = 0 with every other number missing.

    A chart draws nothing for those rows, but its colour legend knows every series from the first
    update on: Gradio's native plots fix their colour domain when a chart is first drawn, so a run
    that started from an empty frame would otherwise draw every later line without a colour.
    """
    placeholders = pd.DataFrame({name: [float("nan")] * len(series) for name in frame.columns})
    placeholders[column] = list(series)
    placeholders[x] = 0
    return pd.concat([placeholders.astype(frame.dtypes.to_dict()), frame], ignore_index=True)


def probability_frame(logits: torch.Tensor, classes: Sequence[str], temperature: float = 1.0) -> pd.DataFrame:
    """Columns class, probability: softmax(logits / T) of one image, one row per class in class order."""
    probabilities = softened(logits, temperature).tolist()
    return pd.DataFrame({"class": list(classes), "probability": probabilities})


def typed(frame: pd.DataFrame, **dtypes: str) -> pd.DataFrame:
    """Numeric columns stay numeric even when the frame is empty (a chart then knows its axes' kind)."""
    return frame.astype(dtypes)


def entropy_bits(probabilities: torch.Tensor) -> float:
    """Shannon entropy in bits: 0 for a one-hot distribution, log2(K) for a uniform one."""
    p = probabilities.float().clamp_min(1e-12)
    return float(-(p * p.log2()).sum())


def sweep_frame(temperatures: Sequence[float], alphas: Sequence[float],
                kd_acc: Sequence[float]) -> pd.DataFrame:
    """Columns T, alpha, accuracy (% of the test set): one row per KD student, row-major over T × α."""
    rows = [(t, a, round(100 * acc, 2)) for (t, a), acc in zip(
        [(t, a) for t in temperatures for a in alphas], kd_acc, strict=True)]
    return typed(pd.DataFrame(rows, columns=["T", "alpha", "accuracy"]), T="float64", alpha="float64",
                 accuracy="float64")


def sweep_heatmap(frame: pd.DataFrame, ce_acc: float, title: str = "", ce_std: float = 0.0):
    """A matplotlib Figure: KD-student accuracy over T (rows) × α (columns), each cell annotated with its
    mean (and the seeds it won), coloured by its gain over the CE baseline (`ce_acc`, a fraction) when that
    gain is beyond the seed noise (its 95 % interval excludes 0: blue beats CE, red loses to it), and white
    when it is not (or when there is one seed only)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to images only
    from matplotlib.figure import Figure

    grid = frame.pivot(index="T", columns="alpha", values="accuracy")
    gain = grid.to_numpy() - 100 * ce_acc
    if "beyond_noise" in frame:
        beyond = frame.pivot(index="T", columns="alpha", values="beyond_noise").to_numpy().astype(bool)
        gain = gain * beyond
    limit = max(abs(gain).max(), 0.5)
    size = (1.3 * len(grid.columns) + 2.5, 0.7 * len(grid.index) + 1.8)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(gain, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(grid.columns)), [f"{a:g}" for a in grid.columns])
    axes.set_yticks(range(len(grid.index)), [f"{t:g}" for t in grid.index])
    axes.set_xlabel("α (weight on the teacher's soft targets)")
    axes.set_ylabel("temperature T")
    wins = frame.pivot(index="T", columns="alpha", values="wins") if "wins" in frame else None
    for row, t in enumerate(grid.index):
        for col, a in enumerate(grid.columns):
            label = f"{grid.loc[t, a]:.1f}"
            if wins is not None and not math.isnan(wins.loc[t, a]):
                label += f"\n{int(wins.loc[t, a])}/{int(frame['seeds'].iloc[0])}"
            axes.text(col, row, label, ha="center", va="center", fontsize=9)
    figure.colorbar(image, ax=axes, label="KD − CE beyond seed noise (points)")
    spread = f" ± {100 * ce_std:.1f}" if ce_std else ""
    axes.set_title(title or f"KD test accuracy (%), seeds won; CE {100 * ce_acc:.1f}{spread}%", fontsize=10)
    return figure


def sweep_lines(frame: pd.DataFrame, series: str) -> pd.DataFrame:
    """`frame` with the `series` column ("T" or "alpha") as labels like "α=0.5", one line per label."""
    prefix = {"T": "T=", "alpha": "α="}[series]
    return frame.assign(**{series: [f"{prefix}{value:g}" for value in frame[series]]})
