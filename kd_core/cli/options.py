"""The flags that several subcommands share (`distill`, `sweep`, `study`, `train-teacher`): the run options, your
data's and the teacher's, and how they map onto `RunConfig` (kd_core/config.py, the single home of defaults)."""

from __future__ import annotations

import argparse

from kd_core.config import DATASETS, DEVICES, MAX_EPOCHS, MAX_REPEATS, RunConfig, is_outside_student
from kd_core.models.zoo import STUDENTS

DEFAULTS = RunConfig()


def method_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Flags shared by distill and sweep, defaults taken from RunConfig."""
    parser.add_argument("--dataset", default=DEFAULTS.dataset, choices=DATASETS, help="dataset to train on")
    parser.add_argument("--teacher", default=DEFAULTS.teacher,
                        help="teacher checkpoint path, or 'default' (shipped in checkpoints/; made for --dataset), "
                             "or timm:NAME, hf-hub:ORG/NAME, local-dir:PATH, torchvision:NAME, zoo:NAME")
    parser.add_argument("--student", default=DEFAULTS.student, type=student_name,
                        help=f"architecture of both students: {', '.join(sorted(STUDENTS))}, or timm:NAME, "
                             f"torchvision:NAME (from scratch, or pretrained with --student-pretrained), "
                             f"hf-hub:ORG/NAME, local-dir:PATH (a timm save_for_hf folder; pretrained)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs,
                        help=f"passes over the training set, 1..{MAX_EPOCHS}")
    parser.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate, in (0, 1]")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                        help="samples per step; both students see the same batch")
    parser.add_argument("--train-size", type=int, default=DEFAULTS.train_size,
                        help="students' training samples (0 = all); class-stratified subset")
    parser.add_argument("--hide-class", type=int, default=DEFAULTS.hide_class,
                        help="class index removed from the students' training set")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed,
                        help="seed of the first repeat (subset, initial weights, batch order)")
    parser.add_argument("--repeats", type=int, default=DEFAULTS.repeats,
                        help=f"seeds trained together (seed, seed+1, …), 1..{MAX_REPEATS}; results give their "
                             f"mean, spread and the paired difference KD − CE with a 95%% interval")
    parser.add_argument("--unlabeled", type=int, default=DEFAULTS.unlabeled,
                        help="transfer set: this many more training images that only the KD students learn "
                             "from, through the teacher's soft targets (their labels are never used); 0 = off")
    parser.add_argument("--unlabeled-hidden", action="store_true",
                        help="with --hide-class: let the hidden class's images be among the unlabelled ones")
    parser.add_argument("--device", default=DEFAULTS.device, choices=DEVICES,
                        help="'auto' picks cuda when available")
    parser.add_argument("--threads", type=int, default=DEFAULTS.cpu_threads,
                        help="torch threads for CPU training (more help big students on idle machines)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (last line)")
    add_data_options(parser)


def run_config(args: argparse.Namespace, **extra) -> RunConfig:
    return DEFAULTS.replace(**data_fields(args),
        dataset=args.dataset, teacher=args.teacher, student=args.student, epochs=args.epochs,
        lr=args.lr, batch_size=args.batch_size, train_size=args.train_size,
        hide_class=args.hide_class, seed=args.seed, repeats=args.repeats, unlabeled=args.unlabeled,
        unlabeled_hidden=args.unlabeled_hidden, device=args.device, cpu_threads=args.threads,
        **extra)  # validated once, by kd_core.run.resolve_run


# ------------------------------------------------------------------ your own data and teacher (sources, teachers)

def student_name(text: str) -> str:
    if text in STUDENTS or is_outside_student(text):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(sorted(STUDENTS))}, "
                                     f"or timm:NAME, hf-hub:ORG/NAME, local-dir:PATH, torchvision:NAME)")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--data, --image-size and the teacher's options (distill, sweep; reusable by any run-like command)."""
    parser.add_argument("--data", default=DEFAULTS.data, metavar="PATH",
                        help="an ImageFolder (a folder per class; optional train/ val/ test/), a .zip of one, "
                             "hf:ORG/NAME[:CONFIG], a save_to_disk folder or parquet files; instead of --dataset")
    add_column_options(parser)
    parser.add_argument("--image-size", type=int, default=DEFAULTS.image_size, metavar="N",
                        help="with --data: resize the images to N×N for the students (0 = their own size)")
    parser.add_argument("--teacher-image-size", type=int, default=DEFAULTS.teacher_image_size, metavar="N",
                        help="the teacher's input side (0 = its pretrained config's, else the students')")
    parser.add_argument("--teacher-pretrained", action="store_true",
                        help="timm:/torchvision: teachers start from their pretrained weights (online)")
    parser.add_argument("--teacher-epochs", type=int, default=DEFAULTS.teacher_epochs, metavar="N",
                        help="first train the teacher N epochs on the training split (its head replaced to "
                             "the data's classes); 0 = use it as it is")
    parser.add_argument("--student-pretrained", action="store_true",
                        help="timm:/torchvision: students start from their pretrained weights (online), a new head "
                             "for the data's classes; both students start from the same weights")


def add_column_options(parser: argparse.ArgumentParser) -> None:
    for role, found in (("image", "the one Image feature"), ("label", "the one ClassLabel, else label/labels")):
        parser.add_argument(f"--{role}-column", default="", metavar="NAME",
                            help=f"with --data hf:…, a save_to_disk folder or parquet files: the {role} column "
                                 f"(default: %(default)r, {found})")


def data_fields(args: argparse.Namespace) -> dict:
    """The RunConfig fields of `add_data_options`."""
    return {"data": args.data, "image_column": args.image_column, "label_column": args.label_column,
            "image_size": args.image_size, "teacher_image_size": args.teacher_image_size,
            "teacher_pretrained": args.teacher_pretrained, "teacher_epochs": args.teacher_epochs,
            "student_pretrained": args.student_pretrained}
