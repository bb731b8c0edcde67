"""The verdict as a headline: one large sentence, after a run, that says whether distillation beat the labels.

Built from a run's summary (`RunResult.summary()`, kept in `SessionStudents.summary`): the paired difference
method − CE over the seeds with its 95 % interval (kd_core.engine.stats). The tone follows the verdict, that is the
interval, never the sign of the mean: "better" and "worse" only when the interval excludes 0, "noise" when it
holds 0, "single" for one seed (no interval). The first line is the pair's KD student; every other method of
the run, and the hidden class when one was hidden, get a smaller line each.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from kd_core.engine.roles import NAMES
from kd_core.engine.stats import Difference

TONES = ("better", "worse", "noise", "single")


@dataclass(frozen=True)
class Line:
    text: str
    tone: str  # one of TONES


def difference_of(minus_ce: dict, wins: int) -> Difference:
    """A summary's {"mean", "std", "ci95", "n"} (fractions) and its seeds won, as a stats.Difference."""
    ci95 = minus_ce["ci95"]
    return Difference(minus_ce["mean"], minus_ce["std"], None if ci95 is None else tuple(ci95), wins, minus_ce["n"])


def sentence(name: str, difference: Difference) -> Line:
    """'KD beat CE by +1.2 points (95 % interval +0.7 to +1.8), in 5 of 5 seeds', or its noise / worse / one-seed
    form, with its tone."""
    points = 100 * difference.mean
    if difference.ci95 is None:
        return Line(f"{name} − CE = {points:+.1f} points on one seed: train several seeds to tell a difference "
                    f"from luck", "single")
    low, high = (100 * bound for bound in difference.ci95)
    interval = f"95 % interval {low:+.1f} to {high:+.1f}"
    seeds = f"{difference.wins} of {difference.n} seeds"
    if not difference.beyond_noise:
        return Line(f"{name} vs CE: no difference beyond seed noise ({points:+.1f} points, {interval}; "
                    f"{name} ahead in {seeds})", "noise")
    if points > 0:
        return Line(f"{name} beat CE by {points:+.1f} points ({interval}), in {seeds}", "better")
    return Line(f"{name} fell behind CE by {points:+.1f} points ({interval}), ahead in {seeds}", "worse")


def method_name(method: str) -> str:
    return NAMES[method].removesuffix(" student")  # "KD", "DKD", "Hint", …


def headline_lines(summary: dict) -> list[Line]:
    """The headline (the pair's KD student: Hinton KD when it ran, else the first method), then one line per
    other method, then the hidden class's accuracies when a class was hidden."""
    rows = summary["methods"]
    first = next((row for row in rows if row["method"] == "kd"), rows[0])
    lines = [sentence(method_name(row["method"]), difference_of(row["minus_ce"], row["wins"]))
             for row in (first, *(row for row in rows if row is not first))]
    if summary.get("kd_hidden_acc") is not None:
        lines.append(Line(f"The hidden class, never shown to the students: CE {100 * summary['ce_hidden_acc']:.1f} %, "
                          f"KD {100 * summary['kd_hidden_acc']:.1f} % of its test images at no bias "
                          f"(teacher {100 * summary['teacher_hidden_acc']:.1f} %)", "single"))
    if summary.get("stopped"):
        lines.append(Line(f"Stopped early: {summary['stopped']}", "single"))
    return lines


def headline_html(summary: dict | None) -> str:
    """The lines as HTML: the first large, each coloured by its tone (classes kd-headline-<tone>); empty before a
    run."""
    if summary is None:
        return ""
    first, *rest = headline_lines(summary)
    parts = [f'<div class="kd-headline kd-headline-{first.tone}">{html.escape(first.text)}</div>']
    parts += [f'<div class="kd-subline kd-headline-{line.tone}">{html.escape(line.text)}</div>' for line in rest]
    return "".join(parts)


def diagnosis_html(summary: dict | None) -> str:
    """A run's findings (`summary["diagnosis"]`, kd_core.engine.diagnosis) as HTML under the verdict: each its
    code and its line (the cause, then the fix); empty before a run and when there is nothing to say."""
    findings = (summary or {}).get("diagnosis") or []
    if not findings:
        return ""
    items = "".join(f'<li><code>{html.escape(f["code"])}</code> {html.escape(f["message"])}</li>' for f in findings)
    return f'<div class="kd-diagnosis"><b>Diagnosis</b><ul>{items}</ul></div>'
