"""Studies: ask-and-tell over one stack, pruned members dropped, journal/SQLite/PostgreSQL storage shared by
worker processes, a killed worker's trials marked failed, --best/--summary."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from support import free_port, wait_for

from kd_core.config import RunConfig
from kd_core.engine import loop as engine
from kd_core.engine.loop import StackEvaluated, StackFinished, train_stack
from kd_core.engine.roles import CE_ROLE, Role, method_role
from kd_core.run import as_run
from kd_core.study import trials as kd_study
from kd_core.study.space import SearchSpace, load_space, trial_role
from kd_core.study.trials import open_study, run_worker

ROOT = Path(__file__).resolve().parents[1]
SMALL = RunConfig(train_size=500, epochs=2, repeats=2, evaluations=4, event_interval_s=0.0)
SMALL_FLAGS = ["--train-size", "500", "--epochs", "2", "--repeats", "2"]
# one trial of each kind of role: Hinton KD, a method_loss role (DKD) and a feature role with its regressor
ENQUEUED = [{"method": "kd", "lr": 3e-3, "T": 4.0, "alpha": 0.7},
            {"method": "dkd", "lr": 3e-3, "T": 2.0, "dkd_beta": 4.0},
            {"method": "hint", "lr": 3e-3, "feature_weight": 0.5}]


def journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))


def enqueued_study(path: Path, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """A study whose trials take ENQUEUED's parameters, trained as one stack."""
    study = open_study(str(path), "s", SMALL, SearchSpace(), pruner=pruner)
    for params in ENQUEUED:
        study.enqueue_trial(params)
    run_worker(study, SMALL, trials=len(ENQUEUED), stack=len(ENQUEUED))
    return study


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "kd_core", "study", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert not check or done.returncode == 0, done.stderr
    return done


def recorded_once(trials: list[optuna.trial.FrozenTrial], count: int) -> None:
    assert sorted(t.number for t in trials) == list(range(count))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert len({t.system_attrs[kd_study.WORKER_ATTR]["pid"] for t in trials}) == 2  # both workers took trials


class PruneTrial(optuna.pruners.BasePruner):
    """Prunes one trial (by number) at its second evaluation, no other."""

    def __init__(self, number: int):
        self.number = number

    def prune(self, study, trial) -> bool:
        return trial.number == self.number and trial.last_step == 2


# ------------------------------------------------------------------------------------------ the engine

def test_dropping_roles_leaves_the_others_bit_identical():
    """Roles dropped after the first evaluation stop learning; every other student of every seed is equal,
    bit for bit, to the same stack trained with nothing dropped."""
    roles = [CE_ROLE, Role("kd", "kd", 3.0, 0.7), method_role("dkd", 4.0, 0.0, 8.0),
             method_role("hint", 1.0, 0.0, 0.0, 0.5), Role("kd 2", "kd", 2.0, 0.3)]

    def trained(drop: set[int]):
        dropped = set()
        for event in train_stack(as_run(SMALL), roles, dropped=dropped, test=False):
            if isinstance(event, StackEvaluated) and event.step > 0:
                dropped.update(drop)
            if isinstance(event, StackFinished):
                return event.result

    whole, pruned = trained(set()), trained({2, 3})
    for seed in range(2):
        for role in range(len(roles)):
            student = seed * len(roles) + role
            same = all(torch.equal(value, pruned.students.state_dict(student)[name])
                       for name, value in whole.students.state_dict(student).items())
            assert same == (role not in (2, 3)), (seed, role)


def test_no_student_is_evaluated_on_the_test_set_in_a_study(monkeypatch):
    sizes = []
    original = engine.Trainer.result

    def spy(self, *args):
        sizes.append(self.test)
        return original(self, *args)

    monkeypatch.setattr(engine.Trainer, "result", spy)
    result = next(e.result for e in train_stack(as_run(SMALL), [CE_ROLE], test=False)
                  if isinstance(e, StackFinished))
    assert sizes == [False] and result.test_logits.shape[1] == 0
    assert all(acc != acc for row in result.test_acc for acc in row)  # NaN: nothing was measured


# ------------------------------------------------------------------------------------------ ask and tell

def test_each_stacked_trial_equals_its_configuration_trained_alone(tmp_path):
    study = enqueued_study(tmp_path / "s.journal", optuna.pruners.NopPruner())
    trials = study.get_trials()
    assert [t.params for t in trials] == ENQUEUED and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:
        alone = next(e.result for e in train_stack(as_run(SMALL.replace(lr=trial.params["lr"])),
                                                   [CE_ROLE, trial_role(trial.params, "alone")], test=False)
                     if isinstance(e, StackFinished))
        per_seed = [row[1] for row in alone.val_acc]
        assert trial.user_attrs["val_acc_per_seed"] == pytest.approx(per_seed, abs=1 / 5000), trial.number
        assert trial.value == pytest.approx(sum(per_seed) / 2, abs=1 / 5000)
        assert trial.user_attrs["ce_val_acc"] == pytest.approx(sum(r[0] for r in alone.val_acc) / 2, abs=1 / 5000)
        assert sorted(trial.intermediate_values) == [1, 2, 3, 4]  # one report per live evaluation


def test_a_pruned_trial_leaves_the_stack_and_the_others_unchanged(tmp_path):
    whole = enqueued_study(tmp_path / "whole.journal", optuna.pruners.NopPruner()).get_trials()
    pruned = enqueued_study(tmp_path / "pruned.journal", PruneTrial(1)).get_trials()
    assert [t.state for t in pruned] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert sorted(pruned[1].intermediate_values) == [1, 2]  # reported until pruned, then dropped
    for before, after in ((whole[0], pruned[0]), (whole[2], pruned[2])):
        assert after.value == before.value and after.intermediate_values == before.intermediate_values
        assert after.user_attrs == before.user_attrs


def test_a_stack_all_pruned_stops_training(tmp_path):
    study = open_study(str(tmp_path / "s.journal"), "s", SMALL, SearchSpace(),
                       pruner=optuna.pruners.ThresholdPruner(lower=1.01))  # every accuracy is below 1.01
    run_worker(study, SMALL, trials=3, stack=3)
    assert [t.state for t in study.get_trials()] == [TrialState.PRUNED] * 3
    assert all(sorted(t.intermediate_values) == [1] for t in study.get_trials())


def stack_raising(error: BaseException, calls: list):
    def train_stack(run, roles, **options):
        calls.append((run.config.lr, len(roles)))
        raise error
        yield  # a generator, like the engine's

    return train_stack


def test_a_diverged_stack_fails_its_trials_and_the_worker_goes_on(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(kd_study, "train_stack", stack_raising(engine.TrainingDiverged("diverged at step 3"), calls))
    study = open_study(str(tmp_path / "s.journal"), "s", SMALL, SearchSpace(lr=(3e-3,)))
    run_worker(study, SMALL, trials=4, stack=2)
    assert calls == [(3e-3, 3), (3e-3, 3)]  # CE + 2 trials, twice
    ended = [(t.state, t.user_attrs["error"]) for t in study.get_trials()]
    assert ended == [(TrialState.FAIL, "diverged at step 3")] * 4


def test_an_interrupted_worker_fails_every_trial_it_asked(tmp_path, monkeypatch):
    """The trials of the learning-rate groups not trained yet fail too, none stays RUNNING."""
    calls = []
    monkeypatch.setattr(kd_study, "train_stack", stack_raising(KeyboardInterrupt(), calls))
    study = open_study(str(tmp_path / "s.journal"), "s", SMALL, SearchSpace())
    study.enqueue_trial({"method": "dist", "lr": 1e-3})
    study.enqueue_trial({"method": "dist", "lr": 1e-2})
    with pytest.raises(KeyboardInterrupt):
        run_worker(study, SMALL, trials=2, stack=2)
    assert calls == [(1e-3, 2)]
    ended = [(t.state, t.user_attrs["error"]) for t in study.get_trials()]
    assert ended == [(TrialState.FAIL, "KeyboardInterrupt")] * 2


# ------------------------------------------------------------------------------------------ search space

def test_a_space_file_replaces_ranges_and_is_checked_by_run_config(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"methods": ["kd"], "temperature": [2, 8], "lr": [0.001]}))
    space = load_space(str(path))
    assert space == SearchSpace(methods=("kd",), temperature=(2, 8), lr=(0.001,))
    path.write_text(json.dumps({"alpha": [0, 1.5]}))
    with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\]; got 1.5"):
        load_space(str(path))
    path.write_text(json.dumps({"alphas": [0, 1]}))
    with pytest.raises(ValueError, match="expected an object with keys among alpha, dkd_beta"):
        load_space(str(path))
    with pytest.raises(ValueError, match="search space file .*missing.json: No such file"):
        load_space(str(tmp_path / "missing.json"))
    yaml_path = tmp_path / "space.yaml"
    yaml_path.write_text("methods: [dkd]\ndkd_beta: [1, 2]\n")
    assert load_space(str(yaml_path)).dkd_beta == (1, 2)


def test_a_trial_suggests_only_what_its_method_reads():
    study = optuna.create_study(direction="maximize")
    seen = {}
    for _ in range(40):
        params = SearchSpace().suggest(study.ask())
        seen.setdefault(params["method"], set(params))
    assert seen["kd"] == {"method", "lr", "T", "alpha"} and seen["dkd"] == {"method", "lr", "T", "dkd_beta"}
    assert seen["hint"] == {"method", "lr", "feature_weight"} and seen["dist"] == {"method", "lr"}


def test_a_study_keeps_its_fixed_options(tmp_path):
    open_study(str(tmp_path / "s.journal"), "s", SMALL, SearchSpace())
    with pytest.raises(ValueError, match=r"study 's' was made with other fixed options \(epochs differ\)"):
        open_study(str(tmp_path / "s.journal"), "s", SMALL.replace(epochs=3), SearchSpace())
    open_study(str(tmp_path / "s.journal"), "s", SMALL.replace(device="cpu", cpu_threads=2), SearchSpace())


# ------------------------------------------------------------------------------------------ workers

def test_two_worker_processes_record_every_trial_once_in_one_journal(tmp_path):
    path = tmp_path / "s.journal"
    done = cli("--storage", str(path), "--name", "s", "--trials", "5", "--workers", "2", "--stack", "2",
               *SMALL_FLAGS, "--json")
    result = json.loads(done.stdout.splitlines()[-1])
    trials = optuna.load_study(study_name="s", storage=journal(path)).get_trials()
    recorded_once(trials, 5)
    assert result["trials"] == 5 and result["complete"] + result["pruned"] == 5 and result["failed"] == 0
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert result["best"] == {"number": best.number, "params": best.params, "val_acc": best.value,
                              "val_std": best.user_attrs["val_std"]}


def test_a_killed_worker_loses_only_its_running_trials_which_are_marked_failed(tmp_path):
    path = tmp_path / "s.journal"
    args = ["--storage", str(path), "--name", "s", "--stack", "2", "--train-size", "1000", "--epochs", "8",
            "--repeats", "2"]
    worker = subprocess.Popen([sys.executable, "-m", "kd_core", "study", *args, "--trials", "2"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running() -> bool:
        try:
            trials = optuna.load_study(study_name="s", storage=journal(path)).get_trials()
        except KeyError:  # not created yet
            return False
        return len(trials) == 2 and all(kd_study.WORKER_ATTR in t.system_attrs for t in trials)

    assert wait_for(running, seconds=120, every=0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    done = cli(*args, "--trials", "1", "--json")  # the next command finds them orphaned
    result = json.loads(done.stdout.splitlines()[-1])
    trials = optuna.load_study(study_name="s", storage=journal(path)).get_trials()
    assert [t.state for t in trials[:2]] == [TrialState.FAIL] * 2
    assert all(t.user_attrs["error"] == f"worker pid {worker.pid} died" for t in trials[:2])
    assert len(trials) == 3 and trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert result["failed"] == 2 and result["trials"] == 3


def test_sqlite_storage_by_url(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cli("--storage", url, "--name", "s", "--trials", "2", "--stack", "2", *SMALL_FLAGS)
    trials = optuna.load_study(study_name="s", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_reporting_on_a_missing_study_is_one_line_and_creates_nothing(tmp_path):
    done = cli("--storage", str(tmp_path / "none.journal"), "--name", "s", "--best", "--json", check=False)
    assert done.returncode == 2 and done.stderr == f"error: no study 's' in {tmp_path / 'none.journal'}: no such " \
                                                   "journal file\n"
    assert not (tmp_path / "none.journal").exists()


def test_bad_storage_is_one_line_and_exit_2(tmp_path):
    done = cli("--storage", "mysql://u:secret@localhost/x", "--name", "s", "--trials", "1", check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: storage must be a journal file path") and "secret" not in done.stderr


# ------------------------------------------------------------------------------------------ results

def test_best_reports_test_accuracy_once_and_summary_writes_plots(tmp_path, monkeypatch, capsys):
    path = str(tmp_path / "s.journal")
    study = enqueued_study(Path(path), optuna.pruners.NopPruner())
    best = max(study.get_trials(), key=lambda t: t.value)
    result = kd_study.best_test(open_study(path, "s"), path)
    assert result["best"]["number"] == best.number
    assert set(result) >= {"test_acc", "ce_test_acc", "minus_ce", "verdict"}
    assert result["minus_ce"]["mean"] == pytest.approx(result["test_acc"] - result["ce_test_acc"])
    monkeypatch.setattr(kd_study, "test_figures", lambda *a: pytest.fail("the test set was read twice"))
    assert kd_study.best_test(open_study(path, "s"), path) == result  # kept in the study

    rows = kd_study.best_rows(open_study(path, "s"))
    assert rows[0].startswith(f"#{best.number} ") and rows[-1] == "3 complete, 0 pruned, 0 failed of 3 trials"
    plots = kd_study.write_plots(open_study(path, "s"), tmp_path / "plots")
    assert [Path(p).name for p in plots] == ["history.png", "importance.png"]
    assert all(Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


# ------------------------------------------------------------------------------------------ PostgreSQL

def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server on loopback in a temporary directory, run as a non-root user; stopped after."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (requirements-study.txt)")
    home = Path(tempfile.mkdtemp(prefix="kd-pg-"))
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(home, "nobody")
    port = free_port()
    data, log = home / "data", home / "log"

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "kd", "--auth=trust")
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "start",
           "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1")
        yield f"postgresql://kd@127.0.0.1:{port}/postgres"
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_two_workers_share_a_study_through_postgresql(postgres_url):
    done = cli("--storage", postgres_url, "--name", "pg", "--trials", "4", "--workers", "2", "--stack", "2",
               *SMALL_FLAGS, "--json")
    result = json.loads(done.stdout.splitlines()[-1])
    opened = optuna.load_study(study_name="pg", storage=postgres_url.replace("postgresql:", "postgresql+psycopg2:"))
    recorded_once(opened.get_trials(), 4)
    assert result["trials"] == 4 and result["failed"] == 0 and result["storage"] == postgres_url


def test_a_trial_whose_heartbeat_stopped_is_failed_from_any_host(tmp_path, monkeypatch):
    """SQLite/PostgreSQL: a running trial of a worker on another host (no pid to check) becomes FAIL once
    its last heartbeat is older than the grace period."""
    import time

    from kd_core.study import storage

    monkeypatch.setattr(kd_study, "HEARTBEAT_S", 1)  # the worker's heartbeat thread
    monkeypatch.setattr(storage, "HEARTBEAT_S", 1)  # the storage's
    monkeypatch.setattr(storage, "GRACE_S", 3)  # (1 s failed once in CI: a loaded machine took that long between calls)
    study = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", SMALL, SearchSpace())
    trial = kd_study.ask(study)
    study._storage.set_trial_system_attr(trial._trial_id, kd_study.WORKER_ATTR, {"host": "elsewhere", "pid": 1})
    study._storage.record_heartbeat(trial._trial_id)
    assert kd_study.fail_lost_trials(study) == []  # beating: left alone
    time.sleep(4.0)
    assert kd_study.fail_lost_trials(study) == [0]
    assert study.get_trials()[0].state == TrialState.FAIL
