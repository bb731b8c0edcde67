"""Shared fixtures: the real Fashion-MNIST (loaded once), a small teacher for engine tests, isolation of
caches from the user's home directory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from support import free_port

from kd_core.data.datasets import load_dataset
from kd_core.models import checkpoints

# the app's class board (kd_core.serve.class_board) in a file of this test process, never ./data: set before any test
# imports app, whose services open it
os.environ.setdefault("KD_CLASS_BOARD_DB", str(Path(tempfile.mkdtemp(prefix="kd-board-")) / "class_board.sqlite"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Logit caches written by tests go to a temporary directory, never ~/.cache."""
    monkeypatch.setenv("KD_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kd-cache"))


@pytest.fixture(scope="module")
def server():
    """The app served on a free loopback port for one test module; its URL."""
    import app

    app.demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **app.LAUNCH_OPTIONS)
    yield app.demo.local_url
    app.demo.close()


@pytest.fixture(scope="module")
def screenshots():
    """scripts/screenshots.py as a module: the browser tests' Chromium and their ways round the page."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "screenshots.py"
    spec = importlib.util.spec_from_file_location("screenshots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def browser(screenshots):
    """One headless Chromium per test module (/usr/bin/chromium, driven by Playwright)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def fashion():
    return load_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def shipped_teacher():
    path = checkpoints.default_teacher_path("fashion-mnist")
    return path


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, fashion):
    """A quickly trained mlp-tiny saved as a checkpoint: a real (weak) teacher for cache tests."""
    from kd_core.teacher.training import train_teacher

    model, acc = train_teacher("fashion-mnist", "mlp-tiny", epochs=1, batch_size=512)
    path = tmp_path_factory.mktemp("teacher") / "tiny-teacher.safetensors"
    meta = {"arch": "mlp-tiny", "dataset": "fashion-mnist", "in_shape": [1, 28, 28], "num_classes": 10,
            "test_acc": acc}
    checkpoints.save_model(path, model, meta)
    return path
