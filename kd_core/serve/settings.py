"""What a visitor of the app may set, without Gradio: limits, presets, the datasets on offer, `make_config`.

The page (kd_core.ui) fills its widgets from here (choices that depend on the dataset included) and maps their
values onto `make_config`, which applies the app's limits (RunConfig.validate runs once after them, when the handler
resolves the run). `api_checks` checks
every value a client sends to an API endpoint (any JSON: a wrong type, NaN, an empty or over-long string)
before Gradio handles it. Every `ValueError` raised here is one line for the visitor that names the value
and its allowed range, and quotes at most 40 characters of what was sent.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kd_core.config import MAX_REPEATS, MAX_TEMPERATURE, RunConfig
from kd_core.data import datasets as data
from kd_core.data.datasets import CLASSES, TRAIN_SET_SIZES
from kd_core.engine.roles import METHODS
from kd_core.models import checkpoints, predict
from kd_core.models import zoo as models

MAX_APP_EPOCHS = 20  # the app's cap (RunConfig allows 50): a run on a shared Space stays short
APP_TEMPERATURES = (0.5, 20.0)  # the Train tab's range of T (RunConfig allows (0, 100])
MAX_SEED = 2**63 - 1  # torch.manual_seed's range
MAX_TEXT = 200  # characters: the longest text a value may be (a sweep's 25 values fit in 100)
MAX_SKETCH_LAYERS = 16  # an image editor value's layers (the app's sketchpad sends none)
DEFAULT_MAX_RUN_SECONDS = 300.0  # wall-time cap of one run of training; $KD_MAX_RUN_SECONDS overrides
TRAIN_SIZES = (0, 20_000, 10_000, 5_000, 2_000, 1_000, 500)  # 0 = the whole training set
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
NO_HIDDEN_CLASS = "none"
DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}

# preset name -> RunConfig fields that differ from RunConfig(); every other knob goes back to its default
PRESETS: dict[str, dict] = {
    # chosen on the validation split (bench/choose_defaults.py, 5 seeds): test KD − CE +1.24 points, 5/5 seeds
    "Defaults: 1,000 images, KD beats CE": {},
    # 5 seeds: test KD − CE +0.08 points, KD ahead in 2/5: no gain beyond seed noise on full data
    "Full data: no gain here": {"train_size": 0, "epochs": 3, "lr": 1e-3, "temperature": 2.0, "alpha": 0.5},
    # 5 seeds, 1,000 labelled + 50,000 teacher-labelled images, 8 epochs: test KD − CE +6.7 ± 0.4 points, 5/5
    "The teacher labels images for the student": {"unlabeled": 50_000, "epochs": 8},
    # 5 seeds: CE 0 % of test dresses, KD 28.7 %; +2.5 on the Dress logit (automatic): KD 76.8 %, CE 0 %
    "Hidden class: no dresses for the students": {"hide_class": 3, "train_size": 10_000, "epochs": 10,
                                                   "lr": 1e-3},
    # 5 seeds on the defaults: KD +1.2, DIST +0.9, hint +0.5, cosine −0.1 (noise), DKD −0.8 points against CE
    "Methods side by side: KD, DKD, DIST, hint, cosine": {"methods": ("kd", "dkd", "dist", "hint", "cosine")},
    "Seed script: T=3.5, α=0.6": {"temperature": 3.5, "alpha": 0.6},
    "Pure CE (α=0): twin students": {"alpha": 0.0},
}


# the Sweep tab's starting grid (chosen on the validation split, see README "Presets and defaults")
SWEEP_DEFAULTS = {"temperatures": "1, 2, 4, 8", "alphas": "0.1, 0.5, 0.9", "epochs": 20, "train_size": 1000,
                  "repeats": 3}


def max_run_seconds() -> float:
    return float(os.environ.get("KD_MAX_RUN_SECONDS", DEFAULT_MAX_RUN_SECONDS))


def training_threads() -> int:
    """Torch threads per training run on a CPU: $KD_TRAINING_THREADS, else RunConfig's default."""
    return int(os.environ.get("KD_TRAINING_THREADS", RunConfig().cpu_threads))


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return RunConfig().replace(**PRESETS[name])


def hidden_class_name(cfg: RunConfig) -> str:
    return NO_HIDDEN_CLASS if cfg.hide_class is None else CLASSES[cfg.dataset][cfg.hide_class]


# ------------------------------------------------------------------------------------ datasets

def app_datasets() -> tuple[str, ...]:
    """The datasets the app offers: the default one (torchvision downloads it where it is not on disk),
    then each other one whose files are on this machine and whose teacher is in checkpoints/.

    A quick look for files, no loading: a Space never starts a CIFAR-10 download on a visitor's click.
    """
    default = RunConfig().dataset
    return (default, *(name for name in data.available_datasets()
                       if name != default and _has_default_teacher(name)))


def _has_default_teacher(dataset: str) -> bool:
    try:
        checkpoints.default_teacher_path(dataset)
    except checkpoints.CheckpointError:
        return False
    return True


def dataset_hint() -> str:
    """Which datasets could be added, and how (shown under the picker)."""
    missing = [DATASET_LABELS[name] for name in CLASSES if name not in app_datasets()]
    if not missing:
        return ""
    return (f"{' and '.join(missing)} can be picked once the files are in ./data and a teacher is in "
            f"checkpoints/ (see the README).")


def app_students(dataset: str) -> tuple[str, ...]:
    """Students offered for `dataset`: the small ones, and ResNet-18 for CIFAR-10 (GPU-sized: on a CPU,
    `live_run`'s budget check refuses all but tiny runs of it, with the reason)."""
    return (*models.SMALL_STUDENTS, *(("resnet18-cifar",) if dataset == "cifar10" else ()))


def hidden_class_choices(dataset: str) -> list[str]:
    """The hidden-class picker's choices: none, or one of the dataset's class names."""
    return [NO_HIDDEN_CLASS, *CLASSES[dataset]]


def train_size_choices(dataset: str) -> list[tuple[str, int]]:
    """(label, value) pairs for the training-set picker; 0 = the whole training set."""
    return [(f"all {TRAIN_SET_SIZES[dataset]:,}", 0), *((f"{n:,}", n) for n in TRAIN_SIZES[1:])]


def teacher_summary(dataset: str) -> str:
    """One line about `dataset`'s default teacher, or why there is none."""
    try:
        teacher = predict.default_teacher(dataset)
    except checkpoints.CheckpointError as error:
        return f"no teacher yet: {error}"
    return (f"{DATASET_LABELS[dataset]} teacher: {teacher.meta['arch']}, {teacher.meta['params']:,} "
            f"parameters, {100 * teacher.meta['test_acc']:.1f}% test accuracy")


UNLABELED_SIZES = (0, 5_000, 20_000, 50_000)  # transfer-set sizes offered (0 = off)
MAX_DKD_BETA = 20.0  # the DKD β slider's top (mdistiller uses 1-8)


def unlabeled_choices() -> list[tuple[str, int]]:
    return [("none", 0), *((f"{n:,}", n) for n in UNLABELED_SIZES[1:])]


def make_config(*, temperature: float, alpha: float, epochs: int, lr: float, student: str,
                train_size: int, hide_class: str, seed: int, dataset: str | None = None,
                repeats: int = RunConfig.repeats, unlabeled: int = 0, methods: Sequence[str] = RunConfig.methods,
                dkd_beta: float = RunConfig.dkd_beta, feature_weight: float = RunConfig.feature_weight,
                base: RunConfig | None = None) -> RunConfig:
    """The app's settings as a RunConfig within the app's limits, capped for a shared machine; ValueError if not."""
    base = base or RunConfig()
    dataset = base.dataset if dataset is None else dataset
    offered = app_datasets()
    if not isinstance(dataset, str) or dataset not in offered:
        raise ValueError(f"dataset must be one of {', '.join(offered)} here; got {shown(dataset)}. "
                         f"{dataset_hint()}")
    check_number("temperature", temperature, *APP_TEMPERATURES)
    check_number("alpha", alpha, 0.0, 1.0)
    epochs = check_number("epochs", epochs, 1, MAX_APP_EPOCHS, whole=True,
                          note=" in the app (the command line allows more)")
    check_choice("lr", lr, LEARNING_RATES)
    check_choice("student", student, app_students(dataset), note=f" for {dataset} in the app")
    train_size = check_choice("train_size", train_size, TRAIN_SIZES, note=" (0: the whole training set)")
    classes = CLASSES[dataset]
    if not isinstance(hide_class, str) or hide_class not in hidden_class_choices(dataset):
        raise ValueError(f"hide_class must be {NO_HIDDEN_CLASS!r} or one of {', '.join(classes)}; "
                         f"got {shown(hide_class)}")
    seed = check_number("seed", seed, 0, MAX_SEED - MAX_REPEATS, whole=True)
    repeats = check_number("repeats", repeats, 1, MAX_REPEATS, whole=True,
                           note=" (seeds trained together)")
    unlabeled = check_choice("unlabeled", unlabeled, UNLABELED_SIZES, note=" (0: no transfer set)")
    methods = check_methods(methods)
    check_number("dkd_beta", dkd_beta, 0.0, MAX_DKD_BETA)
    check_number("feature_weight", feature_weight, 0.0, 1.0)
    hidden = None if hide_class == NO_HIDDEN_CLASS else classes.index(hide_class)
    cfg = base.replace(dataset=dataset, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                       student=student, train_size=train_size, hide_class=hidden, seed=seed, repeats=repeats,
                       unlabeled=unlabeled, methods=methods, dkd_beta=dkd_beta, feature_weight=feature_weight,
                       max_seconds=max_run_seconds(),
                       cpu_threads=training_threads())
    return cfg  # RunConfig.validate runs once, in kd_core.run.resolve_run, where the handler resolves the run


def sweep_config(epochs: int, train_size: int, repeats: int = SWEEP_DEFAULTS["repeats"]) -> RunConfig:
    """The Sweep tab's run: the default student and learning rate, `epochs` over `train_size` images, seeds."""
    cfg = RunConfig()
    return make_config(temperature=cfg.temperature, alpha=cfg.alpha, epochs=epochs, lr=cfg.lr,
                       student=cfg.student, train_size=train_size, hide_class=NO_HIDDEN_CLASS, seed=cfg.seed,
                       repeats=repeats)


# ------------------------------------------------------------------------------- values from clients

def shown(value: Any) -> str:
    """`value` as an error message quotes it: its repr, cut to 40 characters (and the length of a long
    string), so that a megabyte sent by a client never comes back in one line."""
    text = repr(value)
    if len(text) <= 40:
        return text
    length = f" ({len(value):,} characters)" if isinstance(value, str) else ""
    return f"{text[:37]}…{length}"


def check_number(name: str, value: Any, low: float, high: float, *, whole: bool = False,
                 low_open: bool = False, note: str = "") -> float | int:
    """`value` if it is a finite number (a whole one if `whole`) in [low, high] (or (low, high]), as an
    int if `whole`; else ValueError naming `name` and the range. Booleans are not numbers here."""
    bounds = f"{low}, {high}" if whole else f"{low:g}, {high:g}"
    message = (f"{name} must be {'a whole number' if whole else 'a number'} in {'(' if low_open else '['}"
               f"{bounds}]{note}; got {shown(value)}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(message)
    if isinstance(value, float) and not (math.isfinite(value) and (value.is_integer() or not whole)):
        raise ValueError(message)
    if value > high or value < low or (low_open and value == low):
        raise ValueError(message)
    return int(value) if whole else value


def check_choice(name: str, value: Any, choices: Sequence, note: str = "") -> Any:
    """The choice equal to `value` (3000.0 -> 3000), or ValueError listing the choices."""
    for choice in choices:
        if type(value) is type(choice) or {type(value), type(choice)} == {int, float}:
            if value == choice:
                return choice
    listed = ", ".join(f"{choice:g}" if isinstance(choice, float) else str(choice) for choice in choices)
    raise ValueError(f"{name} must be one of {listed}{note}; got {shown(value)}")


def check_methods(value: Any) -> tuple[str, ...]:
    """A non-empty list of distinct method names (kd_core.engine.roles.METHODS), or ValueError listing them."""
    if (not isinstance(value, list | tuple) or not value or len(set(map(str, value))) != len(value)
            or any(not isinstance(m, str) or m not in METHODS for m in value)):
        raise ValueError(f"methods must be a list of one or more of {', '.join(METHODS)}, each once; "
                         f"got {shown(value)}")
    return tuple(value)


CLASS_CODE_CHARACTERS = "a-z0-9-"  # a class code's alphabet: safe in a link, a file name and SQL alike
CLASS_CODE_LENGTH = (3, 32)


def check_class_code(value: Any, *, optional: bool = False, name: str = "class_code") -> str:
    """A class code (3 to 32 characters of a-z, 0-9 and -), or "" for no class where `optional`; else ValueError."""
    low, high = CLASS_CODE_LENGTH
    if optional and value == "":
        return ""
    pattern = f"[{CLASS_CODE_CHARACTERS}]{{{low},{high}}}"
    if not (isinstance(value, str) and re.fullmatch(pattern, value)):
        raise ValueError(f"{name} must be {low} to {high} characters of a-z, 0-9 and -"
                         f"{', or empty for no class' if optional else ''}; got {shown(value)}")
    return value


def check_text(name: str, value: Any, example: str) -> str:
    """A string of 1 to MAX_TEXT characters, not all blank, or ValueError saying what is expected."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ValueError(f"{name} must be {example}, at most {MAX_TEXT} characters; got {shown(value)}")
    return value


def check_picture(name: str, value: Any, uploads: Path) -> dict | None:
    """None (no picture: the page clears its outputs) or a file the client uploaded to this server, as
    gradio_client's `handle_file(path)` sends it: a dict whose "path" lies in `uploads`."""
    path = value.get("path") if isinstance(value, dict) else None
    if value is None:
        return None
    if not (isinstance(path, str) and 0 < len(path) <= 4096 and _inside(path, uploads)):
        raise ValueError(f"{name} must be a picture uploaded to this server (gradio_client: "
                         f"handle_file(path)), or None; got {shown(value)}")
    return value


def check_sketch(name: str, value: Any, uploads: Path) -> dict:
    """An image editor value: {"background", "layers", "composite"}, the composite a picture uploaded to
    this server (see check_picture); ValueError if not, or if it holds no drawing."""
    drawn = isinstance(value, dict) and (value.get("composite") is not None or value.get("layers"))
    if isinstance(value, dict) and "composite" in value and not drawn:
        raise ValueError(f"The {name} is empty: draw something first.")
    layers = value.get("layers") if isinstance(value, dict) else None
    if (not isinstance(value, dict) or not isinstance(layers, list | None)
            or len(layers or ()) > MAX_SKETCH_LAYERS or value.get("composite") is None):
        raise ValueError(f"{name} must be an image editor value {{'background': picture or None, 'layers': "
                         f"[pictures], 'composite': picture}}; got {shown(value)}")
    for part in ("background", "composite"):
        check_picture(f"{name}['{part}']", value.get(part), uploads)
    for layer in layers or ():
        check_picture(f"{name}['layers'] items", layer, uploads)
    return value


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def api_checks(uploads: Path) -> dict[str, tuple[tuple[str, ...], Callable[..., Any]]]:
    """API name -> (its parameters in the API's order, the check of their values as a client sent them).

    Each check is called with the parameters by name and raises ValueError naming the first bad one and
    its range. `uploads`: the folder of Gradio's uploads. A new parameter of an endpoint goes at the end
    of its tuple (tests/test_api_values.py checks the tuples against the running app's API)."""
    return {
        "distill": (("temperature", "alpha", "epochs", "lr", "student", "train_size", "hide_class", "seed",
                     "dataset", "repeats", "unlabeled", "methods", "dkd_beta", "feature_weight", "class_code"),
                    _check_distill),
        "predict": (("image",), lambda image: check_picture("image", image, uploads)),
        "predict_sketch": (("sketch",), lambda sketch: check_sketch("sketch", sketch, uploads)),
        "soften": (("image", "temperature"), lambda image, temperature: (
            check_picture("image", image, uploads),
            check_number("temperature", temperature, 0, MAX_TEMPERATURE, low_open=True))),
        "sweep": (("temperatures", "alphas", "epochs", "train_size", "repeats"), _check_sweep),
        "class_board": (("class_code",), lambda class_code: check_class_code(class_code)),
    }


def _check_distill(*, dataset: Any, class_code: Any = "", **values: Any) -> RunConfig:
    """make_config, where a client's None for the dataset is a mistake, not 'the default one'; and the class."""
    if dataset is None:
        raise ValueError(f"dataset must be one of {', '.join(app_datasets())} here; got None")
    cfg = make_config(dataset=dataset, **values)
    check_class_code(class_code, optional=True)  # the last parameter: checked last
    return cfg


def _check_sweep(temperatures: Any, alphas: Any, epochs: Any, train_size: Any, repeats: Any) -> RunConfig:
    """The grid's texts (their numbers are checked when parsed) and the run they train with."""
    for name, value in (("temperatures", temperatures), ("alphas", alphas)):
        check_text(name, value, "comma-separated numbers like 1, 2, 4")
    return sweep_config(epochs, train_size, repeats)
