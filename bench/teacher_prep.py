"""Teacher preparation before and after (issue 33, item 5): the logits pass against the machine's FLOP limit, and
seconds per epoch of a teacher's training, the old code against the new, in one process, alternating.

"Before" is kd_core/teacher/logits.py and training.py as they were at commit BEFORE (read with `git show`, loaded
as modules; the old training loop calls the old logits pass); "after" is this checkout. The teacher is the one
of bench/own_data.py: `timm:resnet18` from scratch behind `Preprocessed`, which resizes the 28×28 Fashion-MNIST
images to 32×32 (weights at their random start: the speed does not depend on them). The limit is the best fp32
2048² matmul GFLOP/s, measured between the passes on the same thread count, over the teacher's FLOPs per image
(`models.flops_per_sample`, convolutions and Linear layers). Each round runs before, after and the matmul once;
the best of the rounds is kept and the after/before ratio of every round is listed. Writes bench/teacher-prep.json.

    python bench/teacher_prep.py [--rounds 5] [--images 4000] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kd_core.data.datasets import Dataset, load_dataset  # noqa: E402
from kd_core.engine.bench import matmul_gflops  # noqa: E402
from kd_core.models import external  # noqa: E402
from kd_core.models import zoo as models  # noqa: E402
from kd_core.teacher import logits as new_logits  # noqa: E402
from kd_core.teacher import training as new_training  # noqa: E402

BEFORE = "a0ad971"  # the branch's start: main before issue 33


def old_module(path: str, name: str, tmp: Path):
    source = subprocess.run(["git", "show", f"{BEFORE}:{path}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    file = tmp / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def teacher(dataset: Dataset) -> torch.nn.Module:
    torch.manual_seed(0)
    net = external.network("timm:resnet18", dataset.image_shape[0], dataset.num_classes)
    return external.Preprocessed(net, dataset.image_shape[0]).set_preprocessing(dataset.mean, dataset.std,
                                                                                 dataset.mean, dataset.std, 32)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=4000, help="training images (a fifth more for the test split)")
    parser.add_argument("--epochs", type=int, default=2, help="teacher epochs per timed training")
    parser.add_argument("--training-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="bench/teacher-prep.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fashion = load_dataset("fashion-mnist")
    n, m = args.images, args.images // 4
    data = Dataset("fashion-subset", fashion.train_images[:n], fashion.train_labels[:n], fashion.test_images[:m],
                   fashion.test_labels[:m], fashion.classes, fashion.mean, fashion.std, source="bench")
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        old_logits = old_module("kd_core/teacher/logits.py", "old_logits", Path(tmp))
        old_training = old_module("kd_core/teacher/training.py", "old_training", Path(tmp))
        old_training.predict_logits = old_logits.predict_logits  # the old loop with the old logits pass
        model = teacher(data)
        flops = models.flops_per_sample(model, data.image_shape)
        images = data.train_images
        passes = {"before": lambda: old_logits.predict_logits(model, data, images, "cpu"),
                  "after": lambda: new_logits.predict_logits(model, data, images, "cpu")}
        rates, peaks = {"before": [], "after": []}, []
        passes["after"]()  # warm-up (oneDNN's first call)
        for _ in range(args.rounds):
            for name, run in passes.items():
                rates[name].append(len(images) / timed(run))
            peaks.append(matmul_gflops(args.threads))
        load.append(os.getloadavg()[0])
        fits = {"before": lambda: old_training.fit_teacher(teacher(data), data, epochs=args.epochs, lr=3e-3,
                                                           batch_size=128, flips=True),
                "after": lambda: new_training.fit_teacher(teacher(data), data, epochs=args.epochs, lr=3e-3,
                                                          batch_size=128, flips=True)}
        epoch_s = {"before": [], "after": []}
        for _ in range(args.training_rounds):
            for name, run in fits.items():
                epoch_s[name].append(timed(run) / args.epochs)
        load.append(os.getloadavg()[0])
    peak = max(peaks)
    limit = peak * 1e9 / flops
    report = {
        "threads": args.threads, "images": n, "teacher": "timm:resnet18 at 32×32 (Preprocessed, from 28×28)",
        "teacher_mflops_per_image": flops / 1e6, "matmul_peak_gflops": peak, "matmul_gflops_per_round": peaks,
        "limit_images_per_s": limit,
        "logits_images_per_s": {k: max(v) for k, v in rates.items()},
        "logits_images_per_s_per_round": rates,
        "logits_share_of_limit": {k: max(v) / limit for k, v in rates.items()},
        "logits_ratio_per_round": [a / b for a, b in zip(rates["after"], rates["before"], strict=True)],
        "train_epochs": args.epochs, "train_images": len(data.fit_index),
        "train_seconds_per_epoch": {k: min(v) for k, v in epoch_s.items()},
        "train_seconds_per_epoch_per_round": epoch_s,
        "train_ratio_per_round": [a / b for a, b in zip(epoch_s["after"], epoch_s["before"], strict=True)],
        "load_average_1min": load, "before_commit": BEFORE,
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
