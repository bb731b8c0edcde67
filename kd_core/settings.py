"""What a visitor of the app may set, without Gradio: limits, presets, the datasets on offer, `make_config`.

`app.py` fills its widgets from here (choices that depend on the dataset included) and maps their values
onto `make_config`, which applies the app's limits on top of `RunConfig.validate`. Every `ValueError`
raised here is a sentence for the visitor.
"""

from __future__ import annotations

import os

from . import checkpoints, data, models, predict
from .config import RunConfig
from .data import CLASSES, TRAIN_SET_SIZES

MAX_APP_EPOCHS = 20  # the app's cap (RunConfig allows 50): a run on a shared Space stays short
DEFAULT_MAX_RUN_SECONDS = 300.0  # wall-time cap of one run of training; $KD_MAX_RUN_SECONDS overrides
TRAIN_SIZES = (0, 20_000, 10_000, 5_000, 2_000, 1_000, 500)  # 0 = the whole training set
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
NO_HIDDEN_CLASS = "none"
DATASET_LABELS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10"}

# preset name -> RunConfig fields that differ from RunConfig(); every other knob goes back to its default
PRESETS: dict[str, dict] = {
    "Defaults": {},
    "Seed script: T=3.5, α=0.6": {"temperature": 3.5, "alpha": 0.6},
    # measured with the shipped teacher, seed 0: CE student 78.5%, KD student 80.6% test accuracy
    "Low data (1,000 images): KD shines": {"temperature": 4.0, "alpha": 0.9, "train_size": 1000,
                                           "epochs": 20, "lr": 3e-3},
    # measured: test dresses recognised by the CE student 0%, by the KD student 32%
    "Hidden class: no dresses for the students": {"temperature": 4.0, "alpha": 0.9, "hide_class": 3,
                                                   "train_size": 10_000, "epochs": 20, "lr": 3e-3},
    "Pure CE (α=0): twin students": {"alpha": 0.0},
}


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


def make_config(*, temperature: float, alpha: float, epochs: int, lr: float, student: str,
                train_size: int, hide_class: str, seed: int, dataset: str | None = None,
                base: RunConfig | None = None) -> RunConfig:
    """The app's settings as a validated RunConfig, capped for a shared machine; ValueError if not."""
    base = base or RunConfig()
    dataset = base.dataset if dataset is None else dataset
    offered = app_datasets()
    if dataset not in offered:
        raise ValueError(f"dataset must be one of {', '.join(offered)} here; got {dataset!r}. "
                         f"{dataset_hint()}")
    if student not in app_students(dataset):
        raise ValueError(f"student must be one of {', '.join(app_students(dataset))} for {dataset} in "
                         f"the app; got {student!r}")
    classes = CLASSES[dataset]
    if hide_class not in hidden_class_choices(dataset):
        raise ValueError(f"hide_class must be {NO_HIDDEN_CLASS!r} or one of {', '.join(classes)}; "
                         f"got {hide_class!r}")
    epochs, train_size, seed = (_whole(name, value) for name, value in
                                (("epochs", epochs), ("train_size", train_size), ("seed", seed)))
    if not 1 <= epochs <= MAX_APP_EPOCHS:
        raise ValueError(f"epochs must be a whole number in [1, {MAX_APP_EPOCHS}] in the app "
                         f"(the command line allows more); got {epochs!r}")
    hidden = None if hide_class == NO_HIDDEN_CLASS else classes.index(hide_class)
    cfg = base.replace(dataset=dataset, temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                       student=student, train_size=train_size, hide_class=hidden, seed=seed,
                       max_seconds=max_run_seconds(), cpu_threads=training_threads())
    return cfg.validate(len(classes))


def _whole(name: str, value) -> int:
    """Widgets send 3.0 for 3; anything that is not a whole number is the visitor's mistake."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ValueError(f"{name} must be a whole number; got {value!r}")
    return int(value)
