"""The app's "Your data" panel (kd_core.serve.own_data): its limits and messages, and, in Chromium, upload a zip,
train a
teacher on it, distil, and predict with the zip's own class names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
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


def test_a_teacher_too_big_for_the_cpu_budget_is_refused(colour_zip):
    run = own_data.app_config(str(colour_zip), **{**ARGS, "arch": "timm:resnet18", "teacher_epochs": 10,
                                                   "teacher_image_size": 64})
    assert not run.prepared  # its teacher is prepared in a training slot (StackPool.job)
    with pytest.raises(ValueError, match=r"training timm:resnet18 for 10 epochs on these images needs about"):
        own_data.check_teacher_budget(run.config, run.dataset, max_tflop=0.01)


@pytest.mark.browser
@pytest.mark.slow
def test_upload_train_a_teacher_distil_and_predict_in_chromium(server, colour_zip, tmp_path):
    from playwright.sync_api import sync_playwright

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
        page.locator("input[type=file]").last.set_input_files(str(picture))
        page.locator(".output-class").first.wait_for(timeout=60_000)
        labels = page.locator(".output-class").all_inner_texts()
        page.screenshot(path=str(shots / "own-data-predict.png"), full_page=True)
        browser.close()
    assert len(labels) == 3 and all(label in ("red", "green", "blue") for label in labels)
