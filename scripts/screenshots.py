"""Screenshots of every tab of the app, taken with headless Chromium (Playwright, system browser).

    .venv/bin/python scripts/screenshots.py [--url URL] [--out screenshots/] [--readme] [--lesson]

Without --url it serves app.py in-process on a free port. First the page as it opens at 1280×720 and at
390×844 (a viewport each, no scrolling). The Train tab is shot after a short run
of the default preset, so its curves and results table are filled in, after the methods preset (and the
Predict tab with that run's student of each method), and again after the hidden-class preset with the
automatic bias applied. `--lesson` also walks the Lesson tab, a shot per step. `--readme` also writes small
WebP copies to docs/screenshots/: the four pictures on README.md's first screen, the methods run, the first
screens and the lesson's steps. Uses the Chromium at
$KD_CHROMIUM (default /usr/bin/chromium, Debian's `chromium` package); never downloads a browser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TRAIN_PRESET = "Defaults: 1,000 images, KD beats CE"  # 80 steps × 5 seeds: seconds on 2 CPU cores
VIEWPORT = {"width": 1400, "height": 1000}


def capture(url: str, out_dir: str | Path, *, preset: str = TRAIN_PRESET,
            timeout_s: float = 120.0) -> list[Path]:
    """Open `url`, shoot the Train (after a run of `preset`), Predict (upload, drawing), Dark
    knowledge and Sweep tabs; return the PNG paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(timeout_s * 1000)
            expect.set_options(timeout=timeout_s * 1000)
            page.goto(url)
            expect(page.get_by_text("KD Playground").first).to_be_visible()
            paths = [*(out_dir / name for name in first_screens(browser, url, out_dir)),
                     shoot_train(page, out_dir / "train.png", preset),
                     shoot_methods(page, out_dir / "methods.png"),
                     shoot_predict_methods(page, out_dir / "predict-methods.png"),
                     shoot_hidden_class(page, out_dir / "hidden-class-bias.png"),
                     shoot_predict(page, out_dir / "predict.png"),
                     shoot_sketch(page, out_dir / "predict-sketch.png"),
                     shoot_dark_knowledge(page, out_dir / "dark-knowledge.png"),
                     shoot_sweep(page, out_dir / "sweep.png")]
        finally:
            browser.close()
    return paths


def launch_chromium(playwright: Playwright) -> Browser:
    """The system's Chromium, headless, with nothing that reaches the network."""
    executable = os.environ.get("KD_CHROMIUM", "/usr/bin/chromium")
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def pick_preset(page: Page, name: str) -> None:
    """Choose a preset in the Train tab's preset picker."""
    page.get_by_label("Preset", exact=True).click()
    page.get_by_role("option", name=name, exact=True).click()


def group(page: Page, name: str):
    """The header of the Train tab's folded group `name` ("Data", "Students", "Methods"): its one-line summary."""
    return page.locator("button.label-wrap", has_text=f"{name}:")


def open_group(page: Page, name: str) -> None:
    """Unfold a Train tab group (its widgets are in the page only while it is open); an open one stays open."""
    header = group(page, name)
    if "open" not in (header.get_attribute("class") or "").split():
        header.click()


def shoot_train(page: Page, path: Path, preset: str) -> Path:
    open_tab(page, "Train")
    pick_preset(page, preset)
    expect(group(page, "Data")).not_to_contain_text("all 60,000")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("done:")
    expect(page.get_by_text("Results on the 10,000 test images")).to_be_visible()
    page.wait_for_timeout(1000)  # let the charts finish their transition
    page.screenshot(path=path, full_page=True)
    return path


def shoot_methods(page: Page, path: Path) -> Path:
    """The methods preset: KD, DKD, DIST, hint and cosine beside CE, their curves and results rows."""
    open_tab(page, "Train")
    pick_preset(page, "Methods side by side: KD, DKD, DIST, hint, cosine")
    expect(group(page, "Methods")).to_contain_text("Cosine")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("done:")
    expect(page.get_by_role("gridcell", name="DIST student")).to_be_visible()
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    return path


def show_dress(page: Page) -> None:
    """The Predict tab with the Dress example picked and its predictions shown."""
    open_tab(page, "Predict")
    page.locator(".gallery-item, button.gallery-item").nth(3).click()  # the Dress example
    expect(page.get_by_text("What the models see:")).to_be_visible()


def shoot_predict_methods(page: Page, path: Path) -> Path:
    """The Predict tab after the methods run: the teacher, the CE student and the student of each method."""
    show_dress(page)
    students = ("KD student", "DKD student", "DIST student", "Hint student", "Cosine student")  # the preset's
    expect(page.locator(".output-class:visible")).to_have_count(2 + len(students))  # with the teacher and CE
    for name in students:
        expect(page.get_by_test_id("block-label").get_by_text(name, exact=True)).to_be_visible()
    page.wait_for_timeout(500)
    page.screenshot(path=path, full_page=True)
    return path


def shoot_hidden_class(page: Page, path: Path) -> Path:
    """The hidden-class preset's run, then the automatic bias: the bias curve and its caption."""
    open_tab(page, "Train")
    pick_preset(page, "Hidden class: no dresses for the students")
    expect(group(page, "Data")).to_contain_text("Dress hidden")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("done:")
    page.get_by_role("button", name="Automatic bias (no labels used)").click()
    expect(page.get_by_text("The Predict tab uses this bias")).to_be_visible()
    page.wait_for_timeout(1000)
    page.get_by_text("The hidden class's bias").scroll_into_view_if_needed()
    page.screenshot(path=path, full_page=True)
    return path


README_SHOTS = {"train.png": "train.webp", "hidden-class-bias.png": "hidden-class-bias.webp",
                "predict.png": "predict.webp", "sweep.png": "sweep.webp", "methods.png": "methods.webp"}
README_WIDTH = 900  # pixels: legible on GitHub and the Space page, ~50-100 KB each as WebP
FIRST_SCREENS_WIDTH = 1280  # the first screens keep a laptop's pixels


def readme_copies(shots: list[Path], out_dir: Path = ROOT / "docs" / "screenshots") -> list[Path]:
    """Small WebP copies of the README's screenshots (four on its first screen, the methods one further down), of
    the first screens (at their own width) and of the lesson's steps."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shot in shots:
        if shot.name in README_SHOTS:
            written.append(small_copy(shot, out_dir / README_SHOTS[shot.name], README_WIDTH))
        elif shot.name in FIRST_SCREENS:
            written.append(small_copy(shot, out_dir / f"{shot.stem}.webp", FIRST_SCREENS_WIDTH))
        elif shot.name.startswith("lesson-"):
            written.append(small_copy(shot, out_dir / f"{shot.stem}.webp", README_WIDTH))
    return written


def small_copy(shot: Path, target: Path, width: int) -> Path:
    """`shot` as a WebP at most `width` pixels wide."""
    from PIL import Image

    with Image.open(shot) as image:
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.convert("RGB").save(target, "WEBP", quality=70, method=6)
    return target


def shoot_sweep(page: Page, path: Path) -> Path:
    """A 2 × 2 grid on 2,000 images: the heatmap, the two line plots and the table."""
    open_tab(page, "Sweep")
    page.get_by_label("Temperatures T (comma-separated)").fill("1, 4")
    page.get_by_label("α values (comma-separated)").fill("0.5, 0.9")
    page.get_by_role("button", name="Start sweep").click()
    expect(page.get_by_text("done in")).to_be_visible()
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    return path


def shoot_predict(page: Page, path: Path) -> Path:
    show_dress(page)
    expect(page.locator(".output-class").first).to_contain_text("Dress")
    expect(page.locator(".output-class:visible")).to_have_count(3)  # the hidden-class run: teacher, CE and KD
    page.wait_for_timeout(500)
    page.screenshot(path=path, full_page=True)
    return path


def shoot_sketch(page: Page, path: Path) -> Path:
    """Draw a pair of trousers (a waistband and two legs) with the mouse and classify the drawing."""
    page.get_by_role("tab", name="Draw").click()
    page.get_by_role("button", name="Brush").click()
    box = page.locator("canvas").last.bounding_box()
    side = 0.8 * box["height"]  # the square drawing area, centred in the editor's canvas
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    strokes = [((0.3, 0.1), (0.7, 0.1)), ((0.33, 0.1), (0.28, 0.9)), ((0.67, 0.1), (0.72, 0.9)),
               ((0.5, 0.1), (0.5, 0.35)), ((0.38, 0.12), (0.42, 0.85)), ((0.62, 0.12), (0.58, 0.85))]
    for (x0, y0), (x1, y1) in strokes:
        page.mouse.move(left + x0 * side, top + y0 * side)
        page.mouse.down()
        page.mouse.move(left + x1 * side, top + y1 * side, steps=15)
        page.mouse.up()
    page.get_by_role("button", name="Classify the drawing").click()
    expect(page.get_by_text("What the models see: ").last).to_contain_text("cropped to the object")
    page.wait_for_timeout(500)
    page.screenshot(path=path, full_page=True)
    return path


def shoot_dark_knowledge(page: Page, path: Path) -> Path:
    open_tab(page, "Dark knowledge")
    expect(page.get_by_text("The teacher says")).to_be_visible()
    page.wait_for_timeout(1000)
    page.screenshot(path=path, full_page=True)
    return path


FIRST_SCREENS = {"first-screen-1280.png": {"width": 1280, "height": 720},  # a laptop, a 720p projector
                 "first-screen-390.png": {"width": 390, "height": 844}}  # a phone


def first_screens(browser: Browser, url: str, out_dir: Path) -> dict[str, dict]:
    """What a visitor sees before scrolling, at each of FIRST_SCREENS; the bounding boxes of T, α and Start there."""
    boxes = {}
    for name, viewport in FIRST_SCREENS.items():
        page = browser.new_page(viewport=viewport)
        page.goto(url)
        controls = {"T": page.get_by_label("Temperature T").first,  # its number box (the Train tab's is first)
                    "alpha": page.get_by_label("α: weight on the teacher's soft targets").first,
                    "Start": page.get_by_role("button", name="Start", exact=True)}
        expect(controls["Start"]).to_be_visible()
        page.wait_for_timeout(500)  # the formula's KaTeX and the sliders settle
        boxes[name] = {control: locator.bounding_box() for control, locator in controls.items()}
        page.screenshot(path=out_dir / name)
        page.close()
    return boxes


def capture_lesson(url: str, out_dir: str | Path, timeout_s: float = 600.0) -> list[Path]:
    """Walk the Lesson tab's five steps (kd_core.views.lesson.STEPS): press each step's button, wait for what it shows
    (a finished run's headline, or the Dark knowledge charts) and shoot that tab, then press Next step."""
    from kd_core.views.lesson import STEPS

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.set_default_timeout(timeout_s * 1000)
            expect.set_options(timeout=timeout_s * 1000)
            page.goto(url)
            for number, step in enumerate(STEPS, 1):
                open_tab(page, "Lesson")
                expect(page.get_by_text(f"Step {number} of {len(STEPS)}: {step.title}")).to_be_visible()
                page.get_by_role("button", name=step.button, exact=True).click()
                if step.preset is None:
                    expect(page.get_by_text("The teacher says")).to_be_visible()
                else:  # the previous run's headline goes when Start is pressed; this run's comes when it ends
                    expect(page.locator(".kd-headline")).to_have_count(0)
                    expect(page.locator(".kd-headline")).to_be_visible()
                page.wait_for_timeout(1000)
                paths.append(out_dir / f"lesson-{number}.png")
                page.screenshot(path=paths[-1], full_page=True)
                open_tab(page, "Lesson")
                page.get_by_role("button", name="Next step").click()
        finally:
            browser.close()
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running app; default: serve app.py in-process")
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="directory for the PNGs")
    parser.add_argument("--readme", action="store_true", help="also refresh docs/screenshots/*.webp")
    parser.add_argument("--lesson", action="store_true",
                        help="also walk the Lesson tab's five steps, a shot each (several minutes of training)")
    args = parser.parse_args(argv)

    def shoot(url: str) -> list[Path]:
        return capture(url, args.out) + (capture_lesson(url, args.out) if args.lesson else [])

    if args.url:
        paths = shoot(args.url)
    else:
        sys.path.insert(0, str(ROOT))
        import app

        app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
        try:
            paths = shoot(app.demo.local_url)
        finally:
            app.demo.close()
    if args.readme:
        paths += readme_copies(paths)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
