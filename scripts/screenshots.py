"""Screenshots of every tab of the app, taken with headless Chromium (Playwright, system browser).

    .venv/bin/python scripts/screenshots.py [--url URL] [--out screenshots/] [--readme]

Without --url it serves app.py in-process on a free port. The Train tab is shot after a short run
of the default preset, so its curves and results table are filled in, after the methods preset (and the
Predict tab with that run's student of each method), and again after the hidden-class preset with the
automatic bias applied. `--readme` also writes small WebP copies of five of them to
docs/screenshots/: the four pictures on README.md's first screen and the methods run. Uses the Chromium at
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
            paths = [shoot_train(page, out_dir / "train.png", preset),
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


def shoot_train(page: Page, path: Path, preset: str) -> Path:
    open_tab(page, "Train")
    page.get_by_role("button", name=preset).click()
    expect(page.get_by_label("Training images (class-balanced)")).not_to_have_value("all 60,000")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("done:")
    expect(page.get_by_text("Results on the 10,000 test images")).to_be_visible()
    page.wait_for_timeout(1000)  # let the charts finish their transition
    page.screenshot(path=path, full_page=True)
    return path


def shoot_methods(page: Page, path: Path) -> Path:
    """The methods preset: KD, DKD, DIST, hint and cosine beside CE, their curves and results rows."""
    open_tab(page, "Train")
    page.get_by_role("button", name="Methods side by side: KD, DKD, DIST, hint, cosine").click()
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
    page.get_by_role("button", name="Hidden class: no dresses for the students").click()
    expect(page.get_by_label("Hide one class from the students")).to_have_value("Dress")
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


def readme_copies(shots: list[Path], out_dir: Path = ROOT / "docs" / "screenshots") -> list[Path]:
    """Small WebP copies of the README's screenshots (four on its first screen, the methods one further down)."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shot in shots:
        if shot.name in README_SHOTS:
            with Image.open(shot) as image:
                small = image.convert("RGB").resize(
                    (README_WIDTH, round(image.height * README_WIDTH / image.width)), Image.Resampling.LANCZOS)
                target = out_dir / README_SHOTS[shot.name]
                small.save(target, "WEBP", quality=70, method=6)
                written.append(target)
    return written


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running app; default: serve app.py in-process")
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="directory for the PNGs")
    parser.add_argument("--readme", action="store_true", help="also refresh docs/screenshots/*.webp")
    args = parser.parse_args(argv)
    if args.url:
        paths = capture(args.url, args.out)
    else:
        sys.path.insert(0, str(ROOT))
        import app

        app.demo.launch(prevent_thread_lock=True, quiet=True, **app.LAUNCH_OPTIONS)
        try:
            paths = capture(app.demo.local_url, args.out)
        finally:
            app.demo.close()
    if args.readme:
        paths += readme_copies(paths)
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
