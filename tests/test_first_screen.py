"""The first five minutes in headless Chromium: T, α and Start on the first screen (a laptop's and a phone's), the
folded groups' summaries, the verdict headline, and the lesson's first two steps pressing the Train tab's own Start."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.browser
def test_t_alpha_and_start_are_inside_the_first_laptop_screen(server, screenshots, browser, tmp_path):
    boxes = screenshots.first_screens(browser, server, tmp_path)
    for control, box in boxes["first-screen-1280.png"].items():
        assert box["x"] >= 0 and box["y"] >= 0, control
        assert box["x"] + box["width"] <= 1280 and box["y"] + box["height"] <= 720, (control, box)
    phone = boxes["first-screen-390.png"]  # a phone: T, α and Start on its first screen too (Start was at 1,154 px)
    for control, box in phone.items():
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (control, box)
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844, (control, box)


@pytest.mark.browser
def test_a_preset_rewrites_the_folded_groups_summaries(server, screenshots, browser):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server)
    screenshots.pick_preset(page, "Full data: no gain here")
    expect(screenshots.group(page, "Data")).to_contain_text("all 60,000 labelled images")
    expect(screenshots.group(page, "Students")).to_contain_text("lr 0.001 · 3 epochs · 5 seeds from 0")
    screenshots.pick_preset(page, "Methods side by side: KD, DKD, DIST, hint, cosine")
    expect(screenshots.group(page, "Methods")).to_contain_text("Methods: KD, DKD, DIST, Hint, Cosine · β 8 · w 0.25")
    page.close()


@pytest.mark.browser
def test_the_lessons_first_steps_set_and_start_the_other_tabs(server, screenshots, browser):
    """Step 1 shows the Dark knowledge tab at T = 4; step 2 sets the Train tab's preset and presses its Start: the
    run ends with the verdict headline above the charts."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server)
    screenshots.pick_preset(page, "Seed script: T=3.5, α=0.6")  # the step must set every knob back
    screenshots.open_tab(page, "Dark knowledge")
    shown_temperature = page.get_by_label("number input for Temperature T").locator("visible=true")
    shown_temperature.fill("9")
    shown_temperature.press("Enter")
    screenshots.open_tab(page, "Lesson")
    page.get_by_role("button", name="Show the teacher at T = 1 and T = 4").click()
    expect(page.get_by_role("tab", name="Dark knowledge")).to_have_attribute("aria-selected", "true")
    expect(shown_temperature).to_have_value("4")

    screenshots.open_tab(page, "Lesson")
    page.get_by_role("button", name="Next step").click()
    expect(page.get_by_text("Step 2 of 5: CE vs KD with 1,000 labels")).to_be_visible()
    page.get_by_role("button", name="Train CE and KD on 1,000 labels").click()
    expect(page.get_by_role("tab", name="Train")).to_have_attribute("aria-selected", "true")
    # (the run may replay an identical one an earlier test finished: its passing status lines then flash by)
    expect(page.locator(".kd-status")).to_contain_text("done: KD better than CE", timeout=120_000)
    headline = page.locator(".kd-headline")
    expect(headline).to_contain_text("KD beat CE by +1.2 points (95 % interval +0.7 to +1.8), in 5 of 5 seeds",
                                      timeout=120_000)
    expect(headline).to_have_class("kd-headline kd-headline-better")
    assert page.get_by_label("number input for Temperature T").first.input_value() == "4"  # not the seed script's
    page.close()
