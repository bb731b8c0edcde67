"""A soak under mixed load: many clients on loopback run, sweep, predict, sketch, soften, cancel and vanish
at once, for a while, against one in-process server.

It shows that no request fails except clear refusals (a full queue), every run ends within its time cap,
no session sees another session's students, resident memory plateaus, and open file descriptors, Gradio's
cache folder and the run folders return to their baseline once the clients have gone. The short version
(6 clients, 35 s) runs in the default suite; the full one (20 clients, 3 minutes) is `-m slow`, and prints
the figures that README.md's "Deploying safely" quotes.
"""

from __future__ import annotations

import os
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image, ImageDraw
from support import free_port, wait_for

import app
from kd_core import ui
from kd_core.views import run_view
from tests.test_served_images import fetch_whole_picture

ROOT = Path(__file__).resolve().parent.parent
DRESS = str(ROOT / "checkpoints" / "examples" / "3-dress-test-13.png")
RUN_CAP_S = 20  # KD_MAX_RUN_SECONDS during the soak: a run that nobody stops ends by then
TINY_RUN = {"alpha": 0.5, "epochs": 1, "train_size": 500, "student": "mlp-tiny", "repeats": 2}
LONG_RUN = {"epochs": 20, "train_size": 0}  # minutes of training, unless cancelled or capped
ACTIONS = ("run", "predict", "sweep", "cancel", "sketch", "soften", "vanish")  # client i starts at i % 7
REFUSALS = ("Queue is full",)  # the only errors a client may get


@dataclass
class Soak:
    """What the clients and the sampler saw."""

    server: str
    sketch: str
    deadline: float
    requests: Counter = field(default_factory=Counter)  # action -> completed requests
    refusals: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cancel_latencies_s: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    run_counter: int = 0

    def next_temperature(self) -> float:
        """A temperature no run in flight shares: how a session recognises its own students."""
        with self.lock:
            self.run_counter += 1
            return 0.5 + 0.5 * (self.run_counter % 39)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def open_fds() -> tuple[int, int]:
    """(open file descriptors other than matplotlib's font files, those font files). Matplotlib caches
    an open font per thread that draws (`font_manager._get_font`, an LRU cache of 64 entries, 2 files
    each); Gradio draws the sweep heatmap in its worker threads, so these plateau at 128 at most."""
    fonts = others = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        font = "matplotlib" in target and target.endswith(".ttf")
        fonts, others = fonts + font, others + (not font)
    return others, fonts


def files_in(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def run_folders() -> set[Path]:
    """Run folders no session needs: those of the (at most 8) finished runs app.RUNS keeps to replay aside."""
    kept = {item.students.run_dir for items in app.RUNS.kept_items() for item in items
            if getattr(item, "students", None) is not None}
    return set(Path(tempfile.gettempdir()).glob("kd-run-*")) - kept


# ------------------------------------------------------------------------------------ what clients do

def do_run(soak: Soak, client: Client) -> None:
    """A tiny run, then a prediction that must come from this session's own students."""
    temperature = soak.next_temperature()
    final = list(client.submit(temperature=temperature, **TINY_RUN, api_name="/distill"))[-1]
    assert "done: " in final[0] and "test accuracy CE" in final[0], final[0]
    source = client.predict(handle_file(DRESS), api_name="/predict")[5]
    assert f"this session's run: T={temperature:g}," in source, (temperature, source)


def do_predict(soak: Soak, client: Client) -> None:
    preview, _, teacher, _, _, source, *_ = client.predict(handle_file(DRESS), api_name="/predict")
    assert teacher["label"] == "Dress" and "default pair" in source, source  # never another's students
    assert fetch_whole_picture(soak.server, preview) == (224, 224)


def do_sketch(soak: Soak, client: Client) -> None:
    sketch = {"background": None, "layers": [], "composite": handle_file(soak.sketch)}
    preview, _, _, _, _, source, *_ = client.predict(sketch, api_name="/predict_sketch")
    assert "default pair" in source, source
    assert fetch_whole_picture(soak.server, preview) == (224, 224)


def do_soften(soak: Soak, client: Client) -> None:
    preview, *_, caption = client.predict(handle_file(DRESS), 4.0, api_name="/soften")
    assert "bits at T = 4" in caption
    assert fetch_whole_picture(soak.server, preview) == (224, 224)


def do_sweep(soak: Soak, client: Client) -> None:
    final = list(client.submit("1, 4", "0.5", 1, 500, api_name="/sweep"))[-1]
    assert final[0].startswith("done in"), final[0]


def do_cancel(soak: Soak, client: Client) -> None:
    """Start a long run, cancel it once the server holds it (queued or training)."""
    job = client.submit(temperature=soak.next_temperature(), **LONG_RUN, api_name="/distill")
    for _ in job:
        break  # the first update: the server has the run
    cancelled = time.monotonic()
    job.cancel()
    deadline = cancelled + 30
    while not job.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.done(), "a cancelled run's job did not end within 30 s"
    soak.cancel_latencies_s.append(time.monotonic() - cancelled)


def do_vanish(soak: Soak, client: Client) -> None:
    """Start a long run through the HTTP API, read its first update and drop the connection without a
    word, as a closed tab does (gradio_client's close() would keep reading the run's stream)."""
    values = [soak.next_temperature(), 0.5, LONG_RUN["epochs"], 1e-3, "mlp-small", LONG_RUN["train_size"],
              "none", 0, "fashion-mnist"]
    posted = httpx.post(f"{soak.server}/gradio_api/call/distill", json={"data": values}, timeout=30)
    posted.raise_for_status()
    url = f"{soak.server}/gradio_api/call/distill/{posted.json()['event_id']}"
    with httpx.stream("GET", url, timeout=120) as events:
        for line in events.iter_lines():
            if line.startswith("event: generating"):
                break  # the server holds the run: leave


ACTION_FUNCTIONS = {"run": do_run, "predict": do_predict, "sketch": do_sketch, "soften": do_soften,
                    "sweep": do_sweep, "cancel": do_cancel, "vanish": do_vanish}


def visitor(soak: Soak, index: int) -> None:
    """One client slot: a new client (a new session) per action, in turn, until the deadline."""
    turn = index
    while time.monotonic() < soak.deadline:
        action = ACTIONS[turn % len(ACTIONS)]
        turn += 1
        client = Client(soak.server, verbose=False, download_files=False)
        try:
            ACTION_FUNCTIONS[action](soak, client)
            with soak.lock:
                soak.requests[action] += 1
        except AppError as error:
            (soak.refusals if str(error).startswith(REFUSALS) else soak.failures).append(f"{action}: {error}")
        except Exception as error:  # noqa: BLE001 - every failure is collected and reported
            soak.failures.append(f"{action}: {type(error).__name__}: {error}")
        finally:
            client.close()  # the session ends; for "vanish" mid-run


# ------------------------------------------------------------------------------------ the soak



@pytest.fixture
def soak_page(tmp_path, monkeypatch):
    """A page of its own: temporary files in tmp_path, Gradio's copies deleted 10 s after they were made,
    gone clients noticed in ~0.5 s, runs capped at RUN_CAP_S; every run's start and end recorded."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")
    monkeypatch.setenv("KD_MAX_RUN_SECONDS", str(RUN_CAP_S))
    runs: list[list] = []  # [start, end, how it ended] per run; only [start] while it trains
    live_run = run_view.live_run

    def recorded(cfg, **options):
        times, ended = [time.monotonic()], "closed"  # closed: cancelled, or its client left
        runs.append(times)
        try:
            for view in live_run(cfg, **options):
                if view.students is not None:
                    ended = "finished" if "stopped early" not in view.status else "capped"
                yield view
        finally:
            times += [time.monotonic(), ended]

    monkeypatch.setattr(run_view, "live_run", recorded)
    page = ui.build(app.SERVICES, delete_cache=(1, 10))
    page.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **app.LAUNCH_OPTIONS)
    yield page, runs, tmp_path
    page.close()


def soak(page, runs, tmp_path: Path, clients: int, seconds: float) -> dict:
    cache = Path(page.GRADIO_CACHE)
    kept = files_in(cache)  # the example pictures, kept for the page's life
    drawing = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((100, 20, 180, 260), fill=(0, 0, 0, 255))
    drawing.save(tmp_path / "sketch.png")
    warm = Client(page.local_url, verbose=False, download_files=False)  # loads the teacher and the data
    do_predict(Soak(page.local_url, "", 0), warm)
    list(warm.submit(temperature=2.0, **TINY_RUN, api_name="/distill"))
    warm.close()
    assert wait_for(lambda: not run_folders(), 10)
    baseline = {"fds": open_fds(), "rss_mb": rss_mb(), "cache_files": kept}
    state = Soak(page.local_url.rstrip("/"), str(tmp_path / "sketch.png"), time.monotonic() + seconds)
    rss, stop = [], threading.Event()

    def sample() -> None:
        while not stop.wait(2.0):
            rss.append(round(rss_mb()))

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=visitor, args=(state, i)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    sampler.join()
    ended = wait_for(lambda: run_view.active_runs() == 0 and all(len(times) == 3 for times in runs), 60)
    folders_gone = wait_for(lambda: not run_folders(), 30)
    cache_back = wait_for(lambda: files_in(cache) == baseline["cache_files"], 30)
    fds_back = wait_for(lambda: open_fds()[0] <= baseline["fds"][0] + 3, 15)
    return {"clients": clients, "seconds": seconds, "requests": dict(state.requests),
            "total_requests": sum(state.requests.values()), "failures": state.failures,
            "refusals": len(state.refusals), "runs_ended": ended,
            "runs": dict(Counter(t[2] for t in runs if len(t) == 3)),
            "longest_run_s": {how: round(max(t[1] - t[0] for t in runs if t[2:] == [how]), 1)
                              for how in {t[2] for t in runs if len(t) == 3}},
            "cancel_latency_max_s": round(max(state.cancel_latencies_s, default=0), 2),
            "rss_start_mb": round(baseline["rss_mb"]), "rss_curve_mb": rss,
            "fds": (baseline["fds"][0], open_fds()[0]), "font_fds": open_fds()[1], "fds_back": fds_back,
            "cache_files": (len(baseline["cache_files"]), len(files_in(cache))), "cache_back": cache_back,
            "run_folders_left": len(run_folders()), "run_folders_gone": folders_gone}


def check(figures: dict) -> None:
    print("\nsoak figures:", figures)
    assert not figures["failures"], figures["failures"]
    assert figures["runs_ended"], "a run was still training after the clients had gone"
    assert max(figures["longest_run_s"].values()) <= RUN_CAP_S + 15, figures  # the cap + loading, evaluation
    assert figures["run_folders_gone"] and figures["cache_back"], figures
    assert figures["fds_back"] and figures["font_fds"] <= 128, figures  # see open_fds
    curve = figures["rss_curve_mb"]
    third = len(curve) // 3
    # a plateau, not a climb: the last third's typical level against the middle third's (medians, so a
    # single allocation spike of a run in flight, which the allocator hands back, does not decide it)
    assert statistics.median(curve[-third:]) - statistics.median(curve[third:2 * third]) < 150, curve
    assert all(figures["requests"].get(action, 0) >= 1 for action in ACTIONS), figures["requests"]


def test_a_short_soak_under_mixed_load(soak_page):
    check(soak(*soak_page, clients=7, seconds=35))


@pytest.mark.slow
def test_a_three_minute_soak_with_twenty_clients(soak_page):
    check(soak(*soak_page, clients=20, seconds=180))
