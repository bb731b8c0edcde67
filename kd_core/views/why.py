""""Why" beside the verdict: what KD changed besides top-1, from a run's summary (`RunResult.why()`, kept in
`SessionStudents.summary`): agreement with the teacher, calibration (ECE over 15 equal-width bins, and a reliability
diagram the browser draws from a Vega-Lite spec, like the accuracy chart), and the classes where KD gained or lost
most against CE on the test set. The T and α chosen on a user's validation split have their own small table."""

from __future__ import annotations

import html

from kd_core.engine.why import ECE_BINS, gains
from kd_core.views import plots

MODELS = (("teacher", plots.TEACHER), ("ce", plots.CE), ("kd", plots.KD))  # summary key, chart name


def why_html(summary: dict | None) -> str:
    """The three measures in a few lines of HTML; empty before a run (or for a run without test figures)."""
    if not summary or "calibration" not in summary:
        return ""
    agreement, calibration = summary["agreement"], summary["calibration"]
    gained, lost = gains(summary["per_class"])

    def classes(rows: list[dict]) -> str:  # (a difference that rounds to ±0.0 points is no gain or loss)
        return ", ".join(f"{html.escape(str(r['class']))} {100 * (r['kd_acc'] - r['ce_acc']):+.1f}" for r in rows
                         if abs(r["kd_acc"] - r["ce_acc"]) >= 0.0005)

    lines = [
        f"<b>Agreement with the teacher</b> (test images where the student's top-1 is the teacher's): CE "
        f"{100 * agreement['ce_top1']:.1f} %, KD {100 * agreement['kd_top1']:.1f} %. On the "
        f"{100 * agreement['teacher_errors']:.1f} % of images the teacher gets wrong, CE repeats its mistake on "
        f"{100 * agreement['ce_copied_errors']:.1f} %, KD on {100 * agreement['kd_copied_errors']:.1f} %.",
        f"<b>Calibration</b> (expected calibration error, {ECE_BINS} bins; 0 = confidence matches accuracy): "
        f"teacher {100 * calibration['teacher']:.1f} %, CE {100 * calibration['ce']:.1f} %, KD "
        f"{100 * calibration['kd']:.1f} %.",
        f"<b>Per class, KD − CE on test</b> (points): gained most: {classes(gained) or 'none'}; lost most: "
        f"{classes(lost) or 'none'}.",
    ]
    return '<div class="kd-why">' + "".join(f"<div>{line}</div>" for line in lines) + "</div>"


def reliability_spec(summary: dict) -> dict:
    """A Vega-Lite reliability diagram: per confidence bin, accuracy (%) against mean confidence (%) for the
    teacher, CE and KD (every seed's test images pooled), on the diagonal where a model is calibrated."""
    rows = [{"model": name, "confidence": 100 * b["confidence"], "accuracy": 100 * b["accuracy"], "images": b["count"]}
            for key, name in MODELS for b in summary["reliability"][key] if b["count"]]
    names = [name for _, name in MODELS]
    axis = {"type": "quantitative", "scale": {"domain": [0, 100]}}
    colour = {"field": "model", "type": "nominal", "title": None, "legend": {"orient": "bottom-right"},
              "scale": {"domain": names, "range": [plots.COLOURS[name] for name in names]}}
    return {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "width": 380, "height": 260,
            "title": {"text": f"Reliability on the test set ({ECE_BINS} confidence bins)", "fontSize": 12},
            "data": {"values": rows},
            "layer": [
                {"data": {"values": [{"confidence": 0, "accuracy": 0}, {"confidence": 100, "accuracy": 100}]},
                 "mark": {"type": "line", "strokeDash": [4, 4], "color": "#999999"},
                 "encoding": {"x": {"field": "confidence", **axis}, "y": {"field": "accuracy", **axis}}},
                {"mark": {"type": "line", "strokeWidth": 2},
                 "encoding": {"x": {"field": "confidence", **axis, "title": "mean confidence (%)"},
                              "y": {"field": "accuracy", **axis, "title": "accuracy (%)"}, "color": colour}},
                # a point's area follows its bin's images: a bin of three images says little
                {"mark": {"type": "circle", "opacity": 0.8},
                 "encoding": {"x": {"field": "confidence", **axis}, "y": {"field": "accuracy", **axis},
                              "color": colour, "size": {"field": "images", "type": "quantitative", "legend": None,
                                                        "scale": {"range": [10, 250]}},
                              "tooltip": [{"field": "model"}, {"field": "confidence", "format": ".1f"},
                                          {"field": "accuracy", "format": ".1f"}, {"field": "images"}]}}]}


def chosen_html(chosen: dict | None) -> str:
    """The T and α chosen on the validation split, and every cell's validation KD − CE; empty when not chosen."""
    if not chosen:
        return ""
    temperatures = list(dict.fromkeys(row["T"] for row in chosen["grid"]))
    alphas = list(dict.fromkeys(row["alpha"] for row in chosen["grid"]))
    gain = {(row["T"], row["alpha"]): row["val_kd_minus_ce"] for row in chosen["grid"]}

    def cell(t: float, a: float) -> str:
        text = f"{100 * gain[t, a]:+.2f}"
        return f"<td><b>{text}</b></td>" if (t, a) == (chosen["T"], chosen["alpha"]) else f"<td>{text}</td>"

    head = "<tr><th></th>" + "".join(f"<th>α = {a:g}</th>" for a in alphas) + "</tr>"
    rows = "".join(f"<tr><th>T = {t:g}</th>" + "".join(cell(t, a) for a in alphas) + "</tr>" for t in temperatures)
    return (f'<div class="kd-chosen"><b>Chosen on your validation split: T = {chosen["T"]:g}, '
            f'α = {chosen["alpha"]:g}</b>. Validation accuracy KD − CE (points, mean over the seeds) of each '
            f'(T, α); the test split is reported once, at the chosen values.<table>{head}{rows}</table></div>')
