"""Classroom rush: N visitors press Start at once. `.venv/bin/python bench/classroom.py [options]`.

Starts `python app.py` on 127.0.0.1 in a fresh process and fires simultaneous `/distill` calls through
gradio_client, each load with fresh seeds (nothing is replayed). Each visitor first opens the page as a
browser would (the page's load event, which makes its session on the server), then all press Start together
(like a browser, a client does not download the run's files unless asked):
- cold: one visitor on the fresh server (its first run loads the data and the teacher);
- alone: one visitor on the warm server (the solo time the identical load is held against);
- identical: N visitors with the same settings;
- temperatures: N visitors with T = 0.5, 1.0, …, 0.5·N and one seed;
- seeds: N visitors with seeds s+1 … s+N.
During each rush one more visitor starts a run and presses Stop (a cancel) after its first update: the time
until that cancel has ended its run is the "stop" figure. Per load it reports finished / errors, p50 / p95 /
max from each client's submit of the time to the first curve (the first update whose loss chart carries
data, not a queue notice) and to the result, and the server's CPU-seconds per visitor (its process's user +
system time over the load). Finally it trains `--check` visitors of each load once in this process and
compares their accuracies with what the app told them.

    .venv/bin/python bench/classroom.py --visitors 30 --json bench/classroom-wave3.json
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


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    """`python app.py` on loopback with the app's own settings; returns it once the page answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
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


RECEIVED: dict[str, int] = {}  # session hash -> bytes its server-sent event streams carried


def count_streams() -> None:
    """Count, per gradio_client session, the bytes of its event streams (httpx.Client.stream, wrapped once)."""
    import contextlib

    import httpx

    original = httpx.Client.stream
    if getattr(original, "counted", False):
        return

    @contextlib.contextmanager
    def stream(self, method, url, *args, **kwargs):
        with original(self, method, url, *args, **kwargs) as response:
            session = (kwargs.get("params") or {}).get("session_hash")
            if session:
                chunks = response.iter_bytes

                def counted(*a, **k):
                    for chunk in chunks(*a, **k):
                        RECEIVED[session] = RECEIVED.get(session, 0) + len(chunk)
                        yield chunk

                response.iter_bytes = counted
            yield response

    stream.counted = True
    httpx.Client.stream = stream


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def has_curve(plot) -> bool:
    """Whether a loss-chart update carries a loss (the frame's placeholder rows, one per student, carry none)."""
    if not isinstance(plot, dict) or "data" not in plot.get("value", plot):
        return False
    value = plot.get("value", plot)
    column = value["columns"].index("loss")
    return any(row[column] is not None and row[column] == row[column] for row in value["data"])


def open_page(client) -> None:
    """What a browser does when the page opens: its load events (here the Predict tab's, with no picture),
    which make the visitor's session on the server before any Start."""
    client.predict(None, api_name="/predict")


def visit(client, settings: dict, go: threading.Barrier) -> dict:
    """One visitor: open the page, submit at the barrier, note when each update arrives; times from the
    submit."""
    open_page(client)
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
            if curve is None and has_curve(update[1]):
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
            "updates": seen, "received_bytes": RECEIVED.get(client.session_hash, 0),
            "final_loss_bytes": len(json.dumps(final[1])),
            "finished": "done: " in final[0], "ce_acc": mean_of(table[1][1]), "kd_acc": mean_of(table[2][1]),
            "shared": "sharing its results" in final[0] or "replaying its results" in final[0]}


def mean_of(cell: str) -> float:
    """'80.12 ± 0.31' (the results table's mean ± std over seeds) -> 80.12."""
    return float(str(cell).split(" ± ")[0])


def stop_probe(client, settings: dict, go: threading.Barrier) -> dict:
    """A visitor who presses Stop after the first update: seconds from the cancel until the run has ended."""
    open_page(client)
    go.wait()
    job = client.submit(**settings, api_name="/distill")
    deadline = time.monotonic() + 120
    while not job.outputs() and not job.done() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    pressed = time.perf_counter()
    job.cancel()
    while not job.done() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return {"stop_s": time.perf_counter() - pressed, "ended": job.done()}


def rush(url: str, settings: list[dict], stop: dict | None = None) -> tuple[list[dict], dict | None]:
    """One visitor per settings dict, all submitting at the same instant; with `stop`, one more who presses
    Stop (its result second)."""
    from gradio_client import Client

    count_streams()
    clients = [Client(url, verbose=False, download_files=False) for _ in range(len(settings) + (stop is not None))]
    go = threading.Barrier(len(clients))
    with ThreadPoolExecutor(len(clients)) as pool:
        probe = pool.submit(stop_probe, clients[-1], stop, go) if stop is not None else None
        visits = list(pool.map(lambda pair: visit(pair[0], pair[1], go), zip(clients, settings, strict=False)))
        return visits, probe.result() if probe else None


def summarise(visits: list[dict]) -> dict:
    ok = [v for v in visits if "error" not in v]
    summary = {"visitors": len(visits), "finished": sum(v["finished"] for v in ok),
               "errors": len(visits) - len(ok), "shared": sum(v["shared"] for v in ok),
               "error_messages": sorted({v["error"] for v in visits if "error" in v})}
    if ok:  # what one visitor's stream carried (Gradio sends each update as a diff of the previous one)
        summary["stream_kb_per_visitor"] = float(np.median([v["received_bytes"] for v in ok])) / 1e3
        summary["final_loss_kb"] = float(np.median([v["final_loss_bytes"] for v in ok])) / 1e3
        summary["updates_per_visitor"] = float(np.median([v["updates"] for v in ok]))
    for name in ("first_update_s", "first_curve_s", "result_s"):
        values = [v[name] for v in ok if v[name] is not None]
        summary[name] = ({"p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95)),
                          "max": max(values)} if values else None)
    return summary


def loads(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Each load's visitors' settings (the rest: the app's defaults), every load on seeds of its own."""
    base = {key: value for key, value in (("epochs", args.epochs), ("train_size", args.train_size))
            if value is not None}
    s, n = args.seed, args.visitors
    return {"cold": [{**base, "seed": s}], "alone": [{**base, "seed": s + 1}],
            "identical": [{**base, "seed": s + 2}] * n,
            "temperatures": [{**base, "seed": s + 3, "temperature": 0.5 * (i + 1)} for i in range(n)],
            "seeds": [{**base, "seed": s + 10 + i} for i in range(n)]}


def run_loads(args: argparse.Namespace, logs: Path) -> dict:
    process, url = start_app(logs / "app.log")
    results = {}
    wanted = {"cold", *args.loads.split(",")}
    try:
        for name, settings in loads(args).items():
            if name not in wanted:
                continue
            probe = {**settings[0], "seed": args.seed + 1000 + len(results)} if len(settings) > 1 else None
            before, clients, started = cpu_seconds(process.pid), time.process_time(), time.perf_counter()
            visits, stop = rush(url, settings, probe)
            summary = summarise(visits)
            summary.update(wall_s=time.perf_counter() - started, stop=stop,
                           cpu_s_per_visitor=(cpu_seconds(process.pid) - before) / len(settings),
                           client_cpu_s=time.process_time() - clients)  # the visitors' side, on the same cores
            results[name] = {"summary": summary, "visits": visits, "settings": settings}
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def solo_accuracies(settings: dict) -> tuple[float, float]:
    """One visitor's settings trained alone in this process, as the app's table rounds them."""
    sys.path.insert(0, str(ROOT))
    from kd_core.config import RunConfig
    from kd_core.engine.train import run
    from kd_core.serve import settings as app_settings

    defaults = RunConfig()
    cfg = app_settings.make_config(**{"temperature": defaults.temperature, "alpha": defaults.alpha,
                                      "epochs": defaults.epochs, "lr": defaults.lr, "student": defaults.student,
                                      "hide_class": "none", "train_size": defaults.train_size, **settings})
    result = run(cfg)
    return round(100 * result.ce_acc, 2), round(100 * result.kd_acc, 2)


def check_against_solo(results: dict, per_load: int) -> list[str]:
    """Lines saying whether the first `per_load` visitors of each load got their solo run's accuracies."""
    lines = []
    for name, load in results.items():
        ok = [(v, s) for v, s in zip(load["visits"], load["settings"], strict=True) if "error" not in v]
        checked = [(v, solo_accuracies(s)) for v, s in ok[:per_load]]
        equal = sum((v["ce_acc"], v["kd_acc"]) == solo for v, solo in checked)
        lines.append(f"- {name}: {equal} of {len(checked)} checked visitors got their solo run's accuracies"
                     + "".join(f"; DIFFERENT: app {(v['ce_acc'], v['kd_acc'])}, solo {solo}"
                               for v, solo in checked if (v["ce_acc"], v["kd_acc"]) != solo))
    return lines


def seconds(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['p50']:.1f} / {stats['p95']:.1f} / {stats['max']:.1f} s"


def report(results: dict) -> str:
    lines = ["| load | finished | errors | shared | first curve p50/p95/max | result p50/p95/max | "
             "server CPU-s per visitor | clients' CPU-s | Stop answered in | stream per visitor |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|"]
    for name, load in results.items():
        s = load["summary"]
        stop = "–" if s["stop"] is None else f"{s['stop']['stop_s']:.2f} s" + ("" if s["stop"]["ended"] else
                                                                                  " (NOT ended)")
        lines.append(f"| {name} | {s['finished']}/{s['visitors']} | {s['errors']} | {s['shared']} | "
                     f"{seconds(s['first_curve_s'])} | {seconds(s['result_s'])} | {s['cpu_s_per_visitor']:.2f} | "
                     f"{s['client_cpu_s']:.0f} | "
                     f"{stop} | {s.get('stream_kb_per_visitor', 0):.0f} kB in {s.get('updates_per_visitor', 0):.0f} "
                     f"updates (last loss rows {s.get('final_loss_kb', 0):.0f} kB) |")
        lines += [f"- error ({name}): {message}" for message in s["error_messages"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visitors", type=int, default=30)
    parser.add_argument("--epochs", type=int, help="default: the app's")
    parser.add_argument("--train-size", type=int, help="default: the app's")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000 * 10,
                        help="first seed of the loads (default: fresh from the clock, so nothing is replayed)")
    parser.add_argument("--check", type=int, default=3, help="visitors per load checked against a solo run")
    parser.add_argument("--json", type=Path, help="also write every visit's figures here")
    parser.add_argument("--loads", default="cold,alone,identical,temperatures,seeds",
                        help="which loads to run, comma-separated, in this order (cold always runs first)")
    args = parser.parse_args(argv)
    if unknown := set(args.loads.split(",")) - set(loads(args)):
        parser.error(f"unknown loads {sorted(unknown)}; the loads are {', '.join(loads(args))}")
    logs = Path(tempfile.mkdtemp(prefix="kd-classroom-"))
    started = time.perf_counter()
    results = run_loads(args, logs)
    print(f"{args.visitors} visitors, epochs {args.epochs or 'default'}, train_size "
          f"{'default' if args.train_size is None else args.train_size or 'all'}, seeds from {args.seed}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
          f"{time.perf_counter() - started:.0f} s in all; app log in {logs}\n")
    print(report(results))
    print("\n".join(check_against_solo(results, args.check)))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": {k: v["summary"] for k, v in results.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
