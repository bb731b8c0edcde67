import math

import pytest

from kd_core.engine.stats import mean_std, paired_difference, verdict


def test_mean_and_sample_std_by_hand():
    assert mean_std([0.80, 0.82, 0.84]) == pytest.approx((0.82, 0.02))  # sqrt((4e-4 + 0 + 4e-4) / 2)
    assert mean_std([0.5]) == (0.5, 0.0)


def test_paired_difference_by_hand():
    # d = [0.01, 0.02, 0.03, 0.02, 0.02]: mean 0.02, s = sqrt(2e-4 / 4) = 0.0070711; t(0.975, 4) = 2.776
    kd = [0.81, 0.82, 0.83, 0.82, 0.82]
    ce = [0.80, 0.80, 0.80, 0.80, 0.80]
    d = paired_difference(kd, ce)
    half = 2.776 * math.sqrt(2e-4 / 4) / math.sqrt(5)
    assert d.mean == pytest.approx(0.02) and d.std == pytest.approx(math.sqrt(2e-4 / 4))
    assert d.ci95 == pytest.approx((0.02 - half, 0.02 + half))
    assert (d.wins, d.n, d.beyond_noise) == (5, 5, True)
    assert d.summary() == {"mean": d.mean, "std": d.std, "ci95": list(d.ci95), "n": 5}


def test_noise_is_called_noise():
    d = paired_difference([0.80, 0.81, 0.79], [0.80, 0.80, 0.80])  # d = 0, +0.01, -0.01
    assert d.mean == pytest.approx(0.0, abs=1e-12) and d.wins == 1 and not d.beyond_noise
    assert verdict(d).startswith("no difference beyond seed-to-seed noise")


def test_verdicts_never_claim_more_than_the_seeds_show():
    better = verdict(paired_difference([0.82, 0.83, 0.84], [0.80, 0.81, 0.82]))
    assert better.startswith("KD better than CE: +2.0 ± 0.0 points") and "KD ahead in 3/3 seeds" in better
    worse = verdict(paired_difference([0.78, 0.79, 0.80], [0.80, 0.81, 0.825]))
    assert worse.startswith("KD worse than CE")
    one = verdict(paired_difference([0.83], [0.80]))
    assert "one seed cannot tell" in one and paired_difference([0.83], [0.80]).ci95 is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference([], [])
