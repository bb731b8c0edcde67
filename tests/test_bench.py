import json
from pathlib import Path

import pytest
import torch

from kd_core.__main__ import main
from kd_core.data.datasets import load_dataset
from kd_core.engine import bench

MLP_SMALL_FORWARD = 2 * (784 * 128 + 128 * 10)  # FLOPs of one forward pass of 784 -> 128 -> 10


def test_quick_bench_reports_every_figure(capsys):
    assert main(["bench", "--samples", "1000", "--repeats", "1", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["samples"] == 1000 and figures["repeats"] == 1 and figures["threads"] == 1
    # Bounds, not "> 0": at 1,000 samples on a busy 2-core machine (load 8) this measured speedups of 33×
    # and 25× (batch 64), 77 % of the FLOP limit, accuracies 0.57-0.71, first events after 0.1-0.2 s.
    assert figures["speedup_median"] > 5 and figures["speedup_b64_median"] > 3
    # nothing trains faster than its FLOPs allow (20 % margin for a matmul timed while another job ran);
    # counting the FLOPs exactly (no input gradient for the first layer) gives a smaller fraction
    assert 0.01 < figures["fraction_of_flop_limit"] < 1.2
    assert figures["fraction_of_flop_limit_exact"] < figures["fraction_of_flop_limit"]
    assert 5 < figures["matmul_gflops"] < 100_000
    # the seed loop's KD pass runs the CNN teacher on every batch, its CE pass does not
    assert figures["reference_kd_loop_s"] > 2 * figures["reference_ce_loop_s"] > 0
    assert 0 < figures["teacher_logits_build_s"] < 60  # the teacher's forward over 1,000 images
    assert 0 < figures["time_to_first_event_s"] < 5
    if figures["cold_logits_source"] == "disk":
        assert 0 < figures["time_to_first_event_cold_s"] < 10
    # Fashion-MNIST alone is 55 MB of uint8 pixels in memory; it, the teacher and the interpreter stay
    # resident through every phase (10 % for pages the allocator hands back)
    assert figures["rss_before_runs_mb"] > 55
    for phase in ("reference_peak_rss_mb", "engine_peak_rss_mb", "engine_b64_peak_rss_mb"):
        assert figures[phase] >= figures["rss_before_runs_mb"] * 0.9, phase
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
    # chance is 0.10; 16 steps at batch 64 reach 0.68-0.71, the engine's 4 steps at batch 256 0.57-0.62
    for run, floor in (("reference_acc", 0.55), ("engine_b64_acc", 0.55), ("engine_acc", 0.4)):
        assert floor < figures[run]["ce"] <= 1 and floor < figures[run]["kd"] <= 1, run
    # at the same batch size (the same number of steps) the engine learns what the seed loop learns
    assert figures["accuracy_gap_b64"] < 0.08
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
