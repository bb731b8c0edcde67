"""The app's "Your data" panel: its choices as a RunConfig within the public Space's limits, the teacher's
preparation as a job for a training slot (its events the run's own vocabulary), and predictions with the run's own
classes.

The data is an uploaded .zip of an ImageFolder (kd_core.data.sources) or a Hub dataset id (kd_core.data.hub: the Hub
only, read anonymously; a path on the server is never read on a visitor's word), under `sources.SPACE_LIMITS`; the
teacher is
trained on it (an architecture from TEACHER_ARCHS, at most MAX_APP_TEACHER_EPOCHS epochs), the shipped
Fashion-MNIST teacher, or a timm model on the Hub (online only; offline it fails at once). Teacher training
is capped like a run (`check_teacher_budget`): a CPU Space cannot be held for an hour by one visitor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image

from kd_core.config import CPU_MAX_TFLOP, CPU_TFLOP_PER_S, RunConfig
from kd_core.data import hub, sources
from kd_core.data.datasets import Dataset
from kd_core.engine import choose
from kd_core.engine.budget import check_cpu_budget
from kd_core.engine.events import Queued, StackEvaluated, StackFinished, StackStarted
from kd_core.engine.loop import resolve_device
from kd_core.models import external, predict
from kd_core.models import zoo as models
from kd_core.run import Run, prepare, resolve_run
from kd_core.serve.stack_pool import queued_status

TEACHER_KINDS = ("Train one on my data", "Shipped teacher (Fashion-MNIST, 28×28 grey, 10 classes)",
                 "Hub id (a timm model)")
TEACHER_ARCHS = ("zoo:cnn-teacher", "zoo:cnn-tiny", "timm:resnet10t", "timm:resnet18", "timm:mobilenetv3_small_050")
STUDENTS = models.SMALL_STUDENTS
MAX_APP_TEACHER_EPOCHS = 10
MAX_APP_IMAGE_SIZE = 64
MAX_APP_EPOCHS = 20
DEFAULT_TEACHER_EPOCHS, DEFAULT_EPOCHS, DEFAULT_REPEATS = 5, 10, 3  # the tab's starting values
LIMITS_TEXT = (f"Limits on this Space: a .zip of at most {sources.SPACE_LIMITS.upload_bytes // 2**20} MB "
               f"({sources.SPACE_LIMITS.unpacked_bytes // 2**20} MB unpacked), {sources.SPACE_LIMITS.images:,} "
               f"images, {sources.SPACE_LIMITS.classes} classes, {sources.SPACE_LIMITS.pixels:,} pixels per image "
               f"(a Hub dataset: the same, its download at most {sources.SPACE_LIMITS.upload_bytes // 2**20} MB); "
               f"images resized to at most {MAX_APP_IMAGE_SIZE}×{MAX_APP_IMAGE_SIZE}; teacher training at most "
               f"{MAX_APP_TEACHER_EPOCHS} epochs and about {CPU_MAX_TFLOP:g} TFLOP on a CPU.")


def app_config(upload: str | None, kind: str, arch: str, hub_id: str, teacher_epochs: int, image_size: int,
               teacher_image_size: int, student: str, epochs: int, repeats: int, dataset_id: str = "",
               image_column: str = "", label_column: str = "") -> Run:
    """The panel's values -> the resolved run (its teacher still to prepare: `preparation`), or one ValueError
    saying what to change."""
    data = data_source(upload, dataset_id)
    if kind not in TEACHER_KINDS:
        raise ValueError(f"choose a teacher: {', '.join(TEACHER_KINDS)}")
    if student not in STUDENTS:
        raise ValueError(f"choose a student from {', '.join(STUDENTS)}")
    if not 1 <= int(epochs) <= MAX_APP_EPOCHS:
        raise ValueError(f"epochs must be in [1, {MAX_APP_EPOCHS}] here")
    for name, value in (("image size", image_size), ("teacher image size", teacher_image_size)):
        if not 0 <= int(value) <= MAX_APP_IMAGE_SIZE:
            raise ValueError(f"{name} must be in [0, {MAX_APP_IMAGE_SIZE}] here (0: the images' own)")
    trains = kind == TEACHER_KINDS[0]
    if trains and arch not in TEACHER_ARCHS:
        raise ValueError(f"choose an architecture from {', '.join(TEACHER_ARCHS)}")
    if trains and not 1 <= int(teacher_epochs) <= MAX_APP_TEACHER_EPOCHS:
        raise ValueError(f"teacher epochs must be in [1, {MAX_APP_TEACHER_EPOCHS}] here")
    hub_id = (hub_id or "").strip().removeprefix("hf-hub:")
    if kind == TEACHER_KINDS[2] and hub_id.count("/") != 1:
        raise ValueError("a Hub id looks like ORG/NAME, e.g. timm/resnet18.a1_in1k")
    teacher = {TEACHER_KINDS[0]: arch, TEACHER_KINDS[1]: "default", TEACHER_KINDS[2]: f"hf-hub:{hub_id}"}[kind]
    image_size = int(image_size) or (0 if trains or kind == TEACHER_KINDS[2] else 28)
    cfg = RunConfig(data=data, image_column=(image_column or "").strip(),
                    label_column=(label_column or "").strip(), image_size=image_size, teacher=teacher,
                    teacher_epochs=int(teacher_epochs) if trains else 0, teacher_image_size=int(teacher_image_size),
                    student=student, epochs=int(epochs), repeats=int(repeats), train_size=0).validate()
    dataset = sources.load_folder(cfg.data, cfg.image_size, sources.SPACE_LIMITS, image_column=cfg.image_column,
                                  label_column=cfg.label_column)
    if max(dataset.image_shape[1:]) > MAX_APP_IMAGE_SIZE:
        raise ValueError(f"the images are {dataset.image_shape[2]}×{dataset.image_shape[1]}; set an image size of "
                         f"at most {MAX_APP_IMAGE_SIZE} to resize them")
    if trains:
        check_teacher_budget(cfg, dataset)
    return resolve_run(cfg, dataset)


def data_source(upload: str | None, dataset_id: str) -> str:
    """The run's `data`: the uploaded zip, or `hf:ORG/NAME[:CONFIG]` from the Hub dataset box (one of them)."""
    dataset_id = (dataset_id or "").strip()
    if upload and dataset_id:
        raise ValueError("choose one source: remove the zip, or clear the Hub dataset box")
    if dataset_id:
        repo = dataset_id.removeprefix(hub.HUB_PREFIX)
        if not hub.HUB_ID.fullmatch(repo.partition(":")[0]):
            raise ValueError(f"a Hub dataset id looks like ORG/NAME or ORG/NAME:CONFIG, e.g. uoft-cs/cifar10; "
                             f"got {dataset_id!r}")
        return hub.HUB_PREFIX + repo
    if not upload or not str(upload).lower().endswith(".zip"):
        raise ValueError("upload a .zip of your images first: one folder per class (optionally inside "
                         "train/, val/ and test/ folders), or give a Hub dataset id")
    return str(upload)


def check_teacher_budget(cfg: RunConfig, dataset: Dataset, max_tflop: float = CPU_MAX_TFLOP) -> None:
    """ValueError when training the teacher would take more than `max_tflop` TFLOP (3 × forward per image)."""
    if torch.cuda.is_available():
        return
    arch = cfg.teacher.removeprefix("zoo:")
    net = models.build(arch, dataset.image_shape, dataset.num_classes)
    size = cfg.teacher_image_size or dataset.image_shape[-1]
    shape = (dataset.image_shape[0], size, size) if external.is_external(arch) else dataset.image_shape
    flops = models.flops_per_sample(net, shape) * 3 * len(dataset.fit_index) * cfg.teacher_epochs / 1e12
    if flops > max_tflop:
        raise ValueError(f"training {cfg.teacher} for {cfg.teacher_epochs} epochs on these images needs about "
                         f"{flops:,.1f} TFLOP, at least {flops / CPU_TFLOP_PER_S / 60:,.0f} minutes on this CPU, "
                         f"over the limit of {max_tflop:g} TFLOP; pick a smaller architecture, fewer epochs or a "
                         f"smaller image size")


def preparation(run: Run) -> Callable[[Callable[[object], None], Callable[[], bool]], Run]:
    """The teacher's preparation as a job for the stack pool's slot (`StackPool.job`): it emits a `TeacherEpoch`
    per training epoch and `LogitsProgress` while the logits are computed, stops at the next batch once nobody
    reads, and returns the prepared run."""
    device = resolve_device(run.config.device)
    return lambda emit, should_stop: prepare(run, device, on_event=emit, should_stop=should_stop)


def choosing(run: Run, train: Callable[..., Iterator]) -> Iterator[str | dict]:
    """T and α chosen on the validation split (kd_core.engine.choose) before the run: a status line per event of
    the grid's stack (`train(run, roles)`: the app's stack pool), then the choice, a dict. Closing it stops the
    grid's training."""
    temperatures, alphas = choose.grid(None, None)
    check_cpu_budget(run, students_per_seed=1 + len(temperatures) * len(alphas))  # ValueError: too big for a CPU
    cells = len(temperatures) * len(alphas)
    what = (f"choosing T and α on your validation split: {cells} KD students (T ∈ "
            f"{{{', '.join(f'{t:g}' for t in temperatures)}}} × α ∈ {{{', '.join(f'{a:g}' for a in alphas)}}}) "
            f"and CE per seed, trained as one stack")
    events = choose.choosing(run, temperatures, alphas, train=train)
    try:
        yield what + "…"
        for event in events:
            if isinstance(event, Queued):
                yield queued_status(event)
            elif isinstance(event, StackStarted):
                yield f"{what} · {event.total_steps:,} steps on {event.device}"
            elif isinstance(event, StackEvaluated) and event.step:
                best = max(event.mean(role) for role in range(1, 1 + cells))
                yield (f"{what} · epoch {event.progress:.1f}/{run.config.epochs}, validation: CE "
                       f"{100 * event.mean(0):.1f}%, best KD student {100 * best:.1f}%")
            elif isinstance(event, StackFinished):
                yield {**choose.choice(event.result, temperatures, alphas), "seconds": event.result.seconds}
                return
    finally:
        events.close()


def predict_own(picture: Image.Image, prepared: Run | None, students, k: int = 3) -> dict[str, dict]:
    """{"teacher" | "ce" | "kd": top-k {class: probability}} for `picture`, resized to the run's input, with
    the run's classes."""
    if prepared is None or students is None:
        raise ValueError("train on your data first (Start), then predict")
    teacher = predict.load_classifier(prepared.config.teacher, "teacher")
    channels, height, width = teacher.in_shape
    image = picture.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = torch.from_numpy(np.asarray(image).copy())
    pixels = pixels.unsqueeze(0) if channels == 1 else pixels.permute(2, 0, 1)
    classifiers = {"teacher": teacher, "ce": students.ce, "kd": students.kd}
    return predict.predict_all(classifiers, pixels.contiguous(), k)
