"""A run is resolved once where it enters (kd_core.run): one read and one hash of the teacher file per run, whether
it comes from the CLI or from the app's path (shared runs -> the stack pool -> the engine -> the results table and
the model card); and the Run carries what every later layer reads."""

from __future__ import annotations

import builtins
from functools import partial
from pathlib import Path

import pytest

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.engine.budget import check_cpu_budget
from kd_core.engine.train import roles
from kd_core.models import checkpoints
from kd_core.run import resolve_run
from kd_core.serve import zerogpu
from kd_core.serve.shared_runs import SharedRuns
from kd_core.serve.stack_pool import StackPool
from kd_core.views.joined import join_run
from kd_core.views.run_view import live_run

SMALL = ["--train-size", "500", "--epochs", "1", "--repeats", "2"]


@pytest.fixture
def teacher_reads(monkeypatch):
    """Every read of the shipped teacher's file, by kind: "bytes" (one read that also hashes it), "hash",
    "header" (metadata alone) and "tensors"."""
    teacher = checkpoints.default_teacher_path("fashion-mnist").resolve()
    reads: list[str] = []
    checkpoints._inspect.cache_clear()

    def ours(path) -> bool:
        return Path(str(path)).resolve() == teacher

    def counted(kind, original):
        def wrapper(path, *args, **kwargs):
            if ours(path):
                reads.append(kind)
            return original(path, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(checkpoints, "safe_open", counted("header", checkpoints.safe_open))
    monkeypatch.setattr(checkpoints, "load_file", counted("tensors", checkpoints.load_file))
    original_open, original_bytes = builtins.open, Path.read_bytes
    monkeypatch.setattr(builtins, "open", lambda file, mode="r", *a, **k: (
        reads.append("hash") if ours(file) and "b" in mode else None) or original_open(file, mode, *a, **k))
    monkeypatch.setattr(Path, "read_bytes", lambda self: (reads.append("bytes") if ours(self) else None)
                        or original_bytes(self))
    return reads


def test_a_cli_run_reads_and_hashes_its_teacher_once(fashion, teacher_reads, capsys):
    assert main(["distill", *SMALL, "--json"]) == 0
    assert teacher_reads == ["bytes"]


def test_an_app_run_reads_and_hashes_its_teacher_once(fashion, teacher_reads):
    """The app's path: the run resolved in the handler; its ZeroGPU duration, its key, the pool's plan and budget
    check, the engine, the results table and the model card all read the Run."""
    run = resolve_run(RunConfig(train_size=500, epochs=1, repeats=2))
    assert zerogpu.duration(run, roles(run.config)) > 0  # what a ZeroGPU call declares reads the run too
    pool = StackPool(window_s=0.05, fits=lambda run, seeds, roles: check_cpu_budget(run, repeats=seeds) is None)
    views = list(join_run(SharedRuns(max_running=4), run, partial(live_run, train=pool.events)))
    assert views[-1].table is not None and views[-1].kd_checkpoint.with_suffix(".md").is_file()
    assert teacher_reads == ["bytes"]


def test_the_run_knows_its_teacher_and_validates_once(fashion, monkeypatch):
    calls = []
    original = RunConfig.validate
    monkeypatch.setattr(RunConfig, "validate", lambda self, *a: calls.append(a) or original(self, *a))
    run = resolve_run(RunConfig(train_size=500))
    assert calls == [(10,)]  # once, against the dataset's classes
    assert run.teacher.hash == checkpoints.file_hash(run.teacher.path)
    assert run.teacher.meta["arch"] == "cnn-teacher" and run.key == (run.config, run.teacher.hash)


def test_a_bad_teacher_fails_before_any_data_is_read(monkeypatch, tmp_path):
    monkeypatch.setattr("kd_core.run.load_dataset", lambda name: pytest.fail("the data was read"))
    with pytest.raises(checkpoints.CheckpointError, match="not found"):
        resolve_run(RunConfig(teacher=str(tmp_path / "missing.safetensors")))
