"""Command line: `python -m kd_core {train-teacher,distill,sweep,study,bench,export,push} …`.

Every subcommand maps its flags onto `RunConfig` (the single home of defaults) and consumes the same
event stream as the app. With `--json` the last stdout line is one JSON object (docs/contracts.md). Bad
arguments, a teacher that does not fit the dataset, or unavailable data exit with code 2 and one
`error: …` line on stderr, no traceback; the teacher is checked before any data is loaded or downloaded.
`distill --save-students DIR` writes each student with a model card beside it (`kd-student.safetensors` +
`kd-student.md`); `export CKPT --out PATH.onnx` writes the ONNX model (uint8 images in, normalisation
built in; see kd_core.publish.export) with its card `PATH.md`, and needs the ONNX packages. `push RUN_DIR
--repo
NAME` publishes a run folder's KD student, its ONNX export and a Hub model card (kd_core.publish.hub).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import torch

from kd_core.cli import runs
from kd_core.cli.options import (
    DEFAULTS,
    add_column_options,
    add_run_options,
    float_list,
    method_list,
    run_config,
)
from kd_core.config import DATASETS, DEVICES
from kd_core.data.datasets import DatasetUnavailable
from kd_core.engine.choose import ALPHAS, TEMPERATURES
from kd_core.engine.roles import METHODS
from kd_core.engine.sweep import SWEEP_METHODS
from kd_core.engine.train import TrainingDiverged, resolve_device
from kd_core.models import checkpoints, weights
from kd_core.models.zoo import PRETRAINED, STUDENTS, TEACHERS
from kd_core.publish import hub
from kd_core.publish.export import ExportUnavailable
from kd_core.teacher.training import MAX_TEACHER_EPOCHS, RECIPE, TeacherRecipe


class CliError(Exception):
    """A user mistake: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):  # every subcommand's --help shows each option's default
        super().__init__(*args, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs)

    def error(self, message: str):  # argparse prints usage + message; we want one line
        raise CliError(message)


def build_parser() -> Parser:
    parser = Parser(prog="python -m kd_core", description="KD Playground: knowledge distillation you can see")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    teacher = commands.add_parser("train-teacher", help="train a teacher and save it as safetensors")
    teacher.add_argument("--dataset", default=RECIPE.dataset, choices=DATASETS,
                         help="dataset to train on (the validation split is held out)")
    teacher.add_argument("--arch", default=RECIPE.arch, type=teacher_arch,
                         help=f"architecture: {', '.join(sorted(TEACHERS) + sorted(STUDENTS))}, timm:NAME or "
                              f"torchvision:NAME")
    teacher.add_argument("--data", default="", metavar="PATH",
                         help="instead of --dataset: an ImageFolder, .zip, hf:ORG/NAME, save_to_disk folder or parquet")
    add_column_options(teacher)
    teacher.add_argument("--image-size", type=int, default=0, metavar="N",
                         help="with --data: resize its images to N×N (0 = their own size)")
    teacher.add_argument("--teacher-image-size", type=int, default=0, metavar="N",
                         help="timm:/torchvision: archs see the images resized to N×N (0 = as given)")
    teacher.add_argument("--epochs", type=int, default=RECIPE.epochs,
                         help=f"passes over the training set, 1..{MAX_TEACHER_EPOCHS}")
    teacher.add_argument("--lr", type=float, default=RECIPE.lr,
                         help="peak OneCycle learning rate (AdamW), in (0, 1]")
    teacher.add_argument("--batch-size", type=int, default=RECIPE.batch_size, help="samples per step")
    teacher.add_argument("--label-smoothing", type=float, default=RECIPE.label_smoothing,
                         help="in [0, 1); 0 keeps the teacher's dark knowledge, smoothing erases class "
                              "similarities")
    teacher.add_argument("--seed", type=int, default=RECIPE.seed,
                         help="seeds the initialisation, the batch order and the augmentation")
    teacher.add_argument("--device", default="auto", choices=DEVICES, help="'auto' picks cuda when available")
    teacher.add_argument("--pretrained", action="store_true",
                         help="start ResNets from torchvision's ImageNet weights (needs the internet)")
    teacher.add_argument("--out", required=True, default=argparse.SUPPRESS,
                         help="checkpoint path (.safetensors); its logits are written beside it")
    teacher.add_argument("--json", action="store_true", help="print the result as JSON (last line)")

    distill = commands.add_parser("distill", help="train a CE student and a KD student side by side")
    add_run_options(distill)
    distill.add_argument("--T", type=runs.number_or_auto, default=None,
                         help=f"temperature > 0, or auto: chosen on the validation split from "
                              f"{', '.join(f'{t:g}' for t in TEMPERATURES)} (the default with --data; "
                              f"else {DEFAULTS.temperature:g})")
    distill.add_argument("--alpha", type=runs.number_or_auto, default=None,
                         help=f"weight on the teacher's soft targets, in [0, 1], or auto: chosen on the validation "
                              f"split from {', '.join(f'{a:g}' for a in ALPHAS)} (the default with --data; "
                              f"else {DEFAULTS.alpha:g})")
    distill.add_argument("--methods", type=method_list, default=DEFAULTS.methods,
                         help=f"distilling students trained beside the CE student, comma-separated: "
                              f"{', '.join(METHODS)} (formulas: kd_core/engine/roles.py)")
    distill.add_argument("--dkd-beta", type=float, default=DEFAULTS.dkd_beta,
                         help="DKD's weight on the non-target-class term (dkd, dkd-std)")
    distill.add_argument("--feature-weight", type=float, default=DEFAULTS.feature_weight,
                         help="weight w on the feature loss, 1 - w on CE (hint, cosine), in [0, 1]")
    distill.add_argument("--augment", action="store_true",
                         help="random crop + flip per batch; the teacher runs on every augmented batch")
    distill.add_argument("--pretrained", action="store_true",
                         help="ResNet students start from ImageNet weights (needs the internet once)")
    distill.add_argument("--save-students", metavar="DIR",
                         help="write ce-student.safetensors and kd-student.safetensors here, "
                             "each with its model card (ce-student.md, kd-student.md)")
    sweep = commands.add_parser("sweep", help="train a T x alpha grid of KD students in one batched pass")
    add_run_options(sweep)
    sweep.add_argument("--T", type=float_list, default=[1.0, 2.0, 4.0, 8.0],
                       help="comma-separated temperatures, e.g. 1,2,4,8")
    sweep.add_argument("--alpha", type=float_list, default=[0.1, 0.5, 0.9],
                       help="comma-separated alphas in [0, 1], e.g. 0.1,0.5,0.9")
    sweep.add_argument("--method", choices=SWEEP_METHODS, default="kd",
                       help="the grid students' method: Hinton KD, or KD on standardised logits")

    add_study_parser(commands)

    bench = commands.add_parser("bench", help="measure training speed against the seed-style loop")
    from kd_core.engine.bench import add_arguments as add_bench_arguments

    add_bench_arguments(bench)

    export = commands.add_parser("export", help="export a checkpoint to ONNX (uint8 images in) + model card")
    export.add_argument("checkpoint", help="a teacher or student checkpoint (.safetensors)")
    export.add_argument("--out", required=True, help="the .onnx file to write; the card goes beside it (.md)")
    export.add_argument("--json", action="store_true")
    add_push_parser(commands)
    return parser


def teacher_arch(text: str) -> str:
    if text in TEACHERS or text in STUDENTS or text.startswith(("timm:", "torchvision:")):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from "
                                     f"{', '.join(sorted(TEACHERS) + sorted(STUDENTS))}, timm:NAME or "
                                     f"torchvision:NAME)")


def cmd_train_teacher_on_data(args: argparse.Namespace) -> dict:
    recipe = TeacherRecipe(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           label_smoothing=args.label_smoothing, seed=args.seed).validate()
    cfg = DEFAULTS.replace(dataset=args.dataset, data=args.data, image_size=args.image_size,
                           image_column=args.image_column, label_column=args.label_column,
                           teacher=args.arch if ":" in args.arch else f"zoo:{args.arch}", teacher_epochs=args.epochs,
                           teacher_image_size=args.teacher_image_size, seed=args.seed, device=args.device,
                           teacher_pretrained=args.pretrained and ":" in args.arch)
    return runs.train_teacher_on_data(cfg, recipe, args.out, args.arch)


# ------------------------------------------------------------------------- study (kd_core.study.trials, Optuna)

def add_study_parser(commands) -> None:
    """`study`: distill's run options fixed for every trial, plus where the study lives and how many trials."""
    study = commands.add_parser("study", help="hyper-parameter study with Optuna: each worker trains its trials "
                                              "as one stack (journal file, SQLite or PostgreSQL storage)")
    add_run_options(study)
    study.add_argument("--storage", required=True,
                       help="a journal file path (several processes, one machine), sqlite:///FILE or "
                            "postgresql://USER:PASSWORD@HOST/DB (many machines)")
    study.add_argument("--name", required=True, help="the study's name in the storage")
    study.add_argument("--trials", type=int, default=16, help="trials this command adds, over all its workers")
    study.add_argument("--workers", type=int, default=1, help="local worker processes")
    study.add_argument("--stack", type=int, default=8,
                       help="trials a worker asks for at once and trains as one stack (one per learning rate)")
    study.add_argument("--space", help="JSON or YAML file replacing ranges of the search space "
                       "(kd_core/study/trials.py "
                                       "SearchSpace: methods, temperature, alpha, dkd_beta, feature_weight, lr)")
    study.add_argument("--summary", action="store_true",
                       help="print the best trials and write history.png and importance.png to --plots")
    study.add_argument("--plots", default="study-plots", help="directory for --summary's plots")
    study.add_argument("--best", action="store_true",
                       help="train the best trial by validation once more beside CE and report its test accuracy")


def cmd_study(args: argparse.Namespace) -> dict:
    try:
        from kd_core.study import trials as study
    except ModuleNotFoundError as error:
        raise ValueError(f"study needs {error.name}: pip install -r requirements-study.txt") from None
    cfg = run_config(args)
    if not (args.best or args.summary):
        runs.check_before_work(cfg)
    return study.command(args, cfg)


# ------------------------------------------------------------------------ push (kd_core.publish.hub)

def add_push_parser(commands) -> None:
    push = commands.add_parser("push", help="publish a run's KD student (safetensors, ONNX, model card) on the Hub")
    push.add_argument("run_dir", help="what `distill --save-students DIR` wrote (ONNX is exported when missing)")
    push.add_argument("--repo", required=True, help="NAME or OWNER/NAME of the model repository (made if new)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--endpoint", default=None, help="another Hub (default: huggingface.co or $HF_ENDPOINT)")
    push.add_argument("--license", default=hub.DEFAULT_LICENSE,
                      help="the card's licence (Fashion-MNIST's and MNIST's is mit)")
    push.add_argument("--json", action="store_true", help="print the result as JSON (last line)")


def cmd_push(args: argparse.Namespace) -> dict:
    published = hub.push(args.run_dir, args.repo, token=hub.machine_token(), private=args.private,
                         endpoint=args.endpoint, license=args.license)
    return published.summary()  # its commit_url is the last line without --json


def cmd_train_teacher(args: argparse.Namespace) -> dict:
    if args.pretrained and ":" not in args.arch:  # the ImageNet weights now, or one line (never a random start)
        if args.data:
            raise ValueError("--pretrained with --data needs a timm:NAME or torchvision:NAME --arch")
        if args.arch in PRETRAINED:
            weights.torchvision_weights(args.arch.split("-")[0])
    if args.data or ":" in args.arch:
        return cmd_train_teacher_on_data(args)
    from kd_core.data.datasets import load_dataset
    from kd_core.teacher.logits import save_logits_beside, teacher_logits
    from kd_core.teacher.training import train_teacher
    from kd_core.views.teacher import teacher_line
    if args.image_column or args.label_column:
        raise ValueError("--image-column and --label-column need --data")

    recipe_options = TeacherRecipe(args.dataset, args.arch, args.epochs, args.lr, args.batch_size,
                                   args.label_smoothing, args.seed).validate()  # before any work
    if not args.out.endswith(".safetensors"):
        raise ValueError("--out must end in .safetensors")
    device = resolve_device(args.device)
    recipe = "python -m kd_core " + shlex.join(args.argv)
    start = time.perf_counter()

    def report(event) -> None:
        print(f"epoch {event.epoch}/{args.epochs}  loss {event.train_loss:.4f}  val acc {event.val_acc:.4f}  "
              f"{event.seconds:.0f}s", file=sys.stderr, flush=True)
        epochs_seen.append(event)

    epochs_seen = []

    model, acc = train_teacher(recipe_options.dataset, recipe_options.arch, epochs=recipe_options.epochs,
                               lr=recipe_options.lr, batch_size=recipe_options.batch_size,
                               label_smoothing=recipe_options.label_smoothing, seed=recipe_options.seed,
                               device=device, pretrained=args.pretrained, on_epoch=report,
                               on_note=lambda note: print(note, file=sys.stderr),
                               on_progress=lambda event: print(teacher_line(event, args.epochs), file=sys.stderr,
                                                               flush=True))
    train_seconds = time.perf_counter() - start
    dataset = load_dataset(args.dataset)
    meta = {"arch": args.arch, "dataset": args.dataset, "in_shape": list(dataset.image_shape),
            "num_classes": dataset.num_classes, "classes": list(dataset.classes),
            "mean": list(dataset.mean), "std": list(dataset.std), "test_acc": round(acc, 4),
            "recipe": recipe, "seed": args.seed, "epochs": args.epochs,
            "train_seconds": round(train_seconds, 1), "device": str(device),
            "val_acc": round(max(e.val_acc for e in epochs_seen), 4),  # the epoch kept: the best on validation
            "val_acc_per_epoch": [round(e.val_acc, 4) for e in epochs_seen],
            "torch": torch.__version__}
    out = checkpoints.save_model(args.out, model, meta)
    # ship the training-set logits beside the checkpoint so the first distillation starts at once
    logits = teacher_logits(out, dataset, device)
    save_logits_beside(out, dataset, logits)
    return {"checkpoint": str(out), "test_acc": acc, "val_acc": meta["val_acc"],
            "train_seconds": train_seconds, "logits_seconds": logits.seconds, "arch": args.arch,
            "dataset": args.dataset}


def cmd_distill(args: argparse.Namespace) -> dict:
    grid = runs.choice_grid(args.T, args.alpha, args.data, args.methods)
    cfg = run_config(args, temperature=runs.number_or(args.T, DEFAULTS.temperature),
                     alpha=runs.number_or(args.alpha, DEFAULTS.alpha), augment=args.augment,
                     pretrained=args.pretrained, methods=args.methods, dkd_beta=args.dkd_beta,
                     feature_weight=args.feature_weight)
    return runs.distill_command(cfg, args.save_students, args.argv, grid)


def cmd_sweep(args: argparse.Namespace) -> dict:
    return runs.sweep_command(run_config(args), args.T, args.alpha, args.method)


def cmd_export(args: argparse.Namespace) -> dict:
    from kd_core.publish.deploy import export_with_card

    if not args.out.endswith(".onnx"):
        raise ValueError("--out must end in .onnx")
    model, meta = checkpoints.load_model(args.checkpoint)
    return export_with_card(model, meta, args.out)


def cmd_bench(args: argparse.Namespace) -> dict:
    from kd_core.engine.bench import run_bench

    return run_bench(args)


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser.parse_args(argv)
        args.argv = argv  # recorded in checkpoints as the recipe that made them
        handler = {"train-teacher": cmd_train_teacher, "distill": cmd_distill, "sweep": cmd_sweep,
                   "bench": cmd_bench, "export": cmd_export, "study": cmd_study,
                   "push": cmd_push}[args.command]
        print_result(handler(args), getattr(args, "json", False))
    except (CliError, ValueError, DatasetUnavailable, TrainingDiverged, ExportUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
