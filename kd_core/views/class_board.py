"""The class board's view: what /class_board returns, and the board's two charts (KD − CE against T and
against α, Vega-Lite specs the browser draws: a point per run with its 95 % interval, the class's mean per value).

The tab and the projector view (`/?class=CODE&view=board`) show the same charts; the projector's are larger,
with large type, for a room to read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from kd_core.serve.class_board import Point

AXES = {"T": "temperature T", "alpha": "α (weight on the teacher's soft targets)"}
POINT, MEAN = "#2e86ab", "#e4572e"  # a run's point and interval; the class's mean per value
SUBTITLE = "a dot per run with its 95 % interval; the line: the class's mean"


@dataclass(frozen=True)
class Size:
    """A chart's size and type, in pixels."""

    width: int
    height: int
    font: int


# the projector's fit side by side at 1280 px wide (a 720p projector); gr.Plot does not shrink a Vega-Lite chart
TAB, PROJECTOR = Size(440, 280, 12), Size(520, 400, 20)


def board_payload(code: str, points: Sequence[Point], training: int) -> dict:
    """/class_board's answer: {"class", "training", "rows": [{"T", "alpha", "methods", "seeds", "kd_minus_ce",
    "ci95", "kd_wins"}]}, oldest run first, differences as fractions."""
    return {"class": code, "training": training, "rows": [point.row() for point in points]}


def class_means(points: Sequence[Point], axis: str) -> list[tuple[float, float, int]]:
    """(value, mean KD − CE in points, runs) per distinct value of `axis` ("T" or "alpha"), in order."""
    by_value: dict[float, list[float]] = defaultdict(list)
    for point in points:
        by_value[getattr(point, axis)].append(100 * point.kd_minus_ce)
    return [(value, sum(gains) / len(gains), len(gains)) for value, gains in sorted(by_value.items())]


def board_spec(points: Sequence[Point], axis: str, size: Size = TAB) -> dict:
    """A Vega-Lite spec: KD − CE (percentage points) against `axis` ("T" or "alpha"), a dot per run with a rule
    for its 95 % interval (none for a single seed), the class's mean per value as a line, and zero as a rule."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}; got {axis!r}")
    runs = [{"x": getattr(p, axis), "gain": 100 * p.kd_minus_ce,
             "low": None if p.ci95 is None else 100 * p.ci95[0], "high": None if p.ci95 is None else 100 * p.ci95[1],
             "seeds": p.seeds, "wins": f"{p.kd_wins}/{p.seeds}", "T": p.T, "alpha": p.alpha,
             "methods": ", ".join(p.methods)} for p in points]
    means = [{"x": value, "mean": mean, "runs": n} for value, mean, n in class_means(points, axis)]
    # a margin round the values, so that a dot at an edge is whole; α keeps its whole range and its ticks in it
    scale = {"domain": [-0.05, 1.05], "nice": False} if axis == "alpha" else {"zero": False, "padding": size.font}
    x = {"field": "x", "type": "quantitative", "title": AXES[axis], "scale": scale,
         **({"axis": {"values": [0, 0.2, 0.4, 0.6, 0.8, 1]}} if axis == "alpha" else {})}
    # at least ±2 points in view: an empty board (only the zero line) otherwise gets ticks like 0.000000
    y = {"field": "gain", "type": "quantitative", "title": "KD − CE (points)",
         "scale": {"domain": {"unionWith": [-2, 2]}}}
    layers = [
        {"data": {"values": [{"zero": 0}]}, "mark": {"type": "rule", "color": "#7f7f7f", "strokeDash": [4, 4]},
         "encoding": {"y": {"field": "zero", "type": "quantitative"}}},
        {"data": {"values": runs}, "transform": [{"filter": "datum.low != null"}],
         "mark": {"type": "rule", "color": POINT, "opacity": 0.5, "strokeWidth": 2},
         "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}},
        {"data": {"values": runs}, "mark": {"type": "point", "filled": True, "color": POINT, "size": size.font * 6},
         "encoding": {"x": x, "y": y, "tooltip": [
             {"field": "T"}, {"field": "alpha", "title": "α"}, {"field": "methods"},
             {"field": "gain", "title": "KD − CE (points)", "format": "+.2f"},
             {"field": "low", "title": "95 % from", "format": "+.2f"}, {"field": "high", "title": "to",
                                                                        "format": "+.2f"},
             {"field": "wins", "title": "KD ahead in seeds"}]}},
        {"data": {"values": means}, "mark": {"type": "line", "color": MEAN, "strokeWidth": 3,
                                             "point": {"color": MEAN, "shape": "diamond", "size": size.font * 10}},
         "encoding": {"x": {**x, "field": "x"}, "y": {"field": "mean", "type": "quantitative"},
                      "tooltip": [{"field": "x", "title": axis}, {"field": "mean", "title": "class mean (points)",
                                                                  "format": "+.2f"}, {"field": "runs"}]}},
    ]
    title = f"KD − CE against {'T' if axis == 'T' else 'α'}"
    # a width in pixels: gr.Plot leaves "container" at zero width (kd_core.views.plots.accuracy_spec)
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": size.width, "height": size.height,
            "title": {"text": title, "fontSize": size.font + 2, "subtitle": SUBTITLE,
                      "subtitleFontSize": round(0.8 * size.font)},
            "config": {"axis": {"labelFontSize": size.font, "titleFontSize": size.font}},
            "layer": layers}


def board_heading(code: str, points: Sequence[Point], training: int) -> str:
    """The board's line in words: the class, its runs, who is training now, and the best T so far."""
    runs = f"{len(points)} run{'s' if len(points) != 1 else ''}"
    now = f"{training} classmate{'s' if training != 1 else ''} training now"
    best = ""
    if points:
        value, mean, n = max(class_means(points, "T"), key=lambda row: row[1])
        best = f" · best T so far: {value:g} (KD − CE {mean:+.1f} points, mean of {n} run{'s' if n != 1 else ''})"
    return f"Class {code}: {runs} on the board · {now}{best}"
