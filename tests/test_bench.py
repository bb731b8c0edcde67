import json

from kd_core.__main__ import main


def test_quick_bench_reports_every_figure(capsys):
    assert main(["bench", "--samples", "1000", "--repeats", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["samples"] == 1000 and figures["repeats"] == 1
    for key in ("reference_samples_per_s", "engine_samples_per_s", "engine_b64_samples_per_s",
                "speedup_median", "teacher_logits_build_s", "time_to_first_event_s", "matmul_gflops",
                "ideal_samples_per_s", "fraction_of_flop_limit", "peak_rss_mb"):
        assert figures[key] > 0, key
    assert figures["speedup_median"] == figures["engine_samples_per_s"] / figures["reference_samples_per_s"]
    assert figures["student_train_flops_per_paired_sample"] == 2 * 3 * 2 * (784 * 128 + 128 * 10)
    for run in ("reference_acc", "engine_acc", "engine_b64_acc"):
        assert 0.1 < figures[run]["ce"] <= 1 and 0.1 < figures[run]["kd"] <= 1


def test_bench_rejects_silly_sizes(capsys):
    assert main(["bench", "--samples", "10"]) == 2
    assert "samples" in capsys.readouterr().err
