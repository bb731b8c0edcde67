"""Your own data and teacher, measured: a timm teacher trained from scratch on a folder of PNGs, then CE and KD.

5,000 Fashion-MNIST training images are exported as PNGs (one folder per class, no split folders, so
kd_core.data.sources makes the stratified test and validation splits); `--teacher timm:resnet18 --teacher-epochs N
--teacher-image-size 32` trains the teacher at 32×32 while the students see 28×28; then the default CE and KD
students with 5 seeds. Reports each phase's wall time, the teacher's validation accuracy and the verdict, and
the teacher's images per second for logits beside this machine's physical limit (its FLOPs per image against a
measured fp32 matmul peak, same thread count). Writes bench/own-data.json.

    python bench/own_data.py [--images 5000] [--teacher-epochs 8] [--out bench/own-data.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kd_core.config import RunConfig  # noqa: E402
from kd_core.data import sources
from kd_core.data.datasets import load_dataset  # noqa: E402
from kd_core.engine import train
from kd_core.models import checkpoints
from kd_core.models import zoo as models
from kd_core.run import TeacherEpoch, prepare, resolve_run  # noqa: E402
from kd_core.teacher.logits import predict_logits  # noqa: E402


def export(root: Path, count: int) -> None:
    fashion = load_dataset("fashion-mnist")
    for i in range(count):
        label = int(fashion.train_labels[i])
        folder = root / f"{label}-{fashion.classes[label].replace('/', '-')}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fashion.train_images[i, 0].numpy()).save(folder / f"{i:05d}.png")


def matmul_peak(threads: int, n: int = 1024, repeats: int = 20) -> float:
    """Best fp32 GFLOP/s of an n×n matmul over `repeats` tries, on `threads` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def logits_rate(model, dataset, threads: int, repeats: int = 3) -> float:
    """Best images/s of the teacher's logits pass over the training images (inference mode, batches of 1,024)."""
    torch.set_num_threads(threads)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict_logits(model, dataset, dataset.train_images, "cpu")
        best = min(best, time.perf_counter() - start)
    return len(dataset.train_images) / best


def logits_against_peak(path, dataset, rounds: int = 5) -> dict:
    """The teacher's logits images/s and the fp32 matmul peak, measured in alternation (`rounds` times each, the
    best kept), so both see the same load; the limit is peak FLOP/s over the teacher's FLOPs per image."""
    model, _ = checkpoints.load_model(path)
    flops = models.flops_per_sample(model, dataset.image_shape)
    rates, peaks = {1: 0.0, 2: 0.0}, {1: 0.0, 2: 0.0}
    for _ in range(rounds):
        for threads in (1, 2):
            rates[threads] = max(rates[threads], logits_rate(model, dataset, threads, repeats=1))
            peaks[threads] = max(peaks[threads], matmul_peak(threads, repeats=5))
    return {"teacher_flops_per_image": flops, "logits_images_per_s": {str(k): v for k, v in rates.items()},
            "matmul_peak_gflops": {str(k): v for k, v in peaks.items()},
            "logits_limit_images_per_s": {str(k): peaks[k] * 1e9 / flops for k in peaks},
            "logits_share_of_limit": {str(k): rates[k] * flops / (peaks[k] * 1e9) for k in peaks}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the teacher's phases")
    parser.add_argument("--out", default="bench/own-data.json")
    parser.add_argument("--throughput-of", metavar="CKPT",
                        help="only re-measure the logits throughput of this teacher (updates --out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-pngs"
        start = time.perf_counter()
        export(folder, args.images)
        export_s = time.perf_counter() - start
        if args.throughput_of:
            report = json.loads(Path(args.out).read_text())
            report.update(logits_against_peak(args.throughput_of, sources.load_folder(folder)))
            Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
            print(json.dumps(report, indent=1))
            return
        start = time.perf_counter()
        dataset = sources.load_folder(folder)
        decode_s = time.perf_counter() - start
        cfg = RunConfig(data=str(folder), teacher="timm:resnet18", teacher_epochs=args.teacher_epochs,
                        teacher_image_size=32, cpu_threads=args.threads)
        epochs = []
        start = time.perf_counter()
        def report_epoch(event) -> None:
            if isinstance(event, TeacherEpoch):
                epochs.append(event)
                print(f"teacher epoch {event.epoch}: val acc {event.val_acc:.4f}  {event.seconds:.0f}s", flush=True)

        ready = prepare(resolve_run(cfg, dataset), on_event=report_epoch)
        resolved = ready.teacher
        teacher_s = time.perf_counter() - start
        start = time.perf_counter()
        result = train.run(ready)
        students_s = time.perf_counter() - start
        throughput = logits_against_peak(resolved.path, dataset)
    summary = result.summary()
    report = {
        "images": args.images, "splits": dataset.note, "image_shape": list(dataset.image_shape),
        "teacher": "timm:resnet18", "teacher_image_size": 32, "teacher_epochs": args.teacher_epochs,
        "teacher_val_acc": resolved.val_acc, "teacher_val_acc_per_epoch": [e.val_acc for e in epochs],
        "teacher_test_acc": summary["teacher_acc"], "export_s": export_s, "decode_s": decode_s,
        "teacher_train_s": resolved.train_seconds, "teacher_phase_s": teacher_s, "students_s": students_s,
        "students_train_s": summary["seconds"], "ce_acc": summary["ce_acc"], "kd_acc": summary["kd_acc"],
        "ce_acc_std": summary["ce_acc_std"], "kd_acc_std": summary["kd_acc_std"],
        "kd_minus_ce": summary["kd_minus_ce"], "verdict": summary["verdict"], "per_seed": summary["per_seed"],
        **throughput, "torch_threads_teacher": args.threads, "note": "2 shared CPU cores, loaded by other jobs",
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "per_seed"}, indent=1))


if __name__ == "__main__":
    main()
