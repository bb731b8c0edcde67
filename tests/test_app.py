"""The app, driven the way a visitor's browser or a gradio_client script drives it: an in-process server
on a free port, real Fashion-MNIST, the shipped teacher, tiny runs (2,000 images, 1 epoch)."""

import csv
import gc
import json
import os
import subprocess
import sys
import time
import urllib.request
import weakref
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status
from support import finished_session, free_port, own_top_k, wait_for

import app
from kd_core import ui
from kd_core.config import RunConfig
from kd_core.engine.roles import METHODS, NAMES
from kd_core.engine.train import run
from kd_core.models import checkpoints, predict
from kd_core.serve import settings
from kd_core.teacher.logits import teacher_logits
from kd_core.ui import common, dark_knowledge, train
from kd_core.ui import predict as predict_tab
from kd_core.views import joined, run_view, session
from kd_core.views import pictures as picture_views

ROOT = Path(__file__).resolve().parent.parent
DRESS = str(ROOT / "checkpoints" / "examples" / "3-dress-test-13.png")
TINY = {"temperature": 2.0, "alpha": 0.5, "epochs": 1, "train_size": 2000, "repeats": 2}
SERVER_HAS_JOB = {Status.IN_QUEUE, Status.PROCESSING, Status.ITERATING, Status.PROGRESS}


@pytest.fixture
def client(server):
    return Client(server, verbose=False)




def label_probabilities(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def method_output(method: str) -> int:
    """Where /predict puts a method's student: Hinton KD's at 4, as always; every other method's after the
    students sentence (5), in kd_core.engine.roles.METHODS order."""
    return 4 if method == "kd" else 6 + [m for m in METHODS if m != "kd"].index(method)


def live_students() -> set[session.SessionStudents]:
    """The sessions' students this process still holds (not those app.RUNS keeps to replay a run)."""
    kept = {id(getattr(item, "students", None)) for items in app.RUNS.kept_items() for item in items}
    return {o for o in gc.get_objects() if type(o) is session.SessionStudents and id(o) not in kept}


def rss_mb() -> float:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


# ------------------------------------------------------------------------------------ the running app

def test_api_names_and_distill_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/distill", "/predict", "/predict_sketch", "/soften"} <= set(api)
    names = [p["parameter_name"] for p in api["/distill"]["parameters"]]
    assert names == ["temperature", "alpha", "epochs", "lr", "student", "train_size", "hide_class", "seed",
                     "dataset", "repeats", "unlabeled", "methods", "dkd_beta", "feature_weight", "class_code"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in api["/distill"]["parameters"]}
    cfg = RunConfig()
    assert (defaults["temperature"], defaults["alpha"], defaults["epochs"], defaults["repeats"]) == (
        cfg.temperature, cfg.alpha, cfg.epochs, cfg.repeats)
    assert defaults["class_code"] == ""  # the last parameter, default no class: older calls work unchanged


def test_distill_streams_updates_then_results_and_files(client, fashion, monkeypatch):
    monkeypatch.setattr(joined, "VIEW_INTERVAL_S", 0.0)  # every view sent (a busy page gets the newest only)
    job = client.submit(**TINY, api_name="/distill")
    updates = list(job)
    # preparing, Started, Evaluated(0), Step(s) and the live evaluations, Finished
    assert len(updates) >= 6
    statuses = [u[0] for u in updates]
    assert "loading the data" in statuses[0] and "before training" in statuses[2]
    assert "2 seed(s)" in statuses[1]
    assert "done: " in statuses[-1] and "seeds" in statuses[-1] and '<progress max="100" value="100">' in statuses[-1]
    # the x range and legend go once, with the first curve; later frames are plain values (an update per view
    # costs Gradio a component per visitor)
    shaped = [u[1] for u in updates if isinstance(u[1], dict) and u[1].get("__type__") == "update" and len(u[1]) > 1]
    assert len(shaped) == 1
    assert shaped[0]["x_lim"] == [0, 8]  # 2000 images / batch 256 = 8 steps: the x range is fixed up front
    assert shaped[0]["colors_in_legend"] == ["CE", "KD"]  # the legend names this run's students only
    losses = updates[-1][1]
    drawn = {row[2] for row in losses["data"] if isinstance(row[1], float) and row[1] == row[1]}
    assert drawn == {"CE", "KD"}  # (every other student name is a placeholder row, see plots)
    accuracy = updates[-1][2]  # the accuracy curves with their seed bands: a Vega-Lite spec the browser draws
    assert accuracy["type"] == "altair"
    spec = json.loads(accuracy["plot"])
    assert {row["student"] for row in spec["data"]["values"]} == {"CE student", "KD student"}
    # the table appears at the end only: the first update hides a previous run's, none before the end shows it
    assert updates[0][3]["visible"] is False and updates[-1][3]["visible"] is True
    assert not any(isinstance(u[3], dict) and u[3].get("visible") for u in updates[1:-1])

    table = updates[-1][3]["value"]
    assert table["headers"] == ["model", "test acc. (%)", "per seed (%)", "validation acc. (%)", "params",
                                "size (MB)", "CPU ms/img", "agrees w/ teacher (%)"]
    assert [row[0] for row in table["data"]] == ["teacher", "CE student", "KD student"]
    teacher_row, ce_row, kd_row = table["data"]
    shipped = teacher_logits(checkpoints.default_teacher_path("fashion-mnist"), fashion)
    assert teacher_row[1] == f"{100 * shipped.test_acc:.2f}"
    assert ce_row[4] == kd_row[4] == 101_770 and teacher_row[7] == 100.0
    kd_seeds = [float(a) for a in kd_row[2].split(", ")]
    assert len(kd_seeds) == 2 and all(50 < a < 95 for a in kd_seeds)
    assert float(kd_row[1].split(" ± ")[0]) == pytest.approx(sum(kd_seeds) / 2, abs=0.06)

    with open(updates[-1][4]["value"], newline="") as f:
        log = list(csv.DictReader(f))
    evaluations = [r for r in log if r["event"] == "evaluation"]
    assert len(evaluations) == 9  # before training, then 8 steps (fewer than 12 points): every step
    assert {"ce_acc_seed_0", "ce_acc_seed_1", "kd_acc_seed_0", "kd_acc_seed_1"} <= log[0].keys()
    assert float(evaluations[-1]["kd_acc"]) == pytest.approx(
        (float(evaluations[-1]["kd_acc_seed_0"]) + float(evaluations[-1]["kd_acc_seed_1"])) / 2)

    kd_student = predict.load_classifier(updates[-1][5]["value"], "KD student")  # the first seed's
    accuracy = (kd_student.logits(fashion.test_images).argmax(1) == fashion.test_labels).float().mean()
    assert 100 * accuracy.item() == pytest.approx(kd_seeds[0], abs=0.06)


def test_each_session_predicts_with_its_own_students(server):
    visitor, other = Client(server, verbose=False), Client(server, verbose=False)
    before = visitor.predict(handle_file(DRESS), api_name="/predict")
    assert "default pair" in before[5]
    list(visitor.submit(**TINY, api_name="/distill"))
    after = visitor.predict(handle_file(DRESS), api_name="/predict")
    untouched = other.predict(handle_file(DRESS), api_name="/predict")
    assert "this session's run: T=2, α=0.5" in after[5]
    assert label_probabilities(after[4]) != label_probabilities(before[4])  # the session's own KD student
    assert label_probabilities(after[2]) == label_probabilities(before[2])  # the teacher never changes
    assert untouched[2:] == before[2:]  # the other visitor still sees the default pair


def test_stop_cancels_a_run_mid_way_and_the_app_keeps_serving(client):
    job = client.submit(temperature=4.0, alpha=0.9, epochs=20, train_size=0, student="mlp-medium",
                        api_name="/distill")  # minutes of training if nothing stopped it
    received = 0
    for _ in job:
        received += 1
        if received == 4:  # preparing, Started, Evaluated(0), the first Step: training is under way
            break
    assert run_view.active_runs() == 1
    job.cancel()
    assert wait_for(lambda: run_view.active_runs() == 0, seconds=10), "the training loop kept running"
    assert wait_for(job.done, seconds=10)
    assert all("done" not in output[0] for output in job.outputs())
    result = client.predict(handle_file(DRESS), api_name="/predict")
    assert result[2]["label"] == "Dress"


def test_a_client_that_leaves_frees_its_students_and_run_files(server, monkeypatch):
    """Gradio keeps a closed session's gr.State for an hour; the app's unload handler frees it at once."""
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")  # the server notices a gone client in ~0.5 s
    before = live_students()
    client = Client(server, verbose=False)
    list(client.submit(**TINY, api_name="/distill"))
    [students] = live_students() - before
    run_dir, released = students.run_dir, weakref.ref(students)
    del students
    assert (run_dir / "kd-student.safetensors").is_file()
    client.close()
    assert wait_for(lambda: not run_dir.exists()), "the session's run files outlived its client"
    # (reference cycles of the finished event may hold them until the collector runs)
    assert wait_for(lambda: gc.collect() >= 0 and released() is None), "the session's students outlived its client"


def test_run_files_go_with_the_students_however_they_are_dropped():
    """Beyond state_session_capacity Gradio forgets a session without calling its delete_callback."""
    cfg = settings.make_config(**TINY, lr=1e-3, student="mlp-tiny", hide_class="none", seed=0)
    *_, last = run_view.live_run(cfg)
    run_dir = last.students.run_dir
    assert run_dir.is_dir()
    del last  # the students' last reference
    assert not run_dir.exists()


def test_gradio_deletes_its_copies_of_served_files(tmp_path, monkeypatch):
    """Gradio copies each file it serves (a run's CSV and student, an upload, a preview) into its cache.
    Before CACHE_CLEANUP it kept every copy until the server stopped: +2 files and 0.41 MB per run, +2 files
    per new picture. The page has them deleted an hour after they were made; this page after 3 s, checked
    every second. The example pictures stay."""
    every_s, older_than_s = app.demo.delete_cache
    assert older_than_s >= 3600 and every_s <= 3600  # a finished run stays downloadable for an hour
    cache = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    page = ui.build(app.SERVICES, delete_cache=(1, 3))
    examples = cached_files(cache)
    assert len(examples) == len(common.EXAMPLES)
    from PIL import Image, ImageDraw

    picture = tmp_path / "new-picture.png"  # a picture the cache has not seen
    drawing = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(drawing).rectangle((90, 20, 190, 260), fill="black")
    drawing.save(picture)
    page.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **app.LAUNCH_OPTIONS)
    try:
        client = Client(page.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
        final = list(client.submit(**TINY, api_name="/distill"))[-1]
        client.predict(handle_file(str(picture)), api_name="/predict")
        assert Path(final[5]["value"]).stat().st_size > 400_000  # the student, downloaded after the run
        served = cached_files(cache) - examples
        assert sorted(p.suffix for p in served) == [".csv", ".png", ".safetensors", ".webp"]
        assert wait_for(lambda: cached_files(cache) == examples), sorted(cached_files(cache) - examples)
    finally:
        page.close()


def test_an_upload_gradio_deleted_is_a_clear_error(tmp_path):
    gone = {"path": str(tmp_path / "deleted-an-hour-later.png"), "orig_name": "coat.png"}
    for handler in (lambda: predict_tab.predict_upload(gone, None), lambda: dark_knowledge.soften(gone, 4.0)):
        with pytest.raises(gr.Error, match="no longer on the server .*: upload it again"):
            handler()


def test_predict_shows_what_the_models_see(client, fashion):
    preview, steps, teacher, ce, kd, source, *methods = client.predict(handle_file(DRESS), api_name="/predict")
    assert steps == "What the models see: already 28×28 on a dark background: used as is."
    assert [len(label["confidences"]) for label in (teacher, ce, kd)] == [common.TOP_K] * 3
    expected = predict.default_teacher().probabilities(fashion.test_images[13])
    assert label_probabilities(teacher)["Dress"] == pytest.approx(expected[3].item(), abs=1e-6)
    assert predict.open_image(preview).size == (224, 224)  # 28×28 enlarged 8× with sharp pixels


def test_predict_names_its_outputs_after_their_models(client):
    returns = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/predict"]["returns"]
    names = [output["label"] for output in returns]
    assert names[2:5] == ["teacher", "CE student", "KD student"]  # (the Markdowns have no label)
    assert [names[method_output(method)] for method in METHODS] == [NAMES[method] for method in METHODS]
    assert len(names) == 5 + len(METHODS)


@pytest.mark.parametrize("methods", [["kd", "dist"], ["dkd"]], ids="+".join)
def test_predict_shows_the_student_of_each_method_the_run_trained(client, fashion, methods):
    """Issue 14: each method's student (the first seed's) answers at its own method's output, named after it,
    exactly as that student alone predicts; the outputs of methods the run did not train stay empty. Without
    Hinton KD in the run, nothing answers as the KD student."""
    tiny = {**TINY, "repeats": 1, "train_size": 1000}
    list(client.submit(**tiny, methods=methods, api_name="/distill"))
    outputs = client.predict(handle_file(DRESS), api_name="/predict")
    assert len(outputs) == 5 + len(METHODS)
    expected = run(RunConfig(**tiny, methods=tuple(methods)))  # the same run, outside the app
    for method in METHODS:
        shown = outputs[method_output(method)]
        if method not in methods:
            assert not shown, method
            continue
        own = own_top_k(expected.stack.module(0, expected.column(method)), fashion, fashion.test_images[13])
        assert label_probabilities(shown) == pytest.approx(own, abs=1e-4), method
    assert label_probabilities(outputs[3]) == pytest.approx(
        own_top_k(expected.stack.module(0, 0), fashion, fashion.test_images[13]), abs=1e-4)


def test_session_students_are_named_by_their_method(fashion):
    """A run without Hinton KD: its pair's KD student (the first method's, saved and exported) is the DKD student
    and is named so; the Predict tab shows the teacher, CE and DKD students, and only DKD's method Label."""
    result, students = finished_session(RunConfig(train_size=1000, epochs=1, repeats=1, methods=("dkd",)))
    assert list(students.methods) == ["dkd"] and students.kd is students.methods["dkd"]
    assert [students.ce.name, students.kd.name] == ["CE student", "DKD student"]
    dress = predict.open_image(DRESS)
    view = picture_views.predict_picture(dress, students)
    assert list(view.predictions) == ["teacher", "ce", "dkd"]
    assert view.predictions["dkd"] == pytest.approx(
        own_top_k(result.stack.module(0, 1), fashion, fashion.test_images[13]), abs=1e-6)
    shown = predict_tab.show_students(students)
    assert {method: label.visible for method, label in zip(predict_tab.PREDICT_METHODS, shown,
                                                           strict=True)} == {m: m == "dkd" for m in METHODS}
    assert [label.visible for label in predict_tab.show_students(None)] == [m == "kd"
                                                                           for m in predict_tab.PREDICT_METHODS]
    assert list(picture_views.predict_picture(dress, None).predictions) == ["teacher", "ce", "kd"]  # the shipped pair


def test_predict_sketch_classifies_a_drawing(client, tmp_path):
    from PIL import Image, ImageDraw

    drawing = Image.new("RGBA", (280, 280), (0, 0, 0, 0))
    ImageDraw.Draw(drawing).rectangle((100, 20, 180, 260), fill=(0, 0, 0, 255))  # a tall dark shape
    path = tmp_path / "sketch.png"
    drawing.save(path)
    sketch = {"background": None, "layers": [], "composite": handle_file(str(path))}
    preview, steps, teacher, *_ = client.predict(sketch, api_name="/predict_sketch")
    assert steps.startswith("What the models see: transparent parts made white → grayscale → inverted")
    assert len(teacher["confidences"]) == common.TOP_K


def test_dark_knowledge_softens_the_teacher(client):
    preview, plain, softened, caption = client.predict(handle_file(DRESS), 8.0, api_name="/soften")
    p1 = dict(plain["value"]["data"])
    p8 = dict(softened["value"]["data"])
    assert list(p1) == list(predict.default_teacher().classes)
    assert sum(p1.values()) == pytest.approx(1, abs=1e-5) and sum(p8.values()) == pytest.approx(1, abs=1e-5)
    assert max(p8.values()) < max(p1.values())  # softer: the top class gives probability to the others
    assert "T = 8" in softened["title"] and "bits at T = 8" in caption


@pytest.mark.parametrize("endpoint, args, kwargs, message", [
    ("/distill", (), {"epochs": 50}, r"epochs must be a whole number in \[1, 20\] in the app .*; got 50"),
    ("/distill", (), {"temperature": 0}, r"temperature must be a number in \[0.5, 20\]; got 0"),
    ("/distill", (), {"alpha": 1.5}, r"alpha must be a number in \[0, 1\]; got 1.5"),
    ("/distill", (), {"hide_class": "Banana"}, "hide_class must be 'none' or one of T-shirt/top, Trouser"),
    ("/distill", (), {"student": "resnet-huge"}, "student must be one of mlp-tiny, .* got 'resnet-huge'"),
    ("/distill", (), {"dataset": "imagenet"}, "dataset must be one of fashion-mnist here; got 'imagenet'"),
    ("/distill", (), {"seed": -1}, r"seed must be a whole number in \[0, \d+\]; got -1"),
    ("/predict_sketch", ({"background": None, "layers": [], "composite": None},), {},
     "The sketch is empty: draw something first."),
    ("/soften", (handle_file(DRESS), 0), {}, r"temperature must be a number in \(0, 100\]; got 0"),
    ("/soften", (handle_file(DRESS), "hot"), {}, r"temperature must be a number in \(0, 100\]; got 'hot'"),
])
def test_bad_input_is_a_clear_error(client, endpoint, args, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, **kwargs, api_name=endpoint)


def test_non_image_upload_is_a_clear_error_and_the_app_keeps_serving(client, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is not a picture")
    with pytest.raises(AppError, match="holiday.png is not an image this app can read"):
        client.predict(handle_file(str(fake)), api_name="/predict")
    blank = tmp_path / "white.png"
    from PIL import Image

    Image.new("RGB", (64, 64), "white").save(blank)
    with pytest.raises(AppError, match="the picture is blank"):
        client.predict(handle_file(str(blank)), api_name="/predict")
    assert client.predict(handle_file(DRESS), api_name="/predict")[2]["label"] == "Dress"


def test_readme_api_example_runs(server, tmp_path, monkeypatch, capsys):
    """docs/api.md's gradio_client example, run as written against this server."""
    section = (ROOT / "docs/api.md").read_text()
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert 'Client("http://127.0.0.1:7860/")' in code
    from PIL import Image, ImageDraw

    drawing = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(drawing).rectangle((90, 20, 190, 260), fill="black")
    drawing.save(tmp_path / "drawing.png")
    monkeypatch.chdir(tmp_path)
    code = code.replace("http://127.0.0.1:7860/", server).replace('handle_file("checkpoints/',
                                                                   f'handle_file("{ROOT}/checkpoints/')
    scope: dict = {}
    exec(compile(code, "docs/api.md", "exec"), scope)
    assert [row[0] for row in scope["table"]["value"]["data"]] == ["teacher", "CE student", "KD student"]
    assert scope["teacher"]["label"] == "Dress"
    assert "bits at T = 8" in scope["caption"]
    assert "done: " in capsys.readouterr().out


# ------------------------------------------------------------------------------- session logic

def test_make_config_maps_widgets_and_caps_the_run():
    cfg = settings.make_config(temperature=3.5, alpha=0.6, epochs=4.0, lr=3e-4, student="mlp-tiny",
                              train_size=2000.0, hide_class="Dress", seed=7.0)
    assert cfg == RunConfig().replace(temperature=3.5, alpha=0.6, epochs=4, lr=3e-4, student="mlp-tiny",
                                      train_size=2000, hide_class=3, seed=7,
                                      max_seconds=settings.DEFAULT_MAX_RUN_SECONDS)
    assert settings.hidden_class_name(cfg) == "Dress"


@pytest.mark.parametrize("change, message", [
    ({"epochs": 21}, r"epochs must be a whole number in \[1, 20\] in the app"),
    ({"epochs": 2.5}, r"epochs must be a whole number in \[1, 20\] .*; got 2.5"),
    ({"seed": "x"}, "seed must be a whole number"),
    ({"temperature": 0.0}, r"temperature must be a number in \[0.5, 20\]"),
    ({"alpha": -0.1}, r"alpha must be a number in \[0, 1\]"),
    ({"student": "resnet-huge"}, "student must be one of mlp-tiny, mlp-small, mlp-medium, cnn-tiny for "
                                 "fashion-mnist in the app; got 'resnet-huge'"),
    ({"student": "resnet18-cifar"}, "student must be one of .* for fashion-mnist"),
    ({"hide_class": "Banana"}, "hide_class must be 'none' or one of T-shirt/top"),
])
def test_make_config_rejects_bad_values(change, message):
    widgets = {"temperature": 4.0, "alpha": 0.9, "epochs": 3, "lr": 1e-3, "student": "mlp-small",
               "train_size": 0, "hide_class": "none", "seed": 0, **change}
    with pytest.raises(ValueError, match=message):
        settings.make_config(**widgets)


def test_run_time_cap_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("KD_MAX_RUN_SECONDS", "42")
    cfg = settings.make_config(temperature=4.0, alpha=0.9, epochs=3, lr=1e-3, student="mlp-small",
                              train_size=0, hide_class="none", seed=0)
    assert cfg.max_seconds == 42.0


@pytest.mark.parametrize("name", list(settings.PRESETS))
def test_presets_are_valid_configs_the_widgets_can_show(name):
    cfg = settings.preset(name).validate()
    *values, student, train_size, hide_class, teacher = train.apply_preset(name)
    assert values == [cfg.temperature, cfg.alpha, cfg.epochs, cfg.lr, cfg.seed, cfg.repeats, cfg.unlabeled,
                      list(cfg.methods), cfg.dkd_beta, cfg.feature_weight, "fashion-mnist"]
    assert cfg.unlabeled in settings.UNLABELED_SIZES
    assert (student.value, train_size.value, hide_class.value) == (cfg.student, cfg.train_size,
                                                                   settings.hidden_class_name(cfg))
    assert student.value in [value for _, value in student.choices]
    assert hide_class.value in [value for _, value in hide_class.choices]
    assert teacher.startswith("Fashion-MNIST teacher: cnn-teacher, 390,890 parameters, 92.1% test accuracy")
    assert cfg.epochs <= settings.MAX_APP_EPOCHS and cfg.lr in settings.LEARNING_RATES
    assert cfg.train_size in settings.TRAIN_SIZES


# ------------------------------------------------------------------------------ start-up

def test_python_app_py_serves_the_page_quickly(tmp_path):
    """`python app.py` in a fresh process answers within 30 s (the target is ~20 s on 2 cores)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp_path / "app.log"
    start = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        served = wait_for(lambda: page_answers(f"http://127.0.0.1:{port}/"), seconds=30)
        print(f"python app.py served the page after {time.monotonic() - start:.1f} s")
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert served, log.read_text()


def test_import_app_starts_no_server_and_loads_no_data():
    code = ("import app, kd_core.data.datasets as d; assert getattr(app.demo, 'server', None) is None; "
            "assert d._load_cached.cache_info().currsize == 0; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"




def cached_files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


def page_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# ------------------------------------------------------------------------------ the browser

@pytest.mark.browser
def test_screenshot_of_each_tab(server, screenshots):
    """Headless Chromium runs a short training, draws a sketch, and saves one PNG per tab."""
    paths = screenshots.capture(server, ROOT / "screenshots")
    assert [p.name for p in paths] == ["first-screen-1280.png", "first-screen-390.png", "train.png", "methods.png",
                                       "predict-methods.png", "hidden-class-bias.png", "predict.png",
                                       "predict-sketch.png", "dark-knowledge.png", "sweep.png"]
    assert all(p.stat().st_size > 20_000 for p in paths)


def start_a_long_run(browser, server: str, screenshots):
    """A new page that has started 20 epochs of 55,000 images and is training; returns the page."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=screenshots.VIEWPORT)
    page.goto(server)
    screenshots.pick_preset(page, "Full data: no gain here")
    screenshots.open_group(page, "Students")
    expect(page.get_by_label("number input for Epochs")).to_have_value("3")
    epochs = page.get_by_label("number input for Epochs")
    summary = screenshots.group(page, "Students")
    # the group's summary is made on the server from the value it received: the page has the 20 before Start. Twice
    # in CI the typed 20 was lost (the summary kept the preset's "3 epochs"): a late update of the preset's cascade
    # can still overwrite it, so the value is typed again until the server has it (noted in the closing note)
    for _ in range(3):
        epochs.fill("20")
        epochs.press("Enter")
        try:
            expect(summary).to_contain_text("20 epochs", timeout=20_000)
            break
        except AssertionError:
            continue
    expect(summary).to_contain_text("20 epochs")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("epoch 1/20", timeout=60_000)
    assert run_view.active_runs() == 1
    return page


@pytest.mark.browser
def test_stop_button_cancels_a_run_in_the_browser(server, screenshots):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        try:
            page = start_a_long_run(browser, server, screenshots)
            status = page.locator(".kd-status")
            page.get_by_role("button", name="Stop", exact=True).click()
            expect(status).to_contain_text("Stopped")
            assert wait_for(lambda: run_view.active_runs() == 0, seconds=10), "training kept running"
            expect(page.get_by_text("Results on the 10,000 test images")).not_to_be_visible()
        finally:
            browser.close()


@pytest.mark.browser
def test_closing_the_tab_mid_run_stops_training_and_the_next_visitor_trains(server, screenshots, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")  # the server notices a closed tab in ~0.5 s
    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        try:
            page = start_a_long_run(browser, server, screenshots)
            page.close()  # the visitor leaves mid-run: Gradio closes the run's generator at its next update
            assert wait_for(lambda: run_view.active_runs() == 0, seconds=10), "training outlived the tab"

            before = live_students()
            page = browser.new_page(viewport=screenshots.VIEWPORT)  # the next visitor, at once
            page.goto(server)
            screenshots.pick_preset(page, screenshots.TRAIN_PRESET)  # 1,000 images
            screenshots.open_group(page, "Students")
            expect(page.get_by_label("number input for Epochs")).to_have_value("20")
            page.get_by_label("number input for Epochs").fill("2")
            page.get_by_label("number input for Epochs").press("Enter")
            page.get_by_role("button", name="Start", exact=True).click()
            expect(page.locator(".kd-status")).to_contain_text("done:", timeout=60_000)
            expect(page.get_by_text("Results on the 10,000 test images")).to_be_visible()
            # why beside the verdict: agreement, calibration, per-class gains, and the reliability diagram drawn
            expect(page.locator("#why")).to_contain_text("Calibration (expected calibration error, 15 bins")
            expect(page.locator("#reliability canvas")).to_be_visible()
            [students] = live_students() - before
            run_dir = students.run_dir
            del students
            page.close()  # and leaves too: its students and their files are freed
            assert wait_for(lambda: not run_dir.exists()), "the closed tab's run files were kept"
        finally:
            browser.close()


def test_sweep_streams_a_heatmap_and_the_grid(client):
    job = client.submit("4, 1", "0.5, 0.9", 1, 2000, 2, api_name="/sweep")
    updates = list(job)
    assert len(updates) >= 3
    status, heatmap, by_t, by_alpha, table = updates[-1]
    assert status.startswith("done in") and "2 seeds" in status and "best on validation" in status
    assert heatmap["type"] == "matplotlib" and heatmap["plot"].startswith("data:image/")
    assert table["visible"] is True
    assert table["value"]["headers"] == ["T", "alpha", "accuracy", "gain", "gain_low", "gain_high", "wins",
                                         "beyond_noise", "seeds"]
    rows = table["value"]["data"]
    assert [row[:2] for row in rows] == [[1.0, 0.5], [1.0, 0.9], [4.0, 0.5], [4.0, 0.9]]
    assert all(40 < row[2] <= 100 for row in rows)
    # the gain's 95 % interval (points): beyond the noise exactly when it excludes 0
    for _, _, _, gain, low, high, _, beyond, _ in rows:
        assert low < gain < high and beyond == (low > 0 or high < 0)
    assert [row[1] for row in by_t["data"]] == ["α=0.5", "α=0.9", "α=0.5", "α=0.9"]  # a line per α


@pytest.mark.parametrize("temperatures, alphas, message", [
    ("1, x", "0.5", "temperatures must be comma-separated numbers"),
    ("0", "0.5", r"temperature must be a number in \(0, 100\]; got 0.0"),
    ("1, 2, 3, 4, 5, 6", "0.1, 0.2, 0.3, 0.4, 0.5", "at most 25 KD students"),
    ("", "0.5", "temperatures must be comma-separated numbers"),
])
def test_bad_sweep_grids_are_clear_errors(client, temperatures, alphas, message):
    with pytest.raises(AppError, match=message):
        client.predict(temperatures, alphas, 1, 2000, 1, api_name="/sweep")


def test_ten_sessions_at_once_get_their_own_results(server, fashion, capfd):
    """4 visitors train (different T), 3 predict, 3 start a long run and cancel it, all at once."""
    from concurrent.futures import ThreadPoolExecutor

    from kd_core.engine.train import run

    def trainer(T: float):
        client = Client(server, verbose=False)
        final = list(client.submit(**{**TINY, "temperature": T}, api_name="/distill"))[-1]
        kd_acc = float(final[3]["value"]["data"][2][1].split(" ± ")[0])  # mean over the seeds
        described = client.predict(handle_file(DRESS), api_name="/predict")[5]
        return T, kd_acc, described

    def predictor(_):
        return Client(server, verbose=False).predict(handle_file(DRESS), api_name="/predict")[2]["label"]

    def canceller(_):
        job = Client(server, verbose=False).submit(epochs=20, train_size=0, api_name="/distill")
        # cancel once the server has the run (queued or training): a cancel sent earlier can race the
        # client's own submission and leave the run going
        assert wait_for(lambda: job.status().code in SERVER_HAS_JOB, seconds=60)
        job.cancel()
        return wait_for(job.done, seconds=60)

    temperatures = [1.0, 2.0, 4.0, 8.0]
    with ThreadPoolExecutor(10) as pool:
        trained = pool.map(trainer, temperatures)
        predicted = pool.map(predictor, range(3))
        cancelled = pool.map(canceller, range(3))
        trained, predicted, cancelled = list(trained), list(predicted), list(cancelled)
    assert predicted == ["Dress"] * 3 and all(cancelled)
    for T, kd_acc, described in trained:
        expected = run(RunConfig(**{**TINY, "temperature": T}))  # the same run, outside the app
        assert kd_acc == pytest.approx(100 * expected.kd_acc, abs=0.01), T
        assert f"this session's run: T={T:g}," in described
    assert wait_for(lambda: run_view.active_runs() == 0, seconds=30)
    logged = "".join(capfd.readouterr())
    assert "Traceback" not in logged and "Error" not in logged, logged  # the server logged no exception


@pytest.mark.slow
def test_memory_stays_bounded_over_50_runs(server, monkeypatch):
    """50 tiny runs, each from a new client that then leaves: every session's students are freed when its
    client goes, and resident memory plateaus. Before the unload handler, Gradio kept each session's students
    for an hour after it closed and resident memory grew about 11 MB per run (+454 MB over runs 10-50)."""
    monkeypatch.setenv("GRADIO_HEARTBEAT_INTERVAL", "0.25")  # the server notices a gone client in ~0.5 s
    before = live_students()
    sizes = []
    for i in range(50):
        client = Client(server, verbose=False)
        list(client.submit(**{**TINY, "seed": i}, api_name="/distill"))
        client.close()
        sizes.append(rss_mb())
    assert wait_for(lambda: not live_students() - before), "sessions kept their students after leaving"
    # the least of five readings: a single one can land on a run's temporary buffers
    growth = min(sizes[-5:]) - min(sizes[5:10])
    assert growth < 150, [round(size) for size in sizes]  # measured: 14 to 58 MB; before the fix, 297


def test_a_transfer_set_and_a_hidden_class_through_the_api(client):
    """Issue 12 through gradio_client: the status says which images the students saw; the table has the hidden
    class's column; the session's students carry the bias curve the app's bias panel shows."""
    updates = list(client.submit(epochs=1, train_size=500, repeats=2, unlabeled=5000, hide_class="Dress",
                                 api_name="/distill"))
    assert any("500 training images + 5,000 unlabelled" in u[0] for u in updates)  # hidden class left out
    table = updates[-1][3]["value"]
    assert "hidden class (%)" in table["headers"]
    ce_hidden = table["data"][1][table["headers"].index("hidden class (%)")]
    assert ce_hidden < 2.0  # no labelled dress, and none among the unlabelled images either
