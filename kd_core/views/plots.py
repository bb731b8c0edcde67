"""Plot frames: the tidy pandas DataFrames the app's charts draw, built from training events.

Each frame is "long" (one row per point, a column naming the series) so a chart colours by that
column: loss curves per student, one image's class probabilities at a temperature (the app draws T = 1
beside the chosen T), and a T × α sweep's accuracies. The app (gr.LinePlot, gr.BarPlot) or a notebook
(`frame.pivot(...).plot()`) draws the frames. Charts Gradio has no native form for are Vega-Lite specs, which
the browser draws too (the validation-accuracy curves with their band over seeds, the hidden-class bias
curve), or a matplotlib figure (the sweep heatmap, drawn once per sweep).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from kd_core.engine.loop import StackEvaluated, StackStep
from kd_core.models.predict import softened

CE, KD, TEACHER = "CE student", "KD student", "teacher"
# a colour per student name (kd_core.engine.roles.NAMES), the same in every chart
COLOURS = {CE: "#e4572e", KD: "#2e86ab", "KD-std student": "#59a14f", "DKD student": "#9c6ade",
           "DKD-std student": "#edc948", "DIST student": "#b07aa1", "Hint student": "#ff9da7",
           "Cosine student": "#76b7b2", TEACHER: "#7f7f7f"}
STUDENT_NAMES = tuple(name for name in COLOURS if name != TEACHER)


def short_name(student: str) -> str:
    """"DKD student" -> "DKD": the loss chart's legend (titled "student") fits six of these on a line."""
    return student.removesuffix(" student")


LOSS_COLOURS = {short_name(name): COLOURS[name] for name in STUDENT_NAMES}  # the loss chart's colour per series
CE_HIDDEN, KD_HIDDEN = "CE hidden", "KD hidden"
HIDDEN_COLOURS = {CE_HIDDEN: "#f4a259", KD_HIDDEN: "#76c7e8"}  # lighter than their students' lines


def loss_frame(steps: Sequence[StackStep], names: Sequence[str] = (CE, KD)) -> pd.DataFrame:
    """Columns step, loss, student: each engine step event gives a point per student (role), its loss the mean
    over the seeds, the student by its `short_name`."""
    rows = [(s.step, s.loss(role), short_name(student)) for s in steps for role, student in enumerate(names)]
    return typed(pd.DataFrame(rows, columns=["step", "loss", "student"]), step="int64", loss="float64")


def accuracy_spec(evaluations: Sequence[StackEvaluated], teacher_acc: float | None, total_epochs: int,
                  names: Sequence[str] = (CE, KD), kd: int = 1) -> dict:
    """A Vega-Lite spec (the browser draws it; gr.Plot takes it as an "altair" plot): each student's (role's)
    mean validation accuracy over its seeds as a line, with a band of ± one standard deviation across seeds,
    against epochs (fractional); the teacher as a dashed rule; with a hidden class, the accuracy on it of the CE
    students (role 0) and the KD students (role `kd`)."""
    from kd_core.engine.stats import mean_std

    rows = []
    hidden = bool(evaluations) and evaluations[0].hidden_accuracy is not None
    for e in evaluations:
        for role, name in enumerate(names):
            mean, std = mean_std(e.per_seed(role))
            if math.isnan(mean):  # a diverged student: no point (Vega-Lite's JSON has no NaN)
                continue
            rows.append({"epoch": e.progress, "student": name, "accuracy": 100 * mean,
                         "low": 100 * (mean - std), "high": 100 * (mean + std)})
        if hidden:
            rows += [{"epoch": e.progress, "student": name, "accuracy": 100 * e.hidden_mean(role), "low": None,
                      "high": None} for name, role in ((CE_HIDDEN, 0), (KD_HIDDEN, kd))]
    series = [*names, *((CE_HIDDEN, KD_HIDDEN) if hidden else ())]
    colour = {"field": "student", "type": "nominal", "title": None, "legend": {"orient": "bottom-right"},
              "scale": {"domain": series,
                        "range": [{**COLOURS, **HIDDEN_COLOURS}.get(name, "#333333") for name in series]}}
    x = {"field": "epoch", "type": "quantitative", "title": "epoch", "scale": {"domain": [0, total_epochs]}}
    y = {"field": "accuracy", "type": "quantitative", "title": "validation accuracy (%)",
         "scale": {"zero": False}}
    layers = [
        {"mark": {"type": "area", "opacity": 0.2}, "transform": [{"filter": "datum.low != null"}],
         "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"},
                      "color": colour}},
        {"mark": {"type": "line", "strokeWidth": 2},
         "encoding": {"x": x, "y": y, "color": colour,
                      "strokeDash": {"condition": {"test": "datum.low == null", "value": [2, 2]}, "value": [1, 0]},
                      "tooltip": [{"field": "student"}, {"field": "epoch", "format": ".2f"},
                                  {"field": "accuracy", "format": ".1f"}]}},
    ]
    if teacher_acc is not None:
        layers.append({"data": {"values": [{"teacher": 100 * teacher_acc}]},
                       "mark": {"type": "rule", "strokeDash": [6, 4], "color": COLOURS[TEACHER]},
                       "encoding": {"y": {"field": "teacher", "type": "quantitative"},
                                    "tooltip": [{"field": "teacher", "title": "teacher (%)", "format": ".1f"}]}})
    seeds = len(evaluations[-1].accuracy) if evaluations else 0
    # a width in pixels: gr.Plot fits only its own chart kinds to the page, and leaves "container" at zero width
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 380, "height": 260,
            "title": {"text": f"Validation accuracy: mean of {seeds} seed(s), band ± 1 std",
                      "fontSize": 12},
            "data": {"values": rows}, "layer": layers}


def bias_spec(curve: Sequence[dict], value: float, auto: float, class_name: str) -> dict:
    """A Vega-Lite spec: accuracy on the hidden class and overall, for both students, against the bias added to
    the hidden class's logit; the current value and the automatic bias marked."""
    lines = (("kd_hidden_acc", f"KD: {class_name}", COLOURS[KD], [1, 0]), ("kd_acc", "KD: all classes", COLOURS[KD],
             [2, 2]), ("ce_hidden_acc", f"CE: {class_name}", COLOURS[CE], [1, 0]),
             ("ce_acc", "CE: all classes", COLOURS[CE], [2, 2]))
    rows = [{"bias": row["bias"], "curve": label, "accuracy": 100 * row[key]} for row in curve
            for key, label, _, _ in lines]
    domain = [label for _, label, _, _ in lines]
    marks = [{"bias": value, "mark": f"chosen +{value:g}"}, {"bias": auto, "mark": f"automatic +{auto:.2f}"}]
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 520, "height": 240,
            "data": {"values": rows},
            "layer": [
                {"mark": "line", "encoding": {
                    "x": {"field": "bias", "type": "quantitative", "title": f"bias added to the {class_name} logit"},
                    "y": {"field": "accuracy", "type": "quantitative", "title": "test accuracy (%)",
                          "scale": {"domain": [0, 100]}},
                    "color": {"field": "curve", "type": "nominal", "title": None,
                              "scale": {"domain": domain, "range": [c for _, _, c, _ in lines]}},
                    "strokeDash": {"field": "curve", "type": "nominal", "legend": None,
                                   "scale": {"domain": domain, "range": [d for _, _, _, d in lines]}}}},
                {"data": {"values": marks}, "mark": {"type": "rule"},
                 "encoding": {"x": {"field": "bias", "type": "quantitative"},
                              "strokeDash": {"field": "mark", "type": "nominal", "title": None,
                                             "scale": {"range": [[1, 0], [6, 4]]}},
                              "tooltip": [{"field": "mark"}]}}]}


def spec_json(spec: dict) -> str:
    """A Vega-Lite spec as the JSON string gr.Plot's "altair" PlotData carries (no altair package needed)."""
    import json

    return json.dumps(spec, allow_nan=False, separators=(",", ":"))


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


def split_frame(frame: pd.DataFrame) -> dict:
    """A frame as the browser's native charts take it: {"columns", "data" (rows), "datatypes"} (Gradio's
    LinePlot payload, with "mark" added by the app), missing numbers as null."""
    import json

    kinds = {column: "quantitative" if pd.api.types.is_numeric_dtype(frame[column]) else "nominal"
             for column in frame.columns}
    split = json.loads(frame.to_json(orient="split"))
    return {"columns": split["columns"], "data": split["data"], "datatypes": kinds}


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


def text_colour(rgba: Sequence[float]) -> str:
    """"white" on a dark cell, "black" on a light one: whichever contrasts more with the cell's colour (WCAG's
    relative luminance of sRGB in [0, 1]; the two contrasts are equal at a luminance of 0.179)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "white" if luminance < 0.179 else "black"


def cell_label(accuracy: float, gain: float | None = None, half_width: float | None = None,
               wins: float | None = None, seeds: int | None = None) -> str:
    """A sweep cell's text: its accuracy (%), then KD − CE (points) ± the half-width of its 95 % interval (so a
    white cell with a large mean says why it is white: its interval holds 0), then the seeds it won."""
    lines = [f"{accuracy:.1f}"]
    if gain is not None and not math.isnan(gain):
        spread = "" if half_width is None or math.isnan(half_width) else f" ± {half_width:.1f}"
        lines.append(f"{gain:+.1f}{spread}")
    if wins is not None and not math.isnan(wins) and seeds:
        lines.append(f"{int(wins)}/{seeds}")
    return "\n".join(lines)


def sweep_heatmap(frame: pd.DataFrame, ce_acc: float, title: str = "", ce_std: float = 0.0):
    """A matplotlib Figure: KD-student accuracy over T (rows) × α (columns), each cell annotated with its
    mean, its gain over CE with its 95 % interval (columns gain, gain_low, gain_high, when present) and the
    seeds it won, coloured by its gain over the CE baseline (`ce_acc`, a fraction) when that gain is beyond the
    seed noise (its 95 % interval excludes 0: blue beats CE, red loses to it), and white when it is not (or
    when there is one seed only). The text is white on the darkest cells (`text_colour`)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to images only
    from matplotlib.figure import Figure

    grid = frame.pivot(index="T", columns="alpha", values="accuracy")
    gain = grid.to_numpy() - 100 * ce_acc
    if "beyond_noise" in frame:
        beyond = frame.pivot(index="T", columns="alpha", values="beyond_noise").to_numpy().astype(bool)
        gain = gain * beyond
    limit = max(abs(gain).max(), 0.5)
    size = (1.3 * len(grid.columns) + 2.5, 0.85 * len(grid.index) + 1.8)
    figure = Figure(figsize=size, layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(gain, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    axes.set_xticks(range(len(grid.columns)), [f"{a:g}" for a in grid.columns])
    axes.set_yticks(range(len(grid.index)), [f"{t:g}" for t in grid.index])
    axes.set_xlabel("α (weight on the teacher's soft targets)")
    axes.set_ylabel("temperature T")
    cells = {(row.T, row.alpha): row for row in frame.itertuples(index=False)}
    seeds = int(frame["seeds"].iloc[0]) if "seeds" in frame else None
    for row, t in enumerate(grid.index):
        for col, a in enumerate(grid.columns):
            cell = cells[(t, a)]
            half = ((cell.gain_high - cell.gain_low) / 2 if "gain_low" in frame else None)
            label = cell_label(grid.loc[t, a], getattr(cell, "gain", None), half, getattr(cell, "wins", None), seeds)
            colour = text_colour(image.cmap(image.norm(gain[row, col])))
            axes.text(col, row, label, ha="center", va="center", fontsize=9, color=colour)
    figure.colorbar(image, ax=axes, label="KD − CE beyond seed noise (points)")
    spread = f" ± {100 * ce_std:.1f}" if ce_std else ""
    axes.set_title(title or f"KD test accuracy (%), KD − CE ± 95 % interval (points), seeds won; "
                            f"CE {100 * ce_acc:.1f}{spread}%", fontsize=10)
    return figure


def sweep_lines(frame: pd.DataFrame, series: str) -> pd.DataFrame:
    """`frame` with the `series` column ("T" or "alpha") as labels like "α=0.5", one line per label."""
    prefix = {"T": "T=", "alpha": "α="}[series]
    return frame.assign(**{series: [f"{prefix}{value:g}" for value in frame[series]]})
