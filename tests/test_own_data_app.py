"""The app's "Your data" panel (kd_core.serve.own_data): its limits and messages, and, in Chromium, upload a zip,
train a
teacher on it, distil, and predict with the zip's own class names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import free_port, wait_for
from test_sources import write_images, zip_folder

from kd_core.data import sources
from kd_core.serve import own_data

ARGS = dict(kind=own_data.TEACHER_KINDS[0], arch="zoo:cnn-tiny", hub_id="", teacher_epochs=3, image_size=0,
            teacher_image_size=0, student="mlp-small", epochs=2, repeats=2)


@pytest.fixture(scope="module")
def colour_zip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own")
    # 150 a class: with fewer, 5 teacher epochs are too few steps (batches of 128) to beat chance
    folder = write_images(root / "colours", {"red": 150, "green": 150, "blue": 150}, size=16, mode="RGB")
    return zip_folder(folder, root / "colours.zip")


@pytest.mark.parametrize("change, message", [
    ({"upload": None}, "upload a .zip of your images first"),
    ({"kind": own_data.TEACHER_KINDS[2], "hub_id": "resnet18"}, "a Hub id looks like ORG/NAME"),
    ({"teacher_epochs": 50}, f"teacher epochs must be in [1, {own_data.MAX_APP_TEACHER_EPOCHS}] here"),
    ({"image_size": 500}, f"image size must be in [0, {own_data.MAX_APP_IMAGE_SIZE}] here"),
    ({"arch": "timm:vit_huge_patch14_224"}, "choose an architecture from"),
    ({"student": "resnet18"}, "choose a student from"),
])
def test_the_panel_s_values_are_checked(change, message, colour_zip):
    values = {"upload": str(colour_zip), **ARGS, **change}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        own_data.app_config(values.pop("upload"), **values)


def test_the_space_limits_apply_to_an_upload(colour_zip, monkeypatch):
    monkeypatch.setattr(sources, "SPACE_LIMITS", sources.Limits(images=50))
    with pytest.raises(ValueError, match="has 450 images; the limit here is 50"):
        own_data.app_config(str(colour_zip), **ARGS)


def test_a_pixel_bomb_png_in_an_upload_is_one_clear_error_line(tmp_path):
    """A PNG declaring 30,000 × 30,000 pixels: the app's handler raises one gr.Error naming the file and the limit
    (Pillow's DecompressionBombError once reached the visitor as a generic error)."""
    import gradio as gr
    from test_sources import pixel_bomb_png, png, zip_with

    from kd_core.ui.own_data import distill_own_data

    upload = zip_with(tmp_path / "bomb.zip", {"d/a/x.png": png(), "d/a/y.png": png(), "d/b/huge.png": pixel_bomb_png()})
    with pytest.raises(gr.Error) as raised:
        list(distill_own_data(None, str(upload), **ARGS))
    assert raised.value.message == ("b/huge.png declares 900,000,000 pixels (a decompression bomb?); the limit here "
                                    f"is {sources.SPACE_LIMITS.pixels:,} pixels per image")


def test_a_teacher_too_big_for_the_cpu_budget_is_refused(colour_zip):
    run = own_data.app_config(str(colour_zip), **{**ARGS, "arch": "timm:resnet18", "teacher_epochs": 10,
                                                   "teacher_image_size": 64})
    assert not run.prepared  # its teacher is prepared in a training slot (StackPool.job)
    with pytest.raises(ValueError, match=r"training timm:resnet18 for 10 epochs on these images needs about"):
        own_data.check_teacher_budget(run.config, run.dataset, max_tflop=0.01)


@pytest.mark.parametrize("upload, dataset_id, found", [
    (None, "uoft-cs/cifar10", "hf:uoft-cs/cifar10"),
    (None, " hf:org/name:small ", "hf:org/name:small"),
    ("x.zip", "", "x.zip"),
    ("x.zip", "org/name", "choose one source: remove the zip, or clear the Hub dataset box"),
    (None, "/etc", "a Hub dataset id looks like ORG/NAME"),  # a visitor never names a path on the Space
    (None, "../secrets", "a Hub dataset id looks like ORG/NAME"),
    (None, "cifar10", "a Hub dataset id looks like ORG/NAME"),
    (None, "", "upload a .zip of your images first"),
])
def test_the_data_is_the_zip_or_a_hub_id_never_a_path(upload, dataset_id, found):
    if found.startswith(("hf:", "x.zip")):
        assert own_data.data_source(upload, dataset_id) == found
    else:
        with pytest.raises(ValueError, match=found):
            own_data.data_source(upload, dataset_id)


def test_a_hub_dataset_offline_is_one_message_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ValueError, match="cannot get hf:uoft-cs/cifar10"):
        own_data.app_config(None, **ARGS, dataset_id="uoft-cs/cifar10")
    assert time.perf_counter() - start < 5


@pytest.mark.browser
@pytest.mark.slow
def test_upload_train_a_teacher_distil_and_predict_in_chromium(server, colour_zip, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    shots = Path(os.environ.get("KD_SCREENSHOT_DIR", tmp_path))
    picture = tmp_path / "red.png"
    from PIL import Image

    Image.new("RGB", (16, 16), (230, 30, 30)).save(picture)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(server)
        page.get_by_role("tab", name="Your data").click()
        page.locator("input[type=file]").first.set_input_files(str(colour_zip))
        page.get_by_text("colours.zip").first.wait_for(timeout=60_000)
        page.get_by_label("Architecture to train").click()
        page.get_by_role("option", name="zoo:cnn-tiny").click()
        page.get_by_role("button", name="Start").last.click()
        try:
            page.get_by_text("Results on your test split").wait_for(timeout=300_000)
        finally:
            page.screenshot(path=str(shots / "own-data-run.png"), full_page=True)
        page.screenshot(path=str(shots / "own-data-run.png"), full_page=True)
        # T and α were chosen on the zip's validation split (on by default), and the why panel follows the run
        expect(page.locator("#own-chosen")).to_contain_text("Chosen on your validation split: T = ")
        expect(page.locator("#own-why")).to_contain_text("Agreement with the teacher")
        expect(page.locator("#own-reliability canvas")).to_be_visible()
        # a run never ends with "KD worse than CE" alone: the diagnosis under it says why, and the fix
        assert page.locator("#own-diagnosis").count() == 1
        if page.get_by_text("KD worse than CE").count():
            page.locator("#own-diagnosis .kd-diagnosis").wait_for(timeout=30_000)
            assert "Fix:" in page.locator("#own-diagnosis").inner_text()
        page.locator("input[type=file]").last.set_input_files(str(picture))
        page.locator(".output-class").first.wait_for(timeout=60_000)
        labels = page.locator(".output-class").all_inner_texts()
        page.screenshot(path=str(shots / "own-data-predict.png"), full_page=True)
        browser.close()
    assert len(labels) == 3 and all(label in ("red", "green", "blue") for label in labels)


# ------------------------------------------------------------------ Stop ends a teacher's training (own process)

CPU_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, all its threads, user + system (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) * CPU_TICK_S


def cpu_use(pid: int, windows: int = 3, window_s: float = 1.0) -> list[float]:
    """The process's CPU seconds per second over `windows` consecutive windows of `window_s`."""
    uses, last, since = [], cpu_seconds(pid), time.monotonic()
    for _ in range(windows):
        time.sleep(window_s)
        now, at = cpu_seconds(pid), time.monotonic()
        uses.append((now - last) / (at - since))
        last, since = now, at
    return uses


@pytest.fixture(scope="module")
def app_process(tmp_path_factory):
    """`python app.py` in a process of its own (its CPU time is its own to measure), with its own caches: (URL,
    pid)."""
    import httpx

    work, port = tmp_path_factory.mktemp("app-process"), free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "KD_CACHE_DIR": str(work / "cache"),
           "GRADIO_TEMP_DIR": str(work / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False"}
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return httpx.get(f"{url}/config", timeout=5).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None

    with open(work / "app.log", "w") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=Path(__file__).resolve().parent.parent, env=env,
                                   stdout=log, stderr=log)
        try:
            assert wait_for(answers, seconds=180, every=0.5) and process.poll() is None, \
                f"python app.py did not serve the page:\n{(work / 'app.log').read_text()[-3000:]}"
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(30)


@pytest.fixture(scope="module")
def long_teacher_zip(tmp_path_factory) -> Path:
    """3,000 32×32 pictures: zoo:cnn-teacher trains about 7 s an epoch on one core of 2, so 10 epochs outlast
    the check by a minute."""
    root = tmp_path_factory.mktemp("long")
    folder = write_images(root / "colours", {"red": 1000, "green": 1000, "blue": 1000}, size=32, mode="RGB")
    return zip_folder(folder, root / "colours.zip")


@pytest.mark.browser
def test_stop_ends_a_teacher_s_training_within_3_s(app_process, long_teacher_zip, screenshots, tmp_path):
    """Acceptance: Stop pressed during a Your-data teacher's training (10 epochs) leaves the server process as idle
    as before Start from 3 s after the press, and the status says Stopped."""
    from playwright.sync_api import expect, sync_playwright

    url, pid = app_process
    shots = Path(os.environ.get("KD_SCREENSHOT_DIR", tmp_path))
    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=screenshots.VIEWPORT)
            page.goto(url)
            page.get_by_role("tab", name="Your data").click()
            page.locator("input[type=file]").first.set_input_files(str(long_teacher_zip))
            page.get_by_text("colours.zip").first.wait_for(timeout=60_000)
            page.get_by_role("radio", name=own_data.TEACHER_KINDS[0]).check()
            epochs = page.get_by_label("number input for Teacher epochs")
            epochs.fill("10")
            epochs.press("Enter")
            status = page.locator(".kd-status").last
            time.sleep(1.0)  # (the upload's own work done)
            idle = cpu_use(pid)  # the page open, the zip uploaded, nothing training
            page.get_by_role("button", name="Start", exact=True).last.click()
            # after the first epoch's line; the progress lines that follow keep its validation accuracy
            expect(status).to_contain_text("validation accuracy", timeout=180_000)
            training = cpu_use(pid, windows=1)
            page.screenshot(path=str(shots / "own-data-teacher-training.png"), full_page=True)
            page.get_by_role("button", name="Stop", exact=True).last.click()
            pressed = time.monotonic()
            expect(status).to_contain_text("Stopped", timeout=3_000)
            time.sleep(max(0.0, pressed + 3.0 - time.monotonic()))
            after = cpu_use(pid)
            page.screenshot(path=str(shots / "own-data-teacher-stopped.png"), full_page=True)
        finally:
            browser.close()
    print(f"server CPU s/s: idle {idle}, training {training}, from 3 s after Stop {after}")
    assert training[0] > max(idle) + 0.3, f"the teacher's training did not show in the CPU time: {training}, {idle}"
    assert max(after) <= max(idle) + 0.1, f"the server kept working after Stop: {after} (idle: {idle})"


# ------------------------------------------------------------------ ten visitors at once, two slots

QUEUE_LINE = re.compile(r"waiting for a free training slot: (\d+) runs? ahead of yours, (\d+) training now")


class Busy:
    """How many pieces of training work are inside their loop now, and the most there ever were at once."""

    def __init__(self) -> None:
        self.lock, self.now, self.peak = threading.Lock(), 0, 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.now -= 1


@pytest.mark.parametrize("visitors, slots", [(10, 2)])
def test_visitors_starting_your_data_runs_at_once_queue_for_the_pool_s_slots(visitors, slots, tmp_path, monkeypatch):
    """Acceptance: `visitors` Your-data runs (a teacher to train, then the students) reach a pool of `slots` at the
    same moment: at no time do more than `slots` teachers or stacks train, each visitor left waiting sees its place
    in line, and every visitor gets its results."""
    from kd_core.engine.loop import train_stack
    from kd_core.serve import shared_runs
    from kd_core.serve.stack_pool import StackPool
    from kd_core.ui import own_data as own_data_tab
    from kd_core.ui.common import Services

    busy, arrived = Busy(), threading.Barrier(visitors)
    preparation = own_data.preparation

    def counted_preparation(run):  # every visitor's teacher reaches the pool at once, counted while it trains
        work = preparation(run)
        arrived.wait(60)

        def counted(emit, should_stop):
            with busy:
                return work(emit, should_stop)
        return counted

    def counted_train(*args, **kwargs):
        with busy:
            yield from train_stack(*args, **kwargs)

    monkeypatch.setattr(own_data, "preparation", counted_preparation)
    pool = StackPool(train=counted_train, max_running=slots)
    services = Services(runs=shared_runs.SharedRuns(max_running=visitors), sweeps=shared_runs.SharedRuns(),
                        pool=pool, training_visitors=visitors, concurrent_runs=slots)
    zips = [zip_folder(write_images(tmp_path / f"visitor-{i}" / "colours", {"red": 200, "green": 200, "blue": 200},
                                    size=8, mode="RGB", seed=i), tmp_path / f"visitor-{i}.zip")
            for i in range(visitors)]  # each its own images: its own teacher and its own students
    outputs: list[list] = [[] for _ in range(visitors)]
    errors: list[BaseException] = []

    def visit(i: int) -> None:
        try:
            for output in own_data_tab.distill_own_data(services, str(zips[i]), **{**ARGS, "teacher_epochs": 2,
                                                                                    "epochs": 1, "repeats": 1}):
                outputs[i].append(output)
        except BaseException as error:  # noqa: BLE001 -- reported below
            errors.append(error)

    running, started = [], time.monotonic()
    threads = [threading.Thread(target=visit, args=(i,)) for i in range(visitors)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads) and time.monotonic() - started < 120:
        running.append(pool.running())
        time.sleep(0.005)
    for thread in threads:
        thread.join(1)
    pool.shutdown()
    seconds = time.monotonic() - started

    places = [[tuple(map(int, m.groups())) for out in outs if isinstance(out[0], str)
               for m in [QUEUE_LINE.search(out[0])] if m] for outs in outputs]
    print(f"{seconds:.1f} s; running() peak {max(running)} over {len(running)} samples; busy peak {busy.peak}; "
          f"stacks and jobs started {pool.stacks_started}; places seen (ahead, training now): {places}")
    assert not errors, errors
    assert max(running) == slots and busy.peak == slots  # the bound, reached and never passed
    assert sum(1 for seen in places if seen) >= visitors - slots, "a visitor waited without seeing its place"
    assert all(ahead < visitors - slots and training <= slots for seen in places for ahead, training in seen)
    for outs in outputs:  # every visitor's last update: the results table, the students and the prepared run
        status, _, _, table, students, prepared, _ = outs[-1]
        assert "done" in status and table["visible"] and table["value"] is not None, status
        assert students is not None and prepared.prepared
        # T and α were chosen on the visitor's validation split first (on by default), and the run used them
        [chosen] = [out[-1] for out in outs if isinstance(out[-1], str) and out[-1]]
        assert f"T = {prepared.config.temperature:g}, α = {prepared.config.alpha:g}" in chosen
