"""Every parameter of every API endpoint answers a bad value with one line that names it and its range.

A table of bad values (wrong types, NaN, ±inf, null, empty and over-long strings) goes to every parameter of
/distill, /predict, /predict_sketch, /soften and /sweep through Gradio's HTTP API on loopback (raw JSON:
gradio_client cannot send NaN), the other parameters holding valid values. Before `CheckedBlocks` (kd_core.ui),
`temperature="abc"` got "The upstream Gradio app has raised an exception but has not enabled verbose error
reporting", and a Dropdown's refusal named no parameter.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from kd_core.serve import settings

ROOT = Path(__file__).resolve().parent.parent
DRESS = ROOT / "checkpoints" / "examples" / "3-dress-test-13.png"

# the allowed range each message must name, per endpoint and parameter; a new parameter needs a line here
PICTURE = r"image must be a picture uploaded to this server \(gradio_client: handle_file\(path\)\), or None"
GRID = r"{} must be comma-separated numbers like 1, 2, 4(, at most 200 characters)?"
RANGES = {
    "distill": {
        "temperature": r"temperature must be a number in \[0.5, 20\]",
        "alpha": r"alpha must be a number in \[0, 1\]",
        "epochs": r"epochs must be a whole number in \[1, 20\] in the app \(the command line allows more\)",
        "lr": r"lr must be one of 0.0001, 0.0003, 0.001, 0.003, 0.01",
        "student": r"student must be one of mlp-tiny, mlp-small, mlp-medium, cnn-tiny for fashion-mnist "
                   r"in the app",
        "train_size": r"train_size must be one of 0, 20000, 10000, 5000, 2000, 1000, 500 \(0: the whole "
                      r"training set\)",
        "hide_class": r"hide_class must be 'none' or one of T-shirt/top, Trouser, .*, Ankle boot",
        "seed": r"seed must be a whole number in \[0, 9223372036854775799\]",
        "dataset": r"dataset must be one of fashion-mnist here",
        "repeats": r"repeats must be a whole number in \[1, 8\] \(seeds trained together\)",
        "unlabeled": r"unlabeled must be one of 0, 5000, 20000, 50000 \(0: no transfer set\)",
        "methods": r"methods must be a list of one or more of kd, kd-std, dkd, dkd-std, dist, hint, cosine, "
                   r"each once",
        "dkd_beta": r"dkd_beta must be a number in \[0, 20\]",
        "feature_weight": r"feature_weight must be a number in \[0, 1\]",
        "class_code": r"class_code must be 3 to 32 characters of a-z, 0-9 and -, or empty for no class",
    },
    "predict": {"image": PICTURE},
    "predict_sketch": {"sketch": r"(sketch must be an image editor value \{'background': picture or None, "
                                 r"'layers': \[pictures\], 'composite': picture\}|The sketch is empty: draw "
                                 r"something first\.)"},
    "soften": {"image": PICTURE, "temperature": r"temperature must be a number in \(0, 100\]"},
    "sweep": {"temperatures": GRID.format("temperatures"), "alphas": GRID.format("alphas"),
              "epochs": r"epochs must be a whole number in \[1, 20\] in the app",
              "train_size": r"train_size must be one of 0, 20000, .* \(0: the whole training set\)",
              "repeats": r"repeats must be a whole number in \[1, 8\] \(seeds trained together\)"},
    "class_board": {"class_code": r"class_code must be 3 to 32 characters of a-z, 0-9 and -"},
}
# sent to every parameter: each is wrong for every one of them
BAD_VALUES = {"a list": [1], "an object": {"a": 1}, "NaN": math.nan, "inf": math.inf, "-inf": -math.inf,
              "null": None, "empty text": "", "a boolean": True, "over-long text": "9" * 100_000}
TYPED_BAD_VALUES = {"text for a number": "abc", "a number for text": 42}
ACCEPTED = {("predict", "image", "null"), ("soften", "image", "null"),  # None clears a picture's outputs
            ("distill", "seed", "a number for text"), ("soften", "temperature", "a number for text"),
            ("distill", "repeats", "a number for text"), ("distill", "unlabeled", "a number for text"),
            ("sweep", "repeats", "a number for text"),  # 42
            ("distill", "class_code", "empty text"),  # no class
            ("distill", "class_code", "text for a number"), ("class_board", "class_code", "text for a number")}  # abc
# a few values of the right type out of range, each with the end of its message
OUT_OF_RANGE = [
    ("distill", "temperature", 0, "got 0"), ("distill", "temperature", 50, "got 50"),
    ("distill", "alpha", 1.5, "got 1.5"), ("distill", "epochs", 2.5, "got 2.5"),
    ("distill", "epochs", 21, "got 21"), ("distill", "lr", 0.005, "got 0.005"),
    ("distill", "train_size", 300, "got 300"), ("distill", "seed", -1, "got -1"),
    ("distill", "seed", 2**64, f"got {2**64}"), ("distill", "dataset", "imagenet", "got 'imagenet'"),
    ("distill", "hide_class", "Banana", "got 'Banana'"), ("distill", "feature_weight", 1.5, "got 1.5"),
    ("soften", "temperature", 0, "got 0"), ("soften", "temperature", 101, "got 101"),
    ("sweep", "epochs", 0, "got 0"),
    ("distill", "class_code", "ab", "got 'ab'"), ("distill", "class_code", "../../etc", "got '../../etc'"),
    ("class_board", "class_code", "Physics", "got 'Physics'"), ("class_board", "class_code", "a" * 33, "got 'aaa"),
    ("class_board", "class_code", "a b c", "got 'a b c'"), ("class_board", "class_code", "x/../y", "got 'x/../y'"),
]


@pytest.fixture(scope="module")
def server(server):
    """conftest's app, its URL without the trailing slash (the tests build raw API URLs on it)."""
    return server.rstrip("/")


@pytest.fixture(scope="module")
def valid(server) -> dict[str, dict]:
    """Valid values for every parameter: tiny runs, should a bad value ever slip through."""
    with open(DRESS, "rb") as f:
        [path] = httpx.post(f"{server}/gradio_api/upload", files=[("files", (DRESS.name, f))]).json()
    picture = {"path": path, "meta": {"_type": "gradio.FileData"}}
    return {"distill": {"temperature": 2.0, "alpha": 0.5, "epochs": 1, "lr": 1e-3, "student": "mlp-tiny",
                        "train_size": 500, "hide_class": "none", "seed": 0, "dataset": "fashion-mnist",
                        "repeats": 1, "unlabeled": 0, "methods": ["kd"], "dkd_beta": 8.0,
                        "feature_weight": 0.25, "class_code": ""},
            "predict": {"image": picture},
            "predict_sketch": {"sketch": {"background": None, "layers": [], "composite": picture}},
            "soften": {"image": picture, "temperature": 4.0},
            "sweep": {"temperatures": "2", "alphas": "0.5", "epochs": 1, "train_size": 500, "repeats": 1},
            "class_board": {"class_code": "api-values"}}



def call(server: str, endpoint: str, values: list) -> tuple[str, object]:
    """One call through Gradio's HTTP API ("complete" or "error", and the data or the error message)."""
    body = json.dumps({"data": values})  # allow_nan: NaN and Infinity as JavaScript would send them
    posted = httpx.post(f"{server}/gradio_api/call/{endpoint}", content=body,
                        headers={"content-type": "application/json"}, timeout=30)
    posted.raise_for_status()
    with httpx.stream("GET", f"{server}/gradio_api/call/{endpoint}/{posted.json()['event_id']}",
                      timeout=120) as events:
        kind = None
        for line in events.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind in ("complete", "error"):
                data = json.loads(line.removeprefix("data: "))
                return kind, (data["error"] if kind == "error" and isinstance(data, dict) else data)
    raise AssertionError(f"{endpoint}: the event stream ended without a result")


def table() -> list[tuple[str, str, str, object, str]]:
    """(endpoint, parameter, what is wrong, value, the message's end) for every bad value of every one."""
    rows = []
    for endpoint, ranges in RANGES.items():
        for parameter in ranges:
            bad = {**BAD_VALUES, **TYPED_BAD_VALUES}
            for what, value in bad.items():
                if (endpoint, parameter, what) not in ACCEPTED:
                    rows.append((endpoint, parameter, what, value, "got "))
    rows += [(endpoint, parameter, "out of range", value, end)
             for endpoint, parameter, value, end in OUT_OF_RANGE]
    return rows


def test_the_table_covers_every_parameter_of_every_endpoint(server):
    """The app's checks and this table list the running app's API, parameter for parameter, in order."""
    api = Client(server, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]
    parameters = {name.lstrip("/"): [p["parameter_name"] for p in info["parameters"]]
                  for name, info in api.items()}
    checks = settings.api_checks(Path(app.demo.GRADIO_CACHE))
    assert {name: list(names) for name, (names, _) in checks.items()} == parameters
    assert {name: list(ranges) for name, ranges in RANGES.items()} == parameters


@pytest.mark.parametrize("endpoint, parameter, what, value, end", table(),
                         ids=lambda x: x if isinstance(x, str) and len(x) < 30 else None)
def test_a_bad_value_gets_one_line_naming_the_parameter_and_its_range(server, valid, endpoint, parameter,
                                                                      what, value, end):
    values = {**valid[endpoint], parameter: value}
    kind, message = call(server, endpoint, list(values.values()))
    assert kind == "error", f"{endpoint} accepted {parameter} = {what}: {message}"
    assert isinstance(message, str) and "\n" not in message and len(message) <= 400, message
    assert re.fullmatch(f"{RANGES[endpoint][parameter]}.*", message), message
    assert end in message, message
    for internal in ("Traceback", str(ROOT), "site-packages", "upstream Gradio app"):
        assert internal not in message, message


def test_the_issue_example_through_gradio_client(server):
    client = Client(server, verbose=False)
    with pytest.raises(AppError, match=r"^temperature must be a number in \[0.5, 20\]; got 'abc'$"):
        client.predict(temperature="abc", api_name="/distill")


def test_a_file_on_the_server_that_no_client_uploaded_is_refused(server):
    """A picture's path must lie in Gradio's upload folder: else any image on the server could be read back
    (as its 28×28 preview) by naming its path."""
    for picture in ({"path": str(DRESS)}, {"path": str(DRESS), "meta": {"_type": "gradio.FileData"}},
                    {"path": "/etc/hostname"}, {"url": "http://127.0.0.1:1/x.png"}):
        kind, message = call(server, "predict", [picture])
        assert (kind, message.split("; got")[0]) == ("error", PICTURE.replace("\\", "")), message


def test_too_few_values_is_a_clear_error(server):
    assert call(server, "soften", [None]) == ("error", "/soften takes 2 values (image, temperature); got 1")
