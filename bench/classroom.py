"""Classroom rush: N visitors press Start at once. `.venv/bin/python bench/classroom.py [options]`.

For each candidate setting (`RUNSxTHREADS`: $KD_CONCURRENT_RUNS training runs at once, $KD_TRAINING_THREADS
torch threads each) this starts `python app.py` on 127.0.0.1 in a fresh process, times one visitor alone
(twice: "cold", the app's first run, loads the data), then fires N simultaneous `/distill` calls through
gradio_client in two cases: all with identical settings, and all with distinct seeds. Per case it reports
finished / errors and
p50 / p95 / max, from each client's submit, of the time to the first update (any), to the first curve (the
first update whose accuracy chart has a point: training has begun) and to the result; then each candidate's
distinct-seed p95s as ratios to the first candidate's, measured in the same invocation. Finally it trains the
identical settings once in this process and checks every visitor's accuracies against that solo run.

    .venv/bin/python bench/classroom.py --visitors 30 --candidates 1x1 2x1 1x2 --json bench/classroom.json
    .venv/bin/python bench/classroom.py --visitors 6 --train-size 500 --epochs 1   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.02  # how often a visitor looks for new updates (gradio_client's own iterator spins at 1 ms)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(runs: int, threads: int, log: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` on loopback with the candidate's environment; returns it once the page answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "KD_CONCURRENT_RUNS": str(runs),
           "KD_TRAINING_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return process, url
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the app did not start; see {log}")


def has_points(plot) -> bool:
    """Whether the accuracy chart (a matplotlib figure, first sent with the evaluation before training) is drawn."""
    return isinstance(plot, dict) and plot.get("type") == "matplotlib" and bool(plot.get("plot"))


def visit(client, settings: dict, go: threading.Barrier) -> dict:
    """One visitor: submit at the barrier, note when each update arrives; times from the submit."""
    go.wait()
    submitted = time.perf_counter()
    job = client.submit(**settings, api_name="/distill")
    first = curve = None
    seen = 0
    while True:
        done = job.done()
        outputs = job.outputs()
        now = time.perf_counter() - submitted
        for update in outputs[seen:]:
            first = now if first is None else first
            if curve is None and has_points(update[2]):
                curve = now
        seen = len(outputs)
        if done:
            break
        time.sleep(POLL_S)
    try:
        final = job.result()
    except Exception as error:  # noqa: BLE001 -- an error is a result here: counted and shown
        return {"error": f"{type(error).__name__}: {error}"[:200]}
    table = final[3]["value"]["data"]
    return {"first_update_s": first, "first_curve_s": curve, "result_s": time.perf_counter() - submitted,
            "finished": "done: " in final[0], "ce_acc": mean_of(table[1][1]), "kd_acc": mean_of(table[2][1]),
            "shared": "sharing its results" in final[0] or "replaying its results" in final[0]}


def mean_of(cell: str) -> float:
    """'80.12 ± 0.31' (the results table's mean ± std over seeds) -> 80.12."""
    return float(str(cell).split(" ± ")[0])


def rush(url: str, settings: list[dict]) -> list[dict]:
    """One visitor per settings dict, all submitting at the same instant."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in settings]
    go = threading.Barrier(len(settings))
    with ThreadPoolExecutor(len(settings)) as pool:
        return list(pool.map(lambda pair: visit(pair[0], pair[1], go), zip(clients, settings, strict=True)))


def summarise(visits: list[dict]) -> dict:
    ok = [v for v in visits if "error" not in v]
    summary = {"visitors": len(visits), "finished": sum(v["finished"] for v in ok),
               "errors": len(visits) - len(ok), "shared": sum(v["shared"] for v in ok),
               "error_messages": sorted({v["error"] for v in visits if "error" in v})}
    for name in ("first_update_s", "first_curve_s", "result_s"):
        values = [v[name] for v in ok if v[name] is not None]
        summary[name] = ({"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                          "max": max(values)} if values else None)
    return summary


def run_candidate(runs: int, threads: int, args: argparse.Namespace, logs: Path) -> dict:
    base = {key: value for key, value in (("epochs", args.epochs), ("train_size", args.train_size))
            if value is not None}  # the rest: the app's defaults
    process, url = start_app(runs, threads, logs / f"app-{runs}x{threads}.log")
    try:
        cold = rush(url, [{**base, "seed": 10_000}])  # the app's first run loads the data and the teacher
        alone = rush(url, [{**base, "seed": 10_001}])
        identical = rush(url, [{**base, "seed": args.seed}] * args.visitors)
        distinct = rush(url, [{**base, "seed": 20_000 + i} for i in range(args.visitors)])
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"candidate": f"{runs}x{threads}", "concurrent_runs": runs, "threads_per_run": threads,
            **{case: summarise(visits) for case, visits in
               (("cold", cold), ("alone", alone), ("identical", identical), ("distinct", distinct))},
            "identical_accuracies": sorted({(v["ce_acc"], v["kd_acc"]) for v in identical
                                            if "error" not in v})}


def solo_accuracies(args: argparse.Namespace) -> tuple[float, float]:
    """The identical settings trained once in this process, as the app's table rounds them."""
    sys.path.insert(0, str(ROOT))
    from kd_core import settings
    from kd_core.config import RunConfig
    from kd_core.train import run

    defaults = RunConfig()
    cfg = settings.make_config(temperature=defaults.temperature, alpha=defaults.alpha,
                               epochs=defaults.epochs if args.epochs is None else args.epochs, lr=defaults.lr,
                               student=defaults.student, hide_class="none", seed=args.seed,
                               train_size=defaults.train_size if args.train_size is None else args.train_size)
    result = run(cfg)
    return round(100 * result.ce_acc, 2), round(100 * result.kd_acc, 2)


def seconds(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['max']:.1f} s"


def report(results: list[dict], solo: tuple[float, float]) -> str:
    lines = ["| candidate (runs × threads) | case | finished | errors | shared | first update p50/p95/max | "
             "first curve p50/p95/max | result p50/p95/max |", "|---|---|---:|---:|---:|---|---|---|"]
    for result in results:
        for case in ("cold", "alone", "identical", "distinct"):
            s = result[case]
            lines.append(f"| {result['candidate']} | {case} | {s['finished']}/{s['visitors']} | "
                         f"{s['errors']} | {s['shared']} | {seconds(s['first_update_s'])} | "
                         f"{seconds(s['first_curve_s'])} | {seconds(s['result_s'])} |")
    base = results[0]["distinct"]
    lines += ["", f"distinct seeds, p95 as a ratio to {results[0]['candidate']} (lower is better):"]
    for result in results:
        s = result["distinct"]
        ratios = [f"{name} {s[name]['p95'] / base[name]['p95']:.2f}" for name in
                  ("first_update_s", "first_curve_s", "result_s") if s[name] and base[name]]
        lines.append(f"- {result['candidate']}: " + ", ".join(ratios))
    lines.append("")
    for result in results:
        equal = result["identical_accuracies"] == [solo]
        lines.append(f"- {result['candidate']}: identical visitors' (CE, KD) accuracies "
                     f"{result['identical_accuracies']}; solo run {solo}: "
                     f"{'equal' if equal else 'DIFFERENT'}")
    for result in results:
        for case in ("identical", "distinct"):
            for message in result[case]["error_messages"]:
                lines.append(f"- error ({result['candidate']}, {case}): {message}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--candidates", nargs="+", default=["1x1", "2x1", "1x2"],
                        help="RUNSxTHREADS: $KD_CONCURRENT_RUNS x $KD_TRAINING_THREADS; the first is the "
                             "baseline of the ratios")
    parser.add_argument("--epochs", type=int, help="default: the app's")
    parser.add_argument("--train-size", type=int, help="default: the app's")
    parser.add_argument("--seed", type=int, default=0, help="the identical visitors' seed")
    parser.add_argument("--json", type=Path, help="also write every visit's figures here")
    args = parser.parse_args(argv)
    candidates = [tuple(int(part) for part in name.split("x")) for name in args.candidates]
    logs = Path(tempfile.mkdtemp(prefix="kd-classroom-"))
    started = time.perf_counter()
    results = [run_candidate(runs, threads, args, logs) for runs, threads in candidates]
    solo = solo_accuracies(args)
    print(f"{args.visitors} visitors, epochs {args.epochs or 'default'}, train_size "
          f"{'default' if args.train_size is None else args.train_size or 'all'}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{time.perf_counter() - started:.0f} s in all; app logs in {logs}\n")
    print(report(results, solo))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "solo": solo, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
