"""Every knob of a distillation run, in one frozen dataclass.

`RunConfig` is the single home of defaults: the CLI, the Gradio app, the sweep and the benchmarks all
start from `RunConfig()` and change fields with `dataclasses.replace`. `validate()` turns a bad value
into one `ValueError` sentence that says the allowed range, so every front end can show it as is.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

DATASETS = ("fashion-mnist", "mnist", "cifar10")
DEVICES = ("auto", "cpu", "cuda")
MAX_EPOCHS = 50  # a hard cap so one run (or one Space visitor) cannot train forever
MAX_BATCH_SIZE = 8192  # larger batches stop fitting comfortably in a laptop's memory
MAX_REPEATS = 8  # seeds per run: enough for a 95 % interval, few enough to stay one batched pass
MAX_TEMPERATURE = 100.0  # beyond this every softened distribution is uniform to float precision
# CPU training speed measured here (1 thread, 2 busy cores): mlp-small and resnet18-cifar students trained
# at 70 and 74 GFLOP/s (3 × forward FLOPs), cnn-tiny at 16; so this is an optimistic estimate
CPU_TFLOP_PER_S = 0.07
MAX_IMAGE_SIZE = 1024  # image_size, teacher_image_size: a side in pixels
MAX_TEACHER_EPOCHS = 200
MAX_CLASSES = 1000  # classes in a user's data at most (kd_core.data.sources.Limits' default)
# method -> its loss in one line (the app shows these beside the method picker)
METHODS = {
    "kd": "Hinton KD: α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE",
    "kd-std": "KD on z-scored logits (logit standardisation): α·T²·KL(softmax(Z(t)/T) ‖ softmax(Z(s)/T)) "
              "+ (1 − α)·CE",
    "dkd": "decoupled KD: CE + T²·(TCKD + β·NCKD), target vs non-target classes",
    "dkd-std": "decoupled KD on z-scored logits: CE + T²·(TCKD(Z) + β·NCKD(Z))",
    "dist": "DIST: CE + (1 − ρ_inter) + (1 − ρ_intra), Pearson relations of softmax(s), softmax(t)",
    "hint": "FitNets hint: (1 − w)·CE + w·mean((r(f_s) − f_t)²), r a learned Linear onto the teacher's "
            "penultimate features f_t",
    "cosine": "cosine features: (1 − w)·CE + w·(1 − cos(f_s, pool(f_t))), f_t average-pooled to the "
              "student's width",
}
FEATURE_METHODS = ("hint", "cosine")  # read penultimate features (the teacher's, from its cache)
NAMES = {"ce": "CE student", "kd": "KD student", "kd-std": "KD-std student", "dkd": "DKD student",
         "dkd-std": "DKD-std student", "dist": "DIST student", "hint": "Hint student", "cosine": "Cosine student"}
CPU_MAX_TFLOP = 20.0  # budget.check_cpu_budget's default cap: about 5 minutes at that speed; GPUs: no cap


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "fashion-mnist"  # one of DATASETS
    teacher: str = "default"  # checkpoint path, or "default" for the one shipped in checkpoints/
    student: str = "mlp-small"  # a name from kd_core.models.zoo.STUDENTS, or timm:NAME, hf-hub:ORG/NAME,
    #                             local-dir:PATH, torchvision:NAME (kd_core.models.students)
    # the defaults are the low-data regime where KD's gain is beyond seed noise, chosen on the validation split
    # by bench/choose_defaults.py (README "Presets and defaults"): 1,000 images, 20 epochs, lr 3e-3, T=4, α=0.9
    temperature: float = 4.0  # T: softens both softmaxes in the KD term; T=1 is the plain softmax
    alpha: float = 0.9  # weight on the teacher's soft targets; (1 - alpha) weighs hard-label CE
    epochs: int = 20  # passes over the (possibly reduced) training set
    lr: float = 3e-3  # Adam learning rate, the same for both students
    batch_size: int = 256  # samples per step; both students see the same batch
    train_size: int = 1000  # 0 = the whole training set (minus validation); else a class-stratified random subset
    hide_class: int | None = None  # class index removed from the students' training set (Hinton 2015 §3)
    augment: bool = False  # random crop + flip per batch (CIFAR); the teacher then sees each augmented batch
    pretrained: bool = False  # ResNet students start from torchvision's ImageNet weights (online; else from
    #                           random init, and Started.notes says so); both students get the same weights
    seed: int = 0  # seeds the subset, the shared student init and the batch order (of the first repeat)
    repeats: int = 5  # seeds trained together (seed, seed+1, …): results carry their spread over seeds;
    #                   seed i's CE and KD students share init, batches and subset (one batched pass)
    unlabeled: int = 0  # transfer set: this many more training images, labelled by the teacher alone; only
    #                     the distilling students learn from them (Hinton 2015 §2); 0 = off
    unlabeled_hidden: bool = False  # with hide_class: may its images be among the unlabelled ones? (Hinton's
    #                                omitted-class experiment: no)
    methods: tuple[str, ...] = ("kd",)  # distilling students besides CE (METHODS): one each
    dkd_beta: float = 8.0  # DKD's weight on the non-target-class term (mdistiller's CIFAR-100 default)
    feature_weight: float = 0.25  # hint, cosine: weight w on the feature loss, (1 − w) on CE (PyTorch KD tutorial)
    evaluations: int = 12  # live validation-subset evaluations per run, evenly spaced in steps (the curves' points)
    device: str = "auto"  # "auto" picks cuda when available, else cpu
    cpu_threads: int = 1  # torch threads while training on CPU: a 2nd core speeds small students <10%,
    #                       but when another process wants that core, 2 threads ran 10-80x slower here
    event_interval_s: float = 0.25  # at most one step event per this many seconds (UI refresh rate)
    max_seconds: float = 0.0  # 0 = no limit; else stop training after this wall time (shared Spaces)
    # your own data and teacher (kd_core.data.sources, kd_core.teacher.sources; README "Your own data and teacher")
    data: str = ""  # an ImageFolder, a .zip of one, hf:ORG/NAME[:CONFIG], a save_to_disk folder or parquet files;
    #                 "" = the built-in `dataset`
    image_size: int = 0  # the students' input side (images resized to it); 0 = the data's own size
    image_column: str = ""  # a table's (Hub, save_to_disk, parquet) image column; "" = the one Image feature
    label_column: str = ""  # a table's label column; "" = the one ClassLabel (else `label`/`labels`)
    teacher_image_size: int = 0  # the teacher's input side; 0 = its pretrained config's, else the students'
    teacher_pretrained: bool = False  # timm: / torchvision: teachers start from their pretrained weights (online)
    teacher_epochs: int = 0  # train (or fine-tune) the teacher on the training split first; 0 = use it as it is
    student_pretrained: bool = False  # timm: / torchvision: students start from their pretrained weights (online),
    #                                   a new head for the data's classes; hf-hub: and local-dir: students always do

    def validate(self, num_classes: int | None = None) -> RunConfig:
        """Return self, or raise ValueError naming the first bad field and its allowed range."""
        _check_choice("dataset", self.dataset, DATASETS)
        _check_choice("device", self.device, DEVICES)
        _check_number("temperature", self.temperature, low=0.0, high=MAX_TEMPERATURE, low_open=True)
        _check_number("alpha", self.alpha, low=0.0, high=1.0)
        _check_int("epochs", self.epochs, low=1, high=MAX_EPOCHS)
        _check_number("lr", self.lr, low=0.0, high=1.0, low_open=True)
        _check_int("batch_size", self.batch_size, low=1, high=MAX_BATCH_SIZE)
        _check_int("train_size", self.train_size, low=0, high=10_000_000)
        _check_int("seed", self.seed, low=0, high=2**63 - 1 - MAX_REPEATS)
        _check_int("repeats", self.repeats, low=1, high=MAX_REPEATS)
        _check_int("unlabeled", self.unlabeled, low=0, high=10_000_000)
        _check_int("evaluations", self.evaluations, low=1, high=1000)
        _check_int("cpu_threads", self.cpu_threads, low=1, high=256)
        _check_number("event_interval_s", self.event_interval_s, low=0.0, high=3600.0)
        _check_number("max_seconds", self.max_seconds, low=0.0, high=7 * 24 * 3600.0)
        self.check_hidden_class(num_classes or MAX_CLASSES)  # (a user's data: checked again once it is read)
        from kd_core.models.zoo import PRETRAINED, STUDENTS  # deferred: keeps `import kd_core.config` free of torch

        _check_data_fields(self)
        if self.student not in STUDENTS and not is_outside_student(self.student):
            raise ValueError(f"unknown model {self.student!r} for a student; choose one of "
                             f"{', '.join(STUDENTS)}, or {', '.join(STUDENT_SOURCES)}")
        if not isinstance(self.student_pretrained, bool):
            raise ValueError(f"student_pretrained must be true or false; got {self.student_pretrained!r}")
        if self.student_pretrained and not self.student.startswith(PRETRAINED_STUDENT_PREFIXES):
            raise ValueError("student_pretrained needs a timm:NAME or torchvision:NAME student (hf-hub: and "
                             "local-dir: students are always pretrained; zoo ResNets take pretrained)")
        if not isinstance(self.augment, bool):
            raise ValueError(f"augment must be true or false; got {self.augment!r}")
        if (not isinstance(self.methods, tuple) or not self.methods or len(set(self.methods)) != len(self.methods)
                or any(m not in METHODS for m in self.methods)):
            raise ValueError(f"methods must be one or more of {', '.join(METHODS)}, each once; got {self.methods!r}")
        _check_number("dkd_beta", self.dkd_beta, low=0.0, high=100.0)
        _check_number("feature_weight", self.feature_weight, low=0.0, high=1.0)
        if not isinstance(self.unlabeled_hidden, bool):
            raise ValueError(f"unlabeled_hidden must be true or false; got {self.unlabeled_hidden!r}")
        if not isinstance(self.pretrained, bool):
            raise ValueError(f"pretrained must be true or false; got {self.pretrained!r}")
        if self.pretrained and self.student not in PRETRAINED:
            raise ValueError(f"pretrained needs a student with ImageNet weights ({', '.join(PRETRAINED)}); "
                             f"{self.student} has none")
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ValueError("teacher must be a checkpoint path or 'default'")
        return self

    def check_hidden_class(self, num_classes: int) -> None:
        """ValueError unless `hide_class` is None or one of the data's `num_classes` classes (known once a user's
        data is read: kd_core.run.resolve_run asks again then)."""
        if self.hide_class is not None:
            _check_int("hide_class", self.hide_class, low=0, high=num_classes - 1)

    @property
    def seeds(self) -> tuple[int, ...]:
        """The run's seeds: seed, seed + 1, … (`repeats` of them)."""
        return tuple(self.seed + i for i in range(self.repeats))

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)


STUDENT_SOURCES = ("timm:NAME", "hf-hub:ORG/NAME", "local-dir:PATH", "torchvision:NAME")  # as messages name them
STUDENT_PREFIXES = tuple(source.partition(":")[0] + ":" for source in STUDENT_SOURCES)
PRETRAINED_STUDENT_PREFIXES = ("timm:", "torchvision:")  # the ones --student-pretrained applies to


def is_outside_student(name) -> bool:
    """A student from outside the zoo (kd_core.models.students): one of STUDENT_PREFIXES and a name after it."""
    return isinstance(name, str) and name.startswith(STUDENT_PREFIXES) and len(name.partition(":")[2]) > 0


def _check_data_fields(cfg: RunConfig) -> None:
    if not isinstance(cfg.data, str):
        raise ValueError(f"data must be a folder or .zip path, or hf:ORG/NAME; got {cfg.data!r}")
    for name in ("image_column", "label_column"):
        if not isinstance(getattr(cfg, name), str):
            raise ValueError(f"{name} must be a column name; got {getattr(cfg, name)!r}")
        if getattr(cfg, name) and not cfg.data:
            raise ValueError(f"{name} needs data (a Hub dataset, a save_to_disk folder or parquet files)")
    _check_int("image_size", cfg.image_size, low=0, high=MAX_IMAGE_SIZE)
    _check_int("teacher_image_size", cfg.teacher_image_size, low=0, high=MAX_IMAGE_SIZE)
    _check_int("teacher_epochs", cfg.teacher_epochs, low=0, high=MAX_TEACHER_EPOCHS)
    if not isinstance(cfg.teacher_pretrained, bool):
        raise ValueError(f"teacher_pretrained must be true or false; got {cfg.teacher_pretrained!r}")
    if cfg.teacher_pretrained and not cfg.teacher.startswith(("timm:", "torchvision:")):
        raise ValueError("teacher_pretrained needs a timm:NAME or torchvision:NAME teacher")
    if cfg.image_size and not cfg.data:
        raise ValueError("image_size needs data (a folder or zip); the built-in datasets keep their size")


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _check_number(name: str, value, *, low: float, high: float, low_open: bool = False) -> None:
    bracket = "(" if low_open else "["
    allowed = f"{name} must be a number in {bracket}{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{allowed}; got {value!r}")
    if value > high or value < low or (low_open and value == low):
        raise ValueError(f"{allowed}; got {value!r}")


def _check_int(name: str, value, *, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}]; got {value!r}")
