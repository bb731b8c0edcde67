"""Smoke test of the runtime install: `python app.py` from an environment built from requirements.txt alone (what
a Hugging Face Space and `bash scripts/setup.sh` install), and each tab's main button pressed once.

    .ci/runtime-venv/bin/python tests/smoke_runtime.py        (from the repo root; .ci/run does this)

The app is served as on a Space: SYSTEM=spaces with OAuth configured, and the owner's HF_TOKEN set as a secret
(the Hub endpoint points at a closed loopback port, so nothing could leave). The public API goes through
gradio_client (/distill, /predict, /predict_sketch, /soften, /sweep); the buttons the API keeps private (the
ONNX export, the in-browser student, Your data's Start, Publish) go through Gradio's queue as the page sends
them, in the gradio_client's session, so they see its /distill run's students. One line per endpoint; exit
status 1 when any fails. No `test_` prefix: pytest does not collect it (the dev environment has more packages
than a Space, which is the point).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
from gradio_client import Client, handle_file
from gradio_client.utils import apply_diff
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = sorted((ROOT / "checkpoints" / "examples").glob("*.png"))[0]
START_SECONDS = 180  # `python app.py` answers in ~20 s on 2 idle cores; CI's may be busy
CALL_SECONDS = 600  # the longest call: Your data trains a teacher, then the students
HUB_DATASET = "…or a Hub dataset (ORG/NAME[:CONFIG]; needs the internet)"  # the Your data tab's box
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens on the discard port: a request there fails at once
SPACE_ENV = {"SYSTEM": "spaces", "SPACE_ID": "kd-playground/smoke", "OAUTH_CLIENT_ID": "smoke",
             "OAUTH_CLIENT_SECRET": "smoke", "OAUTH_SCOPES": "openid profile write-repos",
             "OPENID_PROVIDER_URL": CLOSED_PORT,  # read only when someone signs in
             "HF_TOKEN": "hf_space_owner_secret", "HF_ENDPOINT": CLOSED_PORT, "GRADIO_ANALYTICS_ENABLED": "False"}


class SmokeError(RuntimeError):
    """An endpoint answered with an error, or with something other than what its tab shows."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, workdir: Path, log) -> subprocess.Popen:
    """`python app.py` as a Space runs it, with this interpreter; returns once /config answers."""
    env = {**os.environ, **SPACE_ENV, "GRADIO_SERVER_PORT": str(port), "KD_CACHE_DIR": str(workdir / "cache"),
           "KD_CLASS_BOARD_DB": str(workdir / "class_board.sqlite"),
           "GRADIO_TEMP_DIR": str(workdir / "gradio")}
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise SmokeError(f"python app.py did not serve the page within {START_SECONDS} s (exit {process.poll()})")


# ------------------------------------------------------------------------- the private buttons, as the page

class Page:
    """The page's own way to press a button: POST /gradio_api/queue/join with the event's id and the session,
    then read the session's event stream up to that event's last message."""

    def __init__(self, url: str, session_hash: str):
        self.url, self.session_hash = url, session_hash
        config = httpx.get(f"{url}/config", timeout=30).json()
        self.components = {c["id"]: c for c in config["components"]}
        self.dependencies = [d for d in config["dependencies"] if d.get("backend_fn")]

    def button(self, label: str) -> int:
        found = [i for i, c in self.components.items() if c["type"] == "button" and c["props"].get("value") == label]
        if len(found) != 1:
            raise SmokeError(f"{len(found)} buttons read {label!r}; expected one")
        return found[0]

    def label(self, start: str) -> str:
        """The one label that begins with `start`."""
        found = {c["props"]["label"] for c in self.components.values()
                 if str(c["props"].get("label")).startswith(start)}
        if len(found) != 1:
            raise SmokeError(f"{len(found)} labels begin with {start!r}; expected one")
        return found.pop()

    def choices(self, label: str) -> list:
        found = [c for c in self.components.values() if c["props"].get("label") == label and "choices" in c["props"]]
        return [value for _, value in found[0]["props"]["choices"]]

    def press(self, button: int, values_by_label: dict, index: int = 0) -> list:
        """The outputs of the `index`th event the button's click starts; inputs by label (a gr.State, which the
        server fills from the session, and any input not named, get None)."""
        events = [d for d in self.dependencies if [button, "click"] in d["targets"]]
        event = events[index]
        data = [values_by_label.get(self.components[i]["props"].get("label")) for i in event["inputs"]]
        body = {"data": data, "fn_index": event["id"], "trigger_id": button, "event_data": None,
                "session_hash": self.session_hash}
        event_id = httpx.post(f"{self.url}/gradio_api/queue/join", json=body, timeout=30).json()["event_id"]
        latest = None  # a generator's outputs so far: its first update whole, the next ones as diffs
        with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": self.session_hash},
                          timeout=CALL_SECONDS) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("event_id") != event_id:
                    continue
                output = message.get("output") or {}
                if message["msg"] == "process_generating":
                    latest = (list(output["data"]) if latest is None
                              else [apply_diff(old, diff) for old, diff in zip(latest, output["data"], strict=True)])
                elif message["msg"] == "process_completed":
                    if not message.get("success"):
                        raise SmokeError(output.get("error") or "Error")
                    return latest if latest is not None else output["data"]
        raise SmokeError("the event stream ended before the event did")

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            answer = httpx.post(f"{self.url}/gradio_api/upload", files={"files": (path.name, f)}, timeout=60)
        return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


# ------------------------------------------------------------------------------------------- inputs

def sketch_file(folder: Path) -> Path:
    drawing = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((100, 20, 180, 260), fill=(0, 0, 0, 255))  # a tall dark shape
    drawing.save(folder / "sketch.png")
    return folder / "sketch.png"


def colour_zip(folder: Path, per_class: int = 150) -> Path:
    """A small ImageFolder zip: three classes of 16×16 pictures, each its colour give or take a little (150 a
    class, as tests/test_own_data_app.py found: with fewer, 5 teacher epochs are too few steps to beat chance)."""
    path = folder / "colours.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, rgb in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
            for i in range(per_class):
                shade = tuple(max(0, min(255, c + (i * 37 % 41) - 20)) for c in rgb)
                image, data = Image.new("RGB", (16, 16), shade), io.BytesIO()
                image.save(data, format="PNG")
                archive.writestr(f"colours/{name}/{i:03d}.png", data.getvalue())
    return path


# ------------------------------------------------------------------------------------------- the calls

def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeError(what)


def rows(table) -> list:
    """A Dataframe output's rows, whether it came as a value or as an update carrying one."""
    value = (table or {}).get("value", table) or {}
    return value.get("data") or []


def calls(client: Client, page: Page, folder: Path) -> dict[str, Callable[[], str]]:
    """Each endpoint's call, in order (the Predict tab's buttons need /distill's students); each returns its line."""
    def distill() -> str:
        *_, table, log_file, kd_file = client.predict(temperature=4, alpha=0.9, epochs=1, train_size=1000, repeats=1,
                                                      class_code="smoke-class", api_name="/distill")
        check(bool(rows(table)) and bool(kd_file), f"no results table or KD student: {table!r}")
        return f"{len(rows(table))} rows of results, KD student file"

    def class_board() -> str:  # the class's SQLite board (the standard library's) has /distill's point
        board = client.predict("smoke-class", api_name="/class_board")
        check(board["class"] == "smoke-class" and len(board["rows"]) == 1, f"not one point on the board: {board!r}")
        return f"1 point at T = {board['rows'][0]['T']:g}"

    def predict() -> str:
        teacher = client.predict(handle_file(str(EXAMPLE)), api_name="/predict")[2]
        check(len(teacher["confidences"]) == 3, f"teacher top-3 missing: {teacher!r}")
        return f"teacher says {teacher['label']}"

    def predict_sketch() -> str:
        sketch = {"background": None, "layers": [], "composite": handle_file(str(sketch_file(folder)))}
        teacher = client.predict(sketch, api_name="/predict_sketch")[2]
        check(len(teacher["confidences"]) == 3, f"teacher top-3 missing: {teacher!r}")
        return f"teacher says {teacher['label']}"

    def soften() -> str:
        _, plain, softened, _ = client.predict(handle_file(str(EXAMPLE)), 8.0, api_name="/soften")
        check(len(plain["value"]["data"]) == len(softened["value"]["data"]) == 10, "not ten classes")
        return "teacher's probabilities at T = 1 and T = 8"

    def sweep() -> str:
        *_, table = client.predict("2, 4", "0.5", 1, 1000, 1, api_name="/sweep")
        check(bool(rows(table)), f"no grid table: {table!r}")
        return f"{len(rows(table))} grid rows"

    def export() -> str:
        files, latency, words = page.press(page.button("Export the KD student to ONNX"), {})
        names = sorted(Path(f["path"]).suffix for f in files)
        check(".onnx" in names and bool(rows(latency)), f"no ONNX file or latency: {names}")
        return f"files {names}, {len(rows(latency))} latency rows"

    def browser_student() -> str:
        image = page.upload(EXAMPLE)
        panel = page.press(page.button("Run the KD student in your browser"), {page.label("A picture of"): image})
        check("data-kd=" in panel[0], f"no payload for the browser: {panel[0][:200]!r}")
        return "the panel carries the KD student's ONNX payload"

    def own_data() -> str:
        upload = page.upload(colour_zip(folder))
        arch = "zoo:cnn-tiny"
        check(arch in page.choices("Architecture to train (Train one on my data)"), f"{arch} not offered")
        values = {"Your images (.zip)": upload, "Teacher": page.choices("Teacher")[0],
                  "Architecture to train (Train one on my data)": arch, "Teacher epochs": 5,
                  "Hub id (ORG/NAME; needs the internet)": "", "Student image size (0: as uploaded)": 0,
                  "Teacher image size (0: its own)": 0, "Student": "mlp-small", "Student epochs": 1, "Seeds": 1,
                  "Choose T and α on my validation split": True, HUB_DATASET: "", "Image column (blank: detect)": "",
                  "Label column (blank: detect)": ""}
        start = [i for i, c in page.components.items() if c["props"].get("value") == "Start"
                 and any([i, "click"] in d["targets"] and len(d["inputs"]) == len(values) for d in page.dependencies)]
        check(len(start) == 1, f"{len(start)} Your data Start buttons")
        table = page.press(start[0], values)[3]  # T and α chosen on the validation split first (the box is ticked)
        check(bool(rows(table)), f"no results table: {table!r}")
        # a Hub dataset: the `datasets` package is installed, and offline the id is refused in one line
        check(importlib.util.find_spec("datasets") is not None, "the datasets package is not installed")
        try:
            page.press(start[0], {**values, "Your images (.zip)": None, HUB_DATASET: "nobody/no-such-dataset"})
        except SmokeError as error:
            check("cannot get hf:nobody/no-such-dataset" in str(error), f"not the Hub's one line: {error}")
        else:
            raise SmokeError("a Hub dataset id trained offline")
        return f"{len(rows(table))} rows of results on the uploaded zip, T and α chosen; a Hub id refused offline"

    def publish() -> str:
        try:
            page.press(page.button("Publish the KD student"), {"Repository (NAME or OWNER/NAME)": "kd-smoke",
                                                               "Private": True})
        except SmokeError as error:
            check("sign in with hugging face first" in str(error).lower(), f"not the sign-in refusal: {error}")
            return f"refused without a visitor's token: {error}"
        raise SmokeError("published without a visitor's token")

    return {"/distill": distill, "/class_board": class_board, "/predict": predict, "/predict_sketch": predict_sketch,
            "/soften": soften, "/sweep": sweep, "export ONNX (private)": export,
            "browser student (private)": browser_student,
            "Your data Start (private)": own_data, "Publish, signed out (private)": publish}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="kd-smoke-") as tmp:
        folder, port = Path(tmp), free_port()
        url = f"http://127.0.0.1:{port}"
        with open(folder / "app.log", "w") as log:
            try:
                process = serve(port, folder, log)
            except SmokeError as error:
                print(f"FAIL python app.py: {error}\n{(folder / 'app.log').read_text()[-3000:]}")
                return 1
            failures = 0
            try:
                client = Client(url, verbose=False)
                page = Page(url, client.session_hash)
                for name, call in calls(client, page, folder).items():
                    start = time.monotonic()
                    try:
                        line = f"ok   {name}: {call()}"
                    except Exception as error:  # noqa: BLE001 — any failure is that endpoint's line
                        failures += 1
                        line = f"FAIL {name}: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
                    print(f"{line} ({time.monotonic() - start:.1f} s)", flush=True)
            finally:
                process.terminate()
                process.wait(timeout=30)
        if failures:
            print(f"{failures} endpoint(s) failed; the server's log:\n{(folder / 'app.log').read_text()[-4000:]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
