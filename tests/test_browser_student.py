"""The KD student in the visitor's browser (kd_core.publish.browser_student): headless Chromium with every request off
the loopback aborted and recorded, after a run in the Train tab; the browser's logits against ONNX Runtime's in
Python, a drawn picture, the ms per image."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_core.models import predict
from kd_core.publish import browser_student, web_runtime
from kd_core.publish.export import onnx_logits, onnx_session

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "checkpoints" / "examples" / "7-sneaker-test-9.png"  # a 28×28 Fashion-MNIST test image
needs_runtime = pytest.mark.skipif(not web_runtime.present(), reason=web_runtime.how_to_vendor())


@pytest.fixture(scope="module")
def visit(server, screenshots):
    """A page that trained a pair (1 epoch of the default preset) and opened the Predict tab; the requests it
    tried off the loopback (all aborted) and its load time."""
    from playwright.sync_api import expect, sync_playwright

    off_origin = []

    def only_loopback(route):
        if route.request.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:")):
            route.continue_()
        else:
            off_origin.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        page = browser.new_page(viewport=screenshots.VIEWPORT)
        page.route("**/*", only_loopback)
        page.set_default_timeout(240_000)
        expect.set_options(timeout=240_000)
        start = time.perf_counter()
        page.goto(server, wait_until="load")
        load_s = time.perf_counter() - start
        screenshots.pick_preset(page, screenshots.TRAIN_PRESET)
        screenshots.open_group(page, "Students")
        page.get_by_label("number input for Epochs").fill("1")
        page.get_by_label("number input for Epochs").press("Enter")
        page.get_by_role("button", name="Start", exact=True).click()
        expect(page.locator(".kd-status")).to_contain_text("done:")
        page.get_by_role("tab", name="Predict").click()
        yield page, off_origin, load_s
        browser.close()


def panel_payload(page) -> dict | None:
    data = page.evaluate("() => document.querySelector('.kd-browser[data-kd]')?.dataset.kd ?? null")
    return None if data is None else json.loads(data)


def browser_answer(page, picked: str, changed) -> tuple[dict, dict]:
    """(the panel's payload, the result element's data) once `changed(payload)` holds for the panel (the visitor's
    action reached the server) and the browser has answered for that panel's model and input."""
    from playwright.sync_api import expect
    from support import wait_for

    assert wait_for(lambda: (p := panel_payload(page)) is not None and changed(p), seconds=240), picked
    payload = panel_payload(page)
    result = page.locator(f'#browser-student .kd-browser-result[data-model="{payload["model"]}"]'
                          f'[data-input="{payload["input"]}"]')
    expect(result).to_have_count(1)
    data = {key: result.get_attribute(f"data-{key}") for key in ("logits", "ms", "create-ms", "load-ms")}
    print(f"{picked}: {result.inner_text()}")
    return payload, {"text": result.inner_text(), **data}


@pytest.mark.browser
@needs_runtime
def test_the_browser_runs_the_sessions_student_on_a_fixed_picture_as_onnx_runtime_does(visit, tmp_path):
    page, _, _ = visit
    pixels = predict.prepare_image(predict.open_image(EXAMPLE), (1, 28, 28)).pixels  # the server's own input
    expected_input = base64.b64encode(pixels.numpy().tobytes()).decode()
    page.get_by_role("tab", name="Upload").click()
    page.locator(".gallery-item, button.gallery-item").nth(7).click()  # the Sneaker example, EXAMPLE
    payload, result = browser_answer(page, "upload", lambda p: p["input"] == expected_input)
    shipped = browser_student.student_onnx(predict.default_students()[1], tmp_path)[0]
    assert Path(payload["model"]).parent.name == "kd-browser-models"
    assert Path(payload["model"]).name != shipped.name  # the run's KD student, not the shipped one
    sent = np.frombuffer(base64.b64decode(payload["input"]), dtype=np.uint8).reshape(payload["shape"])
    assert payload["shape"] == [1, 1, 28, 28] and np.array_equal(sent[0], pixels.numpy())
    # the ONNX file the page ran, in Python's ONNX Runtime, on the same input
    python = onnx_logits(onnx_session(payload["model"]), torch.from_numpy(sent.copy()))[0]
    in_browser = torch.tensor(json.loads(result["logits"]))
    assert in_browser.shape == python.shape == (10,)
    assert (in_browser - python).abs().max().item() <= 1e-4
    best = payload["classes"][int(in_browser.argmax())]
    assert result["text"].startswith(f"{best} · ") and best == payload["server_class"]
    assert "ms per image (mean of 100 runs" in result["text"] and payload["runs"] >= 100
    assert float(result["ms"]) > 0 and float(result["create-ms"]) > 0 and float(result["load-ms"]) > 0
    (ROOT / "screenshots").mkdir(exist_ok=True)
    page.locator("#browser-student").scroll_into_view_if_needed()
    page.screenshot(path=ROOT / "screenshots" / "browser-student.png", full_page=True)


@pytest.mark.browser
@needs_runtime
def test_a_drawn_picture_gets_a_class_from_the_browser(visit, screenshots, tmp_path):
    page, _, _ = visit
    before = panel_payload(page)
    screenshots.shoot_sketch(page, tmp_path / "sketch.png")  # draws trousers, presses Classify the drawing
    payload, result = browser_answer(page, "drawing", lambda p: before is None or p["input"] != before["input"])
    best = payload["classes"][int(np.argmax(json.loads(result["logits"])))]
    assert result["text"].startswith(f"{best} · ") and float(result["ms"]) > 0


@pytest.mark.browser
@needs_runtime
def test_no_request_leaves_the_apps_origin(visit):
    page, off_origin, load_s = visit
    page.get_by_role("tab", name="Upload").click()
    assert off_origin == []
    print(f"page load (load event): {load_s * 1000:.0f} ms")


@needs_runtime
def test_the_panel_payload_names_served_files_and_the_servers_answer(tmp_path):
    kd = predict.default_students()[1]
    pixels = predict.prepare_image(predict.open_image(EXAMPLE), kd.in_shape).pixels
    data = browser_student.panel_data(kd, pixels, tmp_path)
    assert Path(data["bundle"]).is_file() and Path(data["wasm"]).is_file() and Path(data["model"]).is_file()
    assert data["model"] == str(browser_student.student_onnx(kd, tmp_path)[0])  # exported once
    expected = kd.logits(pixels[None])[0]
    assert torch.allclose(torch.tensor(data["server_logits"]), expected, atol=1e-4)
    assert data["server_class"] == kd.classes[int(expected.argmax())] == "Sneaker"
