"""The verdict headline (kd_core.views.headline): its words and its tone follow the 95 % interval, not the mean's
sign."""

import pytest
from support import finished_session

from kd_core.config import RunConfig
from kd_core.engine.stats import paired_difference
from kd_core.views import headline


def method_row(method: str, kd: list[float], ce: list[float]) -> dict:
    """A row of RunResult.methods() as the summary holds it."""
    difference = paired_difference(kd, ce)
    return {"method": method, "minus_ce": difference.summary(), "wins": difference.wins}


CE = [0.80, 0.80, 0.80, 0.80, 0.80]
AHEAD = [0.81, 0.82, 0.83, 0.82, 0.82]  # +2 points, 95 % interval +1.1 to +2.9 (t = 2.776), 5/5
BEHIND = [0.79, 0.78, 0.77, 0.78, 0.78]
NOISE = [0.80, 0.81, 0.79, 0.805, 0.795]  # mean 0, 2 of 5 ahead


def summary(*rows: dict, **extra) -> dict:
    return {"methods": list(rows), "kd_hidden_acc": None, "stopped": "", **extra}


def test_a_gain_beyond_noise_is_the_issue_sentence_in_green():
    [line] = headline.headline_lines(summary(method_row("kd", AHEAD, CE)))
    assert line == headline.Line("KD beat CE by +2.0 points (95 % interval +1.1 to +2.9), in 5 of 5 seeds", "better")


def test_a_loss_beyond_noise_is_red_and_says_behind():
    [line] = headline.headline_lines(summary(method_row("kd", BEHIND, CE)))
    assert line == headline.Line("KD fell behind CE by -2.0 points (95 % interval -2.9 to -1.1), ahead in 0 of 5 seeds",
                                 "worse")


def test_the_tone_follows_the_interval_not_the_sign_of_the_mean():
    """A positive mean whose interval holds 0 is noise, not a (small) win."""
    kd = [0.83, 0.79, 0.81, 0.80, 0.80]  # +0.6 points on average, interval about -1.4 to +2.6
    [line] = headline.headline_lines(summary(method_row("kd", kd, CE)))
    assert line.tone == "noise" and line.text.startswith("KD vs CE: no difference beyond seed noise (+0.6 points")
    [line] = headline.headline_lines(summary(method_row("kd", NOISE, CE)))
    assert line.text == ("KD vs CE: no difference beyond seed noise (+0.0 points, 95 % interval -1.0 to +1.0; "
                         "KD ahead in 2 of 5 seeds)")


def test_one_seed_claims_nothing():
    [line] = headline.headline_lines(summary(method_row("kd", [0.82], [0.80])))
    assert line == headline.Line("KD − CE = +2.0 points on one seed: train several seeds to tell a difference from "
                                 "luck", "single")


def test_kd_heads_the_lines_then_the_other_methods_then_the_hidden_class():
    lines = headline.headline_lines(summary(method_row("dkd", BEHIND, CE), method_row("kd", AHEAD, CE),
                                            kd_hidden_acc=0.287, ce_hidden_acc=0.0, teacher_hidden_acc=0.81,
                                            stopped="time limit"))
    assert [line.text.split(" ")[0] for line in lines] == ["KD", "DKD", "The", "Stopped"]
    assert lines[2].text == ("The hidden class, never shown to the students: CE 0.0 %, KD 28.7 % of its test images "
                             "at no bias (teacher 81.0 %)")
    assert lines[3].text == "Stopped early: time limit"


def test_without_kd_the_first_method_heads():
    lines = headline.headline_lines(summary(method_row("dist", AHEAD, CE), method_row("hint", NOISE, CE)))
    assert [line.text.split(" ")[0] for line in lines] == ["DIST", "Hint"]


def test_html_is_empty_before_a_run_and_escaped_after():
    assert headline.headline_html(None) == ""
    html = headline.headline_html(summary(method_row("kd", AHEAD, CE), method_row("dkd", BEHIND, CE)))
    assert html.startswith('<div class="kd-headline kd-headline-better">KD beat CE by +2.0 points')
    assert '<div class="kd-subline kd-headline-worse">DKD fell behind CE' in html


@pytest.fixture(scope="module")
def run_summary():
    _, students = finished_session(RunConfig(epochs=1, train_size=500, repeats=2, hide_class=3))
    return students.summary


def test_a_real_runs_summary_makes_its_own_verdict_the_headline(run_summary):
    """The session's students hold what the headline reads, and the headline agrees with the run's own numbers."""
    kd, hidden = headline.headline_lines(run_summary)
    low, high = (100 * bound for bound in run_summary["kd_minus_ce"]["ci95"])
    assert f"95 % interval {low:+.1f} to {high:+.1f}" in kd.text
    assert kd.tone == ("noise" if low <= 0 <= high else "better" if low > 0 else "worse")
    assert f"KD {100 * run_summary['kd_hidden_acc']:.1f} %" in hidden.text
