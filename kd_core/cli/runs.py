"""The CLI's runs: `distill`, `sweep` and `train-teacher --data`, each resolved once where it enters.

`resolve(cfg)` turns the flags' config into a `Run` (kd_core.run): the teacher is checked against the data before
any data is loaded, and a teacher that must be prepared first is prepared here, its events printed on stderr as
they come (`print_event`, the one printer of the stream's events). The engine, the results and the model cards then
read the run; nothing resolves again.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

from kd_core.config import RunConfig
from kd_core.engine import choose
from kd_core.engine.diagnosis import ce_val_acc, stack_teacher_check
from kd_core.engine.estimate import check_cpu_up_front
from kd_core.engine.events import StackEvaluated, StackFinished, StackStarted
from kd_core.engine.sweep import run_sweep
from kd_core.engine.train import distill, kd_index, run_result, save_student
from kd_core.models import checkpoints
from kd_core.publish.card import model_card, run_card_summary, write_card
from kd_core.run import (
    Run,
    prepare,
    resolve_device,
    resolve_run,
)
from kd_core.teacher.logits import save_logits_beside, teacher_logits
from kd_core.teacher.training import RECIPE, TeacherRecipe
from kd_core.views.teacher import teacher_line


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def print_event(event: object, cfg: RunConfig) -> None:
    """One line on stderr for an event of the run's stream (the teacher's preparation, then the students')."""
    kd = kd_index(cfg)
    if (line := teacher_line(event, cfg.teacher_epochs)) is not None:
        say(line)
    elif isinstance(event, StackStarted):
        for note in event.notes:
            say(note)
        transfer = f" + {event.transfer_samples} unlabelled" if event.transfer_samples else ""
        say(f"teacher acc {event.teacher_acc:.4f} ({event.logits_source} logits, {event.logits_seconds:.1f}s); "
            f"{event.train_samples} training samples{transfer} per seed, {len(event.seeds)} seed(s), on {event.device}")
    elif isinstance(event, StackEvaluated) and event.step > 0:
        hidden = (f"  hidden class: CE {event.hidden_mean(0):.3f} KD {event.hidden_mean(kd):.3f}"
                  if event.hidden_accuracy is not None else "")
        say(f"epoch {event.progress:.2f}/{cfg.epochs}  validation: CE acc {event.mean(0):.4f}  KD acc "
            f"{event.mean(kd):.4f}{hidden}  {event.elapsed_s:.1f}s")


def resolve(cfg: RunConfig, recipe: TeacherRecipe = RECIPE) -> tuple[Run, dict]:
    """The run, its teacher prepared (trained first with --teacher-epochs, a line per epoch), and the JSON fields
    the teacher adds (docs/contracts.md)."""
    device = resolve_device(cfg.device)  # a missing GPU fails here, before any data is read
    if device.type == "cpu":  # days of CPU work are refused before any download or data (the seed's experiment)
        check_cpu_up_front(cfg)
    run = resolve_run(cfg)
    if run.prepared:
        return run, {"teacher": cfg.teacher}
    run = prepare(run, device, on_event=lambda event: print_event(event, cfg), recipe=recipe)
    for note in (getattr(run.dataset, "note", ""), *run.notes):
        if note:
            say(note)
    teacher = run.teacher
    say(f"teacher {teacher.source}: validation acc {teacher.val_acc:.4f}")
    fields = {"teacher": teacher.source, "teacher_checkpoint": str(teacher.path), "teacher_val_acc": teacher.val_acc}
    if teacher.train_seconds is not None:
        fields["teacher_train_seconds"] = teacher.train_seconds
    return run, fields


def check_before_work(cfg: RunConfig) -> None:
    """The device exists and a checkpoint teacher was made for the dataset (from its metadata), before the data
    is loaded and before any training (a study's workers resolve their runs themselves); else a ValueError."""
    resolve_device(cfg.device)
    cfg.validate()
    if not cfg.data and ":" not in cfg.teacher:
        path = checkpoints.resolve_teacher(cfg.teacher, cfg.dataset)
        checkpoints.check_teacher_fits(path, cfg.dataset, checkpoints.inspect(path)[1])


def data_facts(run: Run) -> dict:
    """The JSON's `classes` and `data` (its source and fingerprint) of a run."""
    from kd_core.data.sources import fingerprint

    cfg = run.config
    return {"classes": list(run.dataset.classes), "data": {"source": cfg.data or cfg.dataset,
                                                           "fingerprint": fingerprint(run.dataset)}}


def with_data(summary: dict, run: Run) -> dict:
    """A summary whose `config.dataset` names the data the run trained on (the user's, with --data)."""
    if run.config.data:
        summary["config"] = {**summary["config"], "dataset": run.dataset.name}
    return {**summary, **data_facts(run)}


# ------------------------------------------------------------------ T and α chosen on validation (engine.choose)

def number_or_auto(text: str) -> float | str:
    """--T and --alpha: a number, or "auto"."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def number_or(value: float | str | None, default: float) -> float:
    return default if value in (None, "auto") else value


def choice_grid(temperature: float | str | None, alpha: float | str | None, data: str,
                methods: tuple[str, ...]) -> tuple[list[float], list[float]] | None:
    """The (T, α) grid distill chooses from on the validation split (kd_core.engine.choose), or None. With --data,
    T and α are auto unless given as numbers (None: not given); without it, only when asked for ("auto"). The grid's
    students learn by Hinton KD, so a run with other methods keeps fixed values."""
    auto = [value == "auto" or (value is None and bool(data)) for value in (temperature, alpha)]
    if not any(auto):
        return None
    if tuple(methods) != ("kd",):
        if "auto" in (temperature, alpha):
            raise ValueError("--T auto and --alpha auto choose for Hinton KD alone (--methods kd); give numbers for "
                             "other methods")
        return None
    return choose.grid(None if auto[0] else number_or(temperature, RunConfig.temperature),
                       None if auto[1] else number_or(alpha, RunConfig.alpha))


def choose_on_validation(run: Run, grid: tuple[list[float], list[float]]) -> dict:
    """Train the grid (a line per evaluation on stderr: CE and the best cell so far) and return the choice."""
    temperatures, alphas = grid
    say(f"choosing T and α on the validation split: T ∈ {{{', '.join(f'{t:g}' for t in temperatures)}}} × "
        f"α ∈ {{{', '.join(f'{a:g}' for a in alphas)}}}, trained as one stack with CE")

    grid_stack = []

    def show(event) -> None:
        if isinstance(event, StackFinished):
            grid_stack.append(event.result)
        if isinstance(event, StackEvaluated) and event.step > 0:
            best = max(event.mean(role) for role in range(1, len(event.accuracy[0])))
            say(f"epoch {event.progress:.2f}/{run.config.epochs}  validation subset: CE acc {event.mean(0):.4f}  "
                f"best KD cell {best:.4f}  {event.elapsed_s:.1f}s")

    chosen = choose.choose(run, temperatures, alphas, show)
    say(f"chosen on validation: T={chosen['T']:g}, α={chosen['alpha']:g} (" + ", ".join(
        f"T={row['T']:g} α={row['alpha']:g} {100 * row['val_kd_minus_ce']:+.2f}" for row in chosen["grid"])
        + " points KD − CE)")
    check_teacher_early(grid_stack[0], chosen["alpha"])
    return chosen


def check_teacher_early(grid_stack, alpha: float) -> None:
    """The teacher against the grid's CE students on validation, before the run's students train: one line either
    way (the same check the JSON's `diagnosis` gives at the end; the run goes on, its CE twin shows the truth)."""
    finding = stack_teacher_check(grid_stack, alpha)
    if finding is not None:
        say(f"teacher check, before the students: {finding.message}")
    else:
        say(f"teacher check, before the students: the teacher ({grid_stack.teacher_val_acc:.1%} on validation) is "
            f"clearly ahead of the CE student ({ce_val_acc(grid_stack):.1%})")


# ------------------------------------------------------------------------------------------ distill, sweep

def distill_command(cfg: RunConfig, save_to: str | None, argv: list[str],
                    grid: tuple[list[float], list[float]] | None = None) -> dict:
    """distill; with a `grid`, T and α are first chosen on the validation split, and the JSON says so (`chosen`)."""
    run, added = resolve(cfg)
    chosen = None
    if grid is not None:
        chosen = choose_on_validation(run, grid)
        run = run.replace(temperature=chosen["T"], alpha=chosen["alpha"])
    result = None
    for event in distill(run):
        print_event(event, run.config)
        if isinstance(event, StackFinished):
            result = run_result(event.result)
            say(f"test: CE {result.ce_acc:.4f}  KD {result.kd_acc:.4f}; {result.verdict}")
            summary = result.summary()  # the why (agreement, calibration) counted once: the line and the JSON
            say_why(summary)
            for method in result.methods() if len(cfg.methods) > 1 else ():
                say(f"  {method['method']}: {method['acc']:.4f} ± {method['acc_std']:.4f}; {method['verdict']}")
    if save_to:
        save_students(result, Path(save_to), argv)
    return {**with_data(summary, run), **added, "chosen": chosen}


def say_why(why: dict) -> None:
    """One line of what KD changed besides top-1 (a summary's agreement and calibration, when it has them)."""
    if "calibration" in why:
        agreement, ece = why["agreement"], why["calibration"]
        say(f"why: the student repeats the teacher's mistakes on {100 * agreement['kd_copied_errors']:.1f}% of them "
            f"with KD, {100 * agreement['ce_copied_errors']:.1f}% with CE; calibration error (ECE, 15 bins) teacher "
            f"{100 * ece['teacher']:.1f}%, CE {100 * ece['ce']:.1f}%, KD {100 * ece['kd']:.1f}%")


def save_students(result, directory: Path, argv: list[str]) -> None:
    """Each student as a checkpoint and, beside it, its model card from the saved metadata and the run."""
    for role in ("ce", "kd"):
        path = save_student(result, role, directory / f"{role}-student.safetensors",
                            recipe="python -m kd_core " + shlex.join(argv))
        meta = checkpoints.load_tensors(path)[1]
        write_card(path, model_card(meta, run_card_summary(result, meta)))


def sweep_command(cfg: RunConfig, temperatures: list[float], alphas: list[float], method: str) -> dict:
    run, added = resolve(cfg)
    return {**with_data(run_sweep(run, temperatures, alphas, method=method).summary(), run), **added}


def train_teacher_on_data(cfg: RunConfig, recipe: TeacherRecipe, out: str, arch: str) -> dict:
    """train-teacher with --data or a timm:/torchvision: arch: the teacher is prepared (as distill's
    --teacher-epochs does), then its checkpoint is copied to `out` with its logits beside it."""
    if not out.endswith(".safetensors"):
        raise ValueError("--out must end in .safetensors")
    run, added = resolve(cfg, recipe)
    saved = checkpoints.atomic_write(out, lambda tmp: shutil.copyfile(run.teacher.path, tmp))
    save_logits_beside(saved, run.dataset, teacher_logits(saved, run.dataset, resolve_device(cfg.device)))
    meta = checkpoints.read_metadata(saved)
    return {"checkpoint": str(saved), "val_acc": added["teacher_val_acc"], "test_acc": meta.get("test_acc"),
            "train_seconds": added.get("teacher_train_seconds"), "arch": arch, **data_facts(run)}
