"""Hyper-parameter studies with Optuna, each worker training its trials as one stack of students.

A study asks which method, T, α, DKD β, feature weight and learning rate distil best on a run's data, teacher
and student (everything else fixed by `distill`'s flags and stored with the study). A worker asks Optuna for
`stack` trials at once (ask-and-tell) and trains them in the one engine as one `train_stack`: the CE twin
once per seed, one role per trial. The engine has one Adam for the whole stack, so the learning rate is per
stack: the search picks it from a few choices and a worker's asked trials are grouped by it, one stack per
learning rate. At every live evaluation each trial reports its validation accuracy (mean over seeds) and a
pruned trial is dropped from the stack (`train_stack(dropped=…)`: the others train on unchanged); the trial's
value is its accuracy on the whole validation split, mean over seeds, with the spread in its user attributes.
No student is evaluated on the test set during a study; `best_test` trains the best configuration once more
beside CE and reports its test accuracy with the verdict (`kd_core.engine.stats`), once per best trial.

Storage is Optuna's own, chosen by URL: a journal file (default; several processes on one machine, no
server), `sqlite:///…`, or `postgresql://…` for many machines. A worker that dies loses only its running
trials, which become FAIL: on one machine through its recorded (host, pid), on RDB storages also through
Optuna's heartbeat (`fail_stale_trials`), checked by every worker before it asks and by every command.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the storages that record heartbeats (RDB)
from optuna.trial import Trial, TrialState

from kd_core.config import RunConfig
from kd_core.engine.loop import StackEvaluated, StackFinished, TrainingDiverged, train_stack
from kd_core.engine.roles import CE_ROLE, NAMES
from kd_core.engine.stats import mean_std, paired_difference, verdict
from kd_core.run import Run, resolve_run
from kd_core.study.space import SearchSpace, load_space, trial_role
from kd_core.study.storage import HEARTBEAT_S, open_storage, quiet_experimental, shown

WORKER_ATTR = "kd_worker"  # trial system attribute: {"host", "pid"} of the worker training it
CONFIG_ATTR, SPACE_ATTR, BEST_TEST_ATTR = "kd_config", "kd_space", "kd_best_test"  # study user attributes
PER_MACHINE = ("device", "cpu_threads", "event_interval_s")  # config fields a worker may set for itself


def open_study(url: str, name: str, cfg: RunConfig | None = None, space: SearchSpace | None = None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    """Create the study (with `cfg` and `space` stored as user attributes) or load it; a later command must
    bring the same fixed options. Without `cfg`: load an existing study only."""
    if cfg is None and "://" not in url and not Path(url).is_file():  # opening must not create a journal
        raise ValueError(f"no study {name!r} in {url}: no such journal file")
    storage = open_storage(url)
    with quiet_experimental():
        sampler = optuna.samplers.TPESampler(constant_liar=True)  # K trials asked at once should differ
    if cfg is None:
        try:
            return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        except KeyError:
            raise ValueError(f"no study {name!r} in {shown(url)}") from None
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=cfg.evaluations // 3)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    fixed = fixed_options(cfg)
    if CONFIG_ATTR not in study.user_attrs:
        study.set_user_attr(CONFIG_ATTR, fixed)
        study.set_user_attr(SPACE_ATTR, {k: list(v) for k, v in space.__dict__.items()})
    elif study.user_attrs[CONFIG_ATTR] != fixed:
        differ = sorted(k for k in fixed if study.user_attrs[CONFIG_ATTR].get(k) != fixed[k])
        raise ValueError(f"study {name!r} was made with other fixed options ({', '.join(differ)} differ); use "
                         f"its options or another --name")
    return study


def fixed_options(cfg: RunConfig) -> dict:
    """What every trial of a study shares, as JSON values (per-machine settings left out)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items() if k not in PER_MACHINE}


def study_config(study: optuna.Study) -> RunConfig:
    stored = study.user_attrs[CONFIG_ATTR]
    return RunConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def study_space(study: optuna.Study) -> SearchSpace:
    return SearchSpace(**{k: tuple(v) for k, v in study.user_attrs[SPACE_ATTR].items()})


# ------------------------------------------------------------------------------------------ dead workers

def fail_lost_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the running trials whose worker is gone: on this host, a worker pid that no longer exists;
    on RDB storages, also a heartbeat older than GRACE_S (any host). Returns the numbers failed here."""
    with quiet_experimental():
        before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        optuna.storages.fail_stale_trials(study)
    failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in before]
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(WORKER_ATTR)
        if owner and owner["host"] == host and not pid_alive(owner["pid"]):
            try:  # FrozenTrial has no public id; Optuna's own code reads _trial_id the same way
                study._storage.set_trial_user_attr(trial._trial_id, "error", f"worker pid {owner['pid']} died")
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                failed.append(trial.number)
            except optuna.exceptions.UpdateFinishedTrialError:  # another worker got there first
                pass
    return failed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


class Heartbeat:
    """RDB storages: one thread recording the heartbeat of this worker's running trials every HEARTBEAT_S."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int]):
        self.storage, self.trial_ids, self.stop = storage, trial_ids, threading.Event()
        self.thread = threading.Thread(target=self.beat, daemon=True)

    def beat(self) -> None:
        while True:
            for trial_id in list(self.trial_ids):
                self.storage.record_heartbeat(trial_id)
            if self.stop.wait(HEARTBEAT_S):
                return

    def __enter__(self) -> Heartbeat:
        if isinstance(self.storage, BaseHeartbeat) and self.storage.get_heartbeat_interval():  # not a journal
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


# ------------------------------------------------------------------------------------------ the worker

def run_worker(study: optuna.Study, cfg: RunConfig, trials: int, stack: int, log=None) -> None:
    """Add `trials` trials to the study, `stack` asked at a time, each group of one learning rate trained as
    one stack. `log(line)` gets one line per finished or pruned trial."""
    space = study_space(study)
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    run = resolve_run(cfg)  # once per worker, where its requests enter: every stack it trains reads it
    while trials > 0:
        fail_lost_trials(study)
        asked = [ask(study) for _ in range(min(stack, trials))]
        trials -= len(asked)
        for trial in asked:
            study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, owner)
        params = [space.suggest(trial) for trial in asked]
        with Heartbeat(study._storage, [trial._trial_id for trial in asked]):
            try:
                for lr in sorted({p["lr"] for p in params}):
                    group = [(t, p) for t, p in zip(asked, params, strict=True) if p["lr"] == lr]
                    train_trials(study, run.replace(lr=lr), group, log or (lambda line: None))
            except BaseException as error:  # an interrupt, a bug: every asked trial ends, none stays running
                fail_unfinished(study, asked, str(error) or type(error).__name__)
                raise


def ask(study: optuna.Study) -> Trial:
    """study.ask(), without Optuna's warning that heartbeats are meant for Study.optimize: `Heartbeat` beats
    for the asked trials here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
        return study.ask()


def train_trials(study: optuna.Study, run: Run, group: list[tuple[Trial, dict]], log) -> None:
    """One stack: CE (role 0) and trial i as role i + 1; pruned trials are dropped as the stack trains."""
    roles = [CE_ROLE, *(trial_role(p, f"trial {t.number}") for t, p in group)]
    members, dropped = dict(enumerate((t for t, _ in group), start=1)), set()
    events = train_stack(run, roles, dropped=dropped, test=False)
    evaluation = 0
    try:
        for event in events:
            if isinstance(event, StackEvaluated) and event.step > 0:
                evaluation += 1
                for role, trial in members.items():
                    if role not in dropped and report(trial, event, role, evaluation):
                        study.tell(trial, state=TrialState.PRUNED)
                        dropped.add(role)
                        log(f"trial {trial.number} {describe(group[role - 1][1])}: pruned at evaluation "
                            f"{evaluation}")
                if len(dropped) == len(members):  # nothing left to train
                    events.close()
                    return
            elif isinstance(event, StackFinished):
                ce_val = mean_std([row[0] for row in event.result.val_acc])[0]
                for role, trial in members.items():
                    if role not in dropped:
                        value = tell_value(study, trial, [row[role] for row in event.result.val_acc], ce_val)
                        log(f"trial {trial.number} {describe(group[role - 1][1])}: validation {value}")
    except TrainingDiverged as error:  # this stack's trials fail; the worker goes on with the next stack
        fail_unfinished(study, list(members.values()), str(error))
        log(f"stack of trials {', '.join(str(t.number) for t in members.values())} failed: {error}")


def fail_unfinished(study: optuna.Study, trials: list[Trial], reason: str) -> None:
    for trial in trials:
        if not study._storage.get_trial(trial._trial_id).state.is_finished():
            trial.set_user_attr("error", reason)
            study.tell(trial, state=TrialState.FAIL)


def report(trial: Trial, event: StackEvaluated, role: int, evaluation: int) -> bool:
    """Report the role's live validation accuracy (mean over seeds) at this evaluation; whether to prune."""
    trial.report(event.mean(role), evaluation)
    return trial.should_prune()


def tell_value(study: optuna.Study, trial: Trial, val_acc: list[float], ce_val_acc: float) -> str:
    mean, std = mean_std(val_acc)
    trial.set_user_attr("val_std", std)
    trial.set_user_attr("val_acc_per_seed", val_acc)
    trial.set_user_attr("ce_val_acc", ce_val_acc)
    study.tell(trial, mean)
    return f"{mean:.4f} ± {std:.4f} (CE {ce_val_acc:.4f})"


def describe(params: dict) -> str:
    """`kd T=4.1 alpha=0.62 lr=0.003`."""
    knobs = " ".join(f"{k}={v:.3g}" for k, v in params.items() if k != "method")
    return f"{params['method']} {knobs}"


# ------------------------------------------------------------------------------------------ results

def summary(study: optuna.Study, url: str) -> dict:
    """The contract's JSON (docs/contracts.md): counts over every trial of the study, and the best one."""
    trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return {"name": study.study_name, "storage": shown(url), "trials": len(trials),
            "complete": count[TrialState.COMPLETE], "pruned": count[TrialState.PRUNED],
            "failed": count[TrialState.FAIL],
            "best": None if best is None else {"number": best.number, "params": best.params, "val_acc": best.value,
                                               "val_std": best.user_attrs.get("val_std")}}


def best_test(study: optuna.Study, url: str) -> dict:
    """The summary plus, for the best trial by validation, its test accuracy beside CE (same seeds), trained
    once more: the test set is read once per best trial, and the figures are kept in the study."""
    result = summary(study, url)
    if result["best"] is None:
        raise ValueError(f"study {study.study_name!r} has no complete trial yet")
    cached = study.user_attrs.get(BEST_TEST_ATTR)
    if not cached or cached["number"] != result["best"]["number"]:
        cached = {"number": result["best"]["number"], **test_figures(study_config(study), result["best"]["params"])}
        study.set_user_attr(BEST_TEST_ATTR, cached)
    return {**result, **{k: v for k, v in cached.items() if k != "number"}}


def test_figures(cfg: RunConfig, params: dict) -> dict:
    """CE and the configuration, one stack over the study's seeds: test accuracies and the verdict."""
    # a request of its own: resolved here, where it enters
    events = train_stack(resolve_run(cfg.replace(lr=params["lr"])), [CE_ROLE, trial_role(params, "best")])
    result = next(e.result for e in events if isinstance(e, StackFinished))
    ce, best = ([row[i] for row in result.test_acc] for i in (0, 1))
    difference = paired_difference(best, ce)
    return {"test_acc": mean_std(best)[0], "test_std": mean_std(best)[1], "ce_test_acc": mean_std(ce)[0],
            "minus_ce": difference.summary(),
            "verdict": verdict(difference, NAMES[params["method"]].removesuffix(" student"))}


def best_rows(study: optuna.Study, top: int = 5) -> list[str]:
    """The best complete trials as lines: value ± std, method, hyper-parameters; then the pruned count."""
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    lines = [f"#{t.number:<4} val {t.value:.4f} ± {t.user_attrs.get('val_std', math.nan):.4f}  {describe(t.params)}"
             for t in complete[:top]]
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    return [*lines, f"{len(complete)} complete, {pruned} pruned, {failed} failed of {len(trials)} trials"]


def write_plots(study: optuna.Study, directory: str | Path) -> list[str]:
    """history.png (value per trial, best so far) and importance.png (Optuna's fANOVA importance of each
    parameter; T, α, β and the feature weight count over the trials whose method reads them), drawn by
    Optuna's matplotlib visualisations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    with quiet_experimental():
        # a parameter that few trials' methods read (β, T) makes the importance warn that it is inaccurate
        warnings.filterwarnings("ignore", "Some regimes for parameter", UserWarning)
        plots = [("history.png", optuna_plots.plot_optimization_history)]
        if sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)) >= 2:
            plots.append(("importance.png", optuna_plots.plot_param_importances))
        for name, plot in plots:
            axes = plot(study)
            axes.figure.savefig(directory / name, dpi=100, bbox_inches="tight")
            plt.close(axes.figure)
            written.append(str(directory / name))
    return written


# ------------------------------------------------------------------------------------------ the command

MAX_STACK = 64  # trials per stack: beyond this one stack's activations stop fitting a laptop


def command(args, cfg: RunConfig) -> dict:
    """`python -m kd_core study …` (flags in kd_core.__main__): add trials, or report with --summary/--best."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.best or args.summary:
        study = open_study(args.storage, args.name)
        fail_lost_trials(study)
        plots = []
        if args.summary:
            print("\n".join(best_rows(study)))
            plots = write_plots(study, args.plots)
            print("plots: " + ", ".join(plots))
        result = best_test(study, args.storage) if args.best else summary(study, args.storage)
        return {**result, "plots": plots} if args.summary else result
    for name, value, high in (("trials", args.trials, 100_000), ("workers", args.workers, 256),
                              ("stack", args.stack, MAX_STACK)):
        if not 1 <= value <= high:
            raise ValueError(f"--{name} must be a whole number in [1, {high}]; got {value}")
    study = open_study(args.storage, args.name, cfg, load_space(args.space))
    if args.workers == 1:
        run_worker(study, cfg, args.trials, args.stack, log=lambda line: print(line, file=sys.stderr, flush=True))
    else:
        run_workers(args.argv, args.trials, args.workers)
    fail_lost_trials(study)  # a worker that died leaves its running trials FAIL, never RUNNING
    return summary(study, args.storage)


def run_workers(argv: list[str], trials: int, workers: int) -> None:
    """`workers` local processes of this same command (`--workers 1`), the trials shared out between them;
    each one prints its trials on stderr."""
    shares = [trials // workers + (i < trials % workers) for i in range(workers)]
    processes = [subprocess.Popen([sys.executable, "-m", "kd_core", *argv, "--workers", "1", "--trials", str(n)],
                                  stdout=subprocess.DEVNULL) for n in shares if n]
    for i, process in enumerate(processes):
        if process.wait():
            print(f"worker {i} (pid {process.pid}) exited with code {process.returncode}; its running trials "
                  f"are marked failed", file=sys.stderr)
