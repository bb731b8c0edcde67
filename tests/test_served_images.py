"""Every picture the app serves arrives whole, however many visitors ask for the same one at once.

Gradio 6.31 writes a returned PIL image to a path named by the content's hash with a plain `write_bytes`
(truncate, then write), so identical previews from concurrent requests rewrote the file while it was being
served: a client got 0 bytes of a declared 630 ("peer closed connection without sending complete message
body"). The app now writes each preview whole under its own content-hash name (`kd_core.views.served`).
"""

from __future__ import annotations

import base64
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from gradio_client import Client, handle_file
from PIL import Image, ImageDraw

import app
from kd_core.views import served

ROOT = Path(__file__).resolve().parent.parent
DRESS = str(ROOT / "checkpoints" / "examples" / "3-dress-test-13.png")
CLIENTS = 8  # concurrent identical requests per round
ROUNDS = 12  # per endpoint; before the fix, 12 rounds of /predict failed at least once in 5 of 5 runs


def fetch_whole_picture(server: str, file: dict) -> tuple[int, int]:
    """GET a served file as a browser would; its size as a decoded picture, or an exception."""
    url = file["url"] if file["url"].startswith("http") else server.rstrip("/") + file["url"]
    response = httpx.get(url, timeout=30)
    response.raise_for_status()
    assert len(response.content) == int(response.headers["content-length"])
    with Image.open(io.BytesIO(response.content)) as picture:
        picture.load()  # decodes every pixel: a truncated file raises here
        return picture.size


def identical_requests_at_once(server: str, call) -> list[str]:
    """CLIENTS threads, each with its own client, send the same request at the same moment ROUNDS times
    and fetch the preview they get back at once; returns the failures as text."""
    clients = [Client(server, verbose=False, download_files=False) for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)
    failures = []

    def visitor(client: Client) -> None:
        for round_ in range(ROUNDS):
            barrier.wait()
            try:
                assert fetch_whole_picture(server, call(client)) == (224, 224)
            except Exception as error:  # noqa: BLE001 - every failure is collected and reported
                failures.append(f"round {round_}: {type(error).__name__}: {error}")

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(visitor, clients))
    return failures


def sketch_file(tmp_path: Path) -> str:
    drawing = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((100, 20, 180, 260), fill=(0, 0, 0, 255))
    path = tmp_path / "sketch.png"
    drawing.save(path)
    return str(path)


def test_concurrent_identical_predictions_serve_whole_previews(server):
    failures = identical_requests_at_once(
        server, lambda client: client.predict(handle_file(DRESS), api_name="/predict")[0])
    assert not failures, failures


def test_concurrent_identical_dark_knowledge_requests_serve_whole_previews(server):
    failures = identical_requests_at_once(
        server, lambda client: client.predict(handle_file(DRESS), 4.0, api_name="/soften")[0])
    assert not failures, failures


def test_concurrent_identical_sketches_serve_whole_previews(server, tmp_path):
    path = sketch_file(tmp_path)

    def classify(client: Client) -> dict:
        sketch = {"background": None, "layers": [], "composite": handle_file(path)}
        return client.predict(sketch, api_name="/predict_sketch")[0]

    failures = identical_requests_at_once(server, classify)
    assert not failures, failures


def test_the_sweep_heatmap_is_inline_not_a_served_file(server):
    """gr.Plot sends a matplotlib figure as a base64 PNG inside the update: no file, so no race. If Gradio
    ever serves it as a file instead, this fails, and the heatmap must go through `served` too."""
    client = Client(server, verbose=False, download_files=False)
    *_, last = client.submit("2", "0.5", 1, 500, api_name="/sweep")
    plot = last[1]
    assert plot["type"] == "matplotlib"
    header, data = plot["plot"].split(",", 1)
    assert header in ("data:image/png;base64", "data:image/webp;base64")  # Gradio 6.31: WebP
    with Image.open(io.BytesIO(base64.b64decode(data))) as heatmap:
        heatmap.load()


def test_previews_are_served_from_the_file_the_app_wrote(server):
    """The preview's URL points at the file `served.picture_file` wrote whole, in Gradio's cache: Gradio
    serves it in place and ages it with its own copies (delete_cache). If Gradio starts copying it, this
    fails: check that the copy is written whole too (Gradio 6.31's save_file_to_cache is)."""
    preview = Client(server, verbose=False, download_files=False).predict(handle_file(DRESS),
                                                                         api_name="/predict")[0]
    path = Path(preview["path"])
    assert path.parent == served.folder(app.demo.GRADIO_CACHE)
    assert path.name == served.file_name(path.read_bytes())
    with Image.open(path) as picture:
        assert picture.size == (224, 224)


def test_writing_a_picture_never_shows_a_partial_file(tmp_path, monkeypatch):
    """Writers rewrite the same picture while a reader reads it: every read is whole. With the encoding
    replaced by 4 MB of ready bytes, the writers spend their time writing; a plain write_bytes in place of
    `served`'s rename fails this at once (measured: hundreds of partial reads out of 400)."""
    encoded = bytes(range(256)) * 16_384  # 4 MB
    monkeypatch.setattr(served, "encode", lambda picture: encoded)
    picture = Image.new("L", (28, 28))
    path = served.picture_file(picture, tmp_path)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            served.picture_file(picture, tmp_path)

    writers = [threading.Thread(target=writer) for _ in range(2)]
    for thread in writers:
        thread.start()
    try:
        sizes = [len(path.read_bytes()) for _ in range(400)]
    finally:
        stop.set()
        for thread in writers:
            thread.join()
    torn = [size for size in sizes if size != len(encoded)]
    assert not torn, f"{len(torn)} partial reads of 400, e.g. {sorted(set(torn))[:5]} of {len(encoded)} bytes"
    assert [p.name for p in tmp_path.iterdir()] == [served.file_name(encoded)]  # no temporary files left
