import json
from pathlib import Path

import pytest
import torch

from kd_core import bench
from kd_core.__main__ import main
from kd_core.data import load_dataset

MLP_SMALL_FORWARD = 2 * (784 * 128 + 128 * 10)  # FLOPs of one forward pass of 784 -> 128 -> 10


def test_quick_bench_reports_every_figure(capsys):
    assert main(["bench", "--samples", "1000", "--repeats", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["samples"] == 1000 and figures["repeats"] == 1 and figures["threads"] == 1
    for key in ("reference_samples_per_s", "engine_samples_per_s", "engine_b64_samples_per_s",
                "speedup_median", "speedup_b64_median", "reference_ce_loop_s", "reference_kd_loop_s",
                "teacher_logits_build_s", "time_to_first_event_s", "time_to_first_event_cold_s",
                "matmul_gflops", "ideal_samples_per_s", "fraction_of_flop_limit",
                "fraction_of_flop_limit_exact", "rss_before_runs_mb", "reference_peak_rss_mb",
                "engine_peak_rss_mb", "engine_b64_peak_rss_mb", "peak_rss_mb"):
        assert figures[key] > 0, key
    # the reference's two students and both engine runs train on exactly the same number of samples
    assert figures["samples_seen"] == {"reference": [1000], "engine": [1000], "engine_b64": [1000]}
    assert figures["speedups"] == [figures["engine_samples_per_s"] / figures["reference_samples_per_s"]]
    assert figures["speedup_median"] == figures["speedups"][0]
    assert figures["speedup_b64_median"] == (figures["engine_b64_samples_per_s"]
                                             / figures["reference_samples_per_s"])
    assert figures["student_train_flops_per_paired_sample"] == 2 * 3 * MLP_SMALL_FORWARD
    assert figures["ideal_samples_per_s"] == pytest.approx(
        figures["matmul_gflops"] * 1e9 / figures["student_train_flops_per_paired_sample"])
    assert figures["fraction_of_flop_limit"] == pytest.approx(
        figures["engine_samples_per_s"] / figures["ideal_samples_per_s"])
    for run in ("reference_acc", "engine_acc", "engine_b64_acc"):
        assert 0.1 < figures[run]["ce"] <= 1 and 0.1 < figures[run]["kd"] <= 1
    reference = figures["reference_acc"]
    assert figures["accuracy_gap_b64"] == max(abs(figures["engine_b64_acc"][k] - reference[k])
                                              for k in ("ce", "kd"))
    assert figures["cold_logits_source"] in ("disk", "computed")
    assert figures["peak_rss_mb"] >= max(figures["reference_peak_rss_mb"], figures["engine_peak_rss_mb"])


def test_training_flops_skip_the_first_layers_input_gradient():
    dataset = load_dataset("fashion-mnist")
    convention, exact = bench.training_flops("mlp-small", dataset)
    assert convention == 3 * MLP_SMALL_FORWARD
    assert exact == 3 * MLP_SMALL_FORWARD - 2 * 784 * 128
    conv_convention, conv_exact = bench.training_flops("cnn-tiny", dataset)
    assert conv_convention - conv_exact == 2 * 9 * 1 * 8 * 28 * 28  # first conv: 3×3, 1 -> 8 channels


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-phase peaks need Linux /proc")
def test_peak_memory_is_per_phase():
    memory = bench.PeakMemory()

    def allocate() -> dict:
        block = torch.ones(50_000_000)  # 200 MB, every page written
        return {"mb": block.numel() * block.element_size() / 2**20}

    big = memory.phase(allocate)
    small = memory.phase(lambda: {"mb": 0.0})
    assert big["mb"] > 190
    # the second window no longer holds the first one's peak
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 150
    assert memory.total() >= big["peak_rss_mb"]


@pytest.mark.slow
def test_scaling_reports_every_size_and_small_student(capsys):
    assert main(["bench", "--samples", "1000", "--repeats", "1", "--scaling", "--json"]) == 0
    scaling = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["scaling"]
    assert list(scaling["by_train_size"]) == ["1000", "10000", "60000"]
    assert [size["epochs"] for size in scaling["by_train_size"].values()] == [50, 6, 1]
    assert list(scaling["by_student"]) == ["mlp-tiny", "mlp-small", "mlp-medium", "cnn-tiny"]
    for figures in [*scaling["by_train_size"].values(), *scaling["by_student"].values()]:
        assert figures["samples_per_s"] > 0


@pytest.mark.parametrize("argv, word", [(["--samples", "10"], "samples"), (["--repeats", "0"], "repeats"),
                                        (["--student", "resnet18"], "student")])
def test_bench_rejects_silly_arguments(capsys, argv, word):
    assert main(["bench", *argv]) == 2
    assert word in capsys.readouterr().err
