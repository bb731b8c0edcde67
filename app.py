"""KD Playground, the Gradio app: layout and event wiring only.

The logic lives in kd_core: `settings` (limits, presets, datasets on offer, widgets -> RunConfig),
`session` (the live run, results, per-session students), `predict` (any picture -> the model input ->
predictions) and `plots` (chart frames). Every
handler here is a few lines: call kd_core, turn its `ValueError`s into `gr.Error`s, fill widgets.
`import app` builds the page without starting a server or loading the dataset; `python app.py` serves it.
API (gradio_client): /distill, /predict, /predict_sketch, /soften, /sweep; see README "API (gradio_client)".
"""

from __future__ import annotations

import ctypes
import functools
import html
import json
import os
from functools import partial
from pathlib import Path
from typing import NamedTuple

import gradio as gr
from gradio.components.plot import PlotData
from gradio.utils import get_upload_folder
from PIL import Image

from kd_core.config import MAX_REPEATS, RunConfig
from kd_core.data.datasets import CLASSES, DatasetUnavailable
from kd_core.data.sources import resolve_dataset
from kd_core.engine.loop import resolve_device, train_stack
from kd_core.engine.roles import METHODS, NAMES
from kd_core.engine.sweep import MAX_GRID
from kd_core.engine.sweep import parse_values as sweep_values
from kd_core.engine.train import TrainingDiverged, check_cpu_budget
from kd_core.models import predict
from kd_core.models.checkpoints import CHECKPOINT_DIR
from kd_core.publish import browser_student, deploy, hub, web_runtime
from kd_core.serve import own_data, settings, shared_runs, stack_pool
from kd_core.serve.zerogpu import in_caller_context, on_gpu, sweep_duration
from kd_core.views import headline, lesson, panels, plots, run_view, served, session
from kd_core.views import pictures as picture_views
from kd_core.views.bias import bias_view
from kd_core.views.sweep import live_sweep


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """glibc gives each allocating thread a malloc arena of its own (up to 8 per core) and seldom returns their
    free pages: under mixed load the server's resident memory kept climbing (tests/test_soak.py), and with 2
    arenas it levels off. Whether it was set (False off glibc)."""
    try:
        return bool(ctypes.CDLL("libc.so.6").mallopt(-8, arenas))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


limit_malloc_arenas()  # before the server's threads start
DEFAULTS = RunConfig()
CLASS_NAMES = CLASSES[DEFAULTS.dataset]
EXAMPLES = sorted(str(path) for path in (CHECKPOINT_DIR / "examples").glob("*.png"))
SUBJECTS = {"fashion-mnist": "a garment", "mnist": "a handwritten digit", "cifar10": "an animal or a vehicle"}
TOP_K = 3  # classes shown per model in the Predict tab
# the Predict tab's student of each method, in the order of /predict's outputs: Hinton KD's where the KD student has
# always been (before the `students` sentence), every other method's after that sentence, so that the indices
# gradio_client scripts read never move when a method is added
PREDICT_METHODS = ("kd", *(method for method in METHODS if method != "kd"))
# stacks training at once (one thread each); others queue. Compatible Starts (differing only in T, α, methods, their
# weights or seeds) train as one stack of up to stack_pool.MAX_STACK_STUDENTS students (kd_core/serve/stack_pool.py),
# so a classroom trying its own settings is one or two stacks, not thirty runs. Under the 3-minute mixed soak
# (tests/test_soak.py) 8 runs at once left the server too busy to answer 3 of 81 cancels within gradio_client's
# timeout, 4 answered all: 4 is the default; $KD_CONCURRENT_RUNS overrides
CONCURRENT_RUNS = int(os.environ.get("KD_CONCURRENT_RUNS", "4"))
TRAINING_VISITORS = 32  # /distill and /sweep calls served at once (each holds a thread); more wait in Gradio
# identical requests share one run (and replay one of the last 8 finished); every distinct request goes on to
# POOL, which holds training to CONCURRENT_RUNS stacks and tells those who wait their place and an estimated wait
RUNS = shared_runs.SharedRuns(max_running=TRAINING_VISITORS, keep_finished=8)
SWEEPS = shared_runs.SharedRuns(max_running=CONCURRENT_RUNS, keep_finished=8)  # a sweep is a stack of its own
SESSIONS_KEPT = 200  # sessions whose widgets and students the server holds (Gradio's default: 10,000)
# (every s, older than s): Gradio's copies of the files it serves (run logs, students, uploads, previews) are
# deleted 60 to 70 minutes after they were made (the example pictures are kept): a finished run stays
# downloadable for an hour and the disk holds about an hour of files; without it Gradio keeps every copy until
# the server stops (0.4 MB per run)
CACHE_CLEANUP = (600, 3600)
USER_ERRORS = (ValueError, DatasetUnavailable, TrainingDiverged)  # CheckpointError is a ValueError
CSS = """
.kd-pixels img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
.kd-status progress { width: 40%; vertical-align: middle; }
.kd-small { font-size: 0.8em; }
.kd-labels { display: grid !important; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); }
.kd-headline { font-size: 1.6em; font-weight: 600; line-height: 1.25; padding: 0.2em 0.4em; border-radius: 6px; }
.kd-subline { font-size: 1.05em; padding: 0.1em 0.5em; }
.kd-headline.kd-headline-better { background: #dcfce7; color: #14532d; }
.kd-headline.kd-headline-worse { background: #fee2e2; color: #7f1d1d; }
.kd-headline.kd-headline-noise, .kd-headline.kd-headline-single { background: #f1f5f9; color: #334155; }
.kd-subline.kd-headline-better { color: #15803d; }
.kd-subline.kd-headline-worse { color: #b91c1c; }
.kd-lesson { font-size: 1.3em; }
.kd-banner { font-size: 1.1em; background: #ffedd5; border-radius: 6px; }
"""

INTRO = """# KD Playground
A **teacher** network's softened predictions (temperature **T**) train a small **KD student**, while its
twin, the **CE student**, learns from the labels alone: same size, same initial weights, same batches.
Pick T and α, press **Start**, and watch both learn side by side (Fashion-MNIST unless you pick another
dataset). Each run trains several seeds at once, so the verdict tells a real effect from luck. **Why KD helps
here and not always:** with 1,000 labelled images the teacher's soft targets carry what the labels lack (which
garments look alike), and KD wins in every seed; with all 55,000 labels the CE student learns that itself
(the *Full data* preset: no gain beyond seed noise)."""

# one line: the loss, and which side α weighs (t, s: teacher and student logits; y: the labels)
FORMULA = (r"$L = \alpha T^2 \, \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)) + (1-\alpha)\,"
           r"\mathrm{CE}(s, y)$ · **α weighs the teacher's soft targets** (t, s: teacher, student logits; y: labels)")
INLINE_LATEX = [{"left": "$", "right": "$", "display": False}]
START_ID = "kd-start"  # the Train tab's Start button, which the Lesson tab's steps press


def header() -> str:
    return (f"Training runs on **{session.device_label()}** · one run is capped at {settings.MAX_APP_EPOCHS} "
            f"epochs and {settings.max_run_seconds():g} s; runs that differ only in T, α, methods or seeds train "
            f"together as one stack, {CONCURRENT_RUNS} stacks at a time, others wait in the queue.")


# ----------------------------------------------------------------------------------------- handlers

# ---- ZeroGPU (kd_core.serve.zerogpu): the only code that touches the GPU, one call per stack however many visitors'
# runs it trains (a sweep is a stack of its own); what it yields (the engine's events, the students on the CPU)
# is plain CPU data. Each call declares the GPU time its stack needs; one over a call's cap is refused, saying
# what to lower; one ZeroGPU refuses (quota, no GPU) trains on the CPU in a fresh process, saying so
train_on_device = on_gpu(train_stack)
sweep_on_device = on_gpu(live_sweep, sweep_duration)


def stack_fits(cfg: RunConfig, seeds: int, roles: int) -> bool:
    """Whether a stack of seeds × roles stays within the CPU budget each run is held to (a stack beyond it would
    train long enough to reach the time cap, and its visitors' results would differ from their solo runs')."""
    try:
        check_cpu_budget(cfg.replace(repeats=seeds), resolve_dataset(cfg), resolve_device(cfg.device),
                         students_per_seed=roles)
    except ValueError:
        return False
    return True


# a CPU trains a stack on one thread, so a classroom's stacks are balanced over its cores; a GPU (ZeroGPU's
# included) trains one big stack fastest
PARALLEL = 1 if train_on_device is not train_stack or resolve_device("auto").type == "cuda" else len(
    os.sched_getaffinity(0))
POOL = stack_pool.StackPool(train=train_on_device, max_running=CONCURRENT_RUNS, fits=stack_fits, parallel=PARALLEL)


def live_run_here():
    """The Train tab's run through the stack pool, iterated in this handler's context from the shared run's
    thread: a stack's thread runs in its first member's context, where ZeroGPU finds the visitor to charge."""
    return in_caller_context(partial(run_view.live_run, train=POOL.events))


class ViewUpdates:
    """One visitor's run views as Gradio outputs: the status line, loss chart, accuracy chart and results table,
    then any `at_end` values (files). Plain values wherever Gradio allows: for every update, `gr.skip()`
    included, Gradio builds a component and its config (a JSON schema) per output per visitor per view, which
    cost more than the training under a classroom's 30 streams; a value that repeats the last one costs a
    comparison (Gradio streams the diff). So updates go only where a property changes: the loss chart's x range
    and legend with its first curve, and the results shown or hidden at the first and last views."""

    def __init__(self) -> None:
        self.first, self.shaped, self.chart = True, False, None

    def __call__(self, view: run_view.RunView, *at_end: object) -> tuple:
        first, self.first = self.first, False
        if view.accuracies is not None:
            self.chart = PlotData(type="altair", plot=view.accuracies.spec())
        return (view.status_html(), self.losses(view), gr.skip() if self.chart is None else self.chart,
                *(self.at_end(view, value, first) for value in (view.table, *at_end)))

    def losses(self, view: run_view.RunView):
        if not view.total_steps:  # the browser keeps a chart's first x range: none before the run's is known
            return gr.skip()
        value = {**view.losses.split(), "mark": "line"}  # a dict is sent as it is (LinePlot.postprocess)
        if self.shaped:
            return value
        self.shaped = True  # every series is in every frame (colours stay fixed); the legend names this run's
        return gr.update(value=value, x_lim=[0, view.total_steps],
                         colors_in_legend=[plots.short_name(n) for n in view.losses.names])

    @staticmethod
    def at_end(view: run_view.RunView, value, first: bool):
        """A result shown with the run's last view; hidden by its first (a previous run's); empty and hidden in
        between."""
        if view.table is not None:
            return gr.update(value=value, visible=True)
        return gr.update(visible=False) if first else None


def distill(temperature: float, alpha: float, epochs: int, lr: float, student: str, train_size: int,
            hide_class: str, seed: int, dataset: str, repeats: int, unlabeled: int, methods: list[str],
            dkd_beta: float, feature_weight: float, students: session.SessionStudents | None):
    """Train CE and KD students side by side, one pair per seed; stream the curves, end with the results
    table and the verdict."""
    try:
        cfg = settings.make_config(temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                                   student=student, train_size=train_size, hide_class=hide_class, seed=seed,
                                   dataset=dataset, repeats=repeats, unlabeled=unlabeled, methods=methods,
                                   dkd_beta=dkd_beta, feature_weight=feature_weight)
        updates = ViewUpdates()
        for view in shared_runs.join_run(RUNS, cfg, live_run_here()):
            yield (*updates(view, view.log_csv, view.kd_checkpoint),
                   view.students if view.table is not None else gr.skip())
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None
    session.discard(students)  # the new run's students replace the previous run's


def show_bias(students: session.SessionStudents | None):
    """After a run: the hidden-class bias panel when a class was hidden, else nothing."""
    if students is None or students.bias_report is None:
        return gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip()
    spec, caption = bias_view(students)
    return gr.Column(visible=True), gr.Slider(value=students.hidden_bias), PlotData(type="altair", plot=spec), caption


def set_bias(value: float, students: session.SessionStudents | None):
    """Move the hidden-class bias: the curve's marker, the caption, and the students the Predict tab uses."""
    try:
        students = session.with_hidden_bias(students, value)
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None
    spec, caption = bias_view(students)
    return PlotData(type="altair", plot=spec), caption, students


def auto_bias(students: session.SessionStudents | None) -> float:
    if students is None or students.bias_report is None:
        raise gr.Error("the automatic bias needs a run with a hidden class", print_exception=False)
    return round(students.bias_report["auto_bias"] * 4) / 4  # the slider's step


def show_headline(students: session.SessionStudents | None) -> str:
    """After a run: the verdict as the headline above the charts (kd_core.views.headline)."""
    return headline.headline_html(None if students is None else students.summary)


def show_downloads(students: session.SessionStudents | None):
    files = session.downloads(students)
    return gr.Row(visible=bool(files)), [str(p) for p in files]


def export_onnx(students: session.SessionStudents | None):
    """The KD student as ONNX with its model card, beside the card already offered, and how fast it runs beside
    the teacher (a few seconds)."""
    try:
        view = deploy.export_view(students)
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None
    return [str(p) for p in view.files], gr.Dataframe(view.latency, visible=True), view.words


def stopped() -> str:
    return '<div class="kd-status">Stopped. Change the settings and press Start again.</div>'


def dataset_widgets(dataset: str, student: str, train_size: int, hide_class: str):
    """The pickers whose choices depend on the dataset (keeping the values that still fit), and a line
    about its teacher."""
    students = list(settings.app_students(dataset))
    classes = settings.hidden_class_choices(dataset)
    hidden = hide_class if hide_class in classes else settings.NO_HIDDEN_CLASS
    return (gr.Dropdown(choices=students, value=student if student in students else DEFAULTS.student),
            gr.Dropdown(choices=settings.train_size_choices(dataset), value=train_size),
            gr.Dropdown(choices=classes, value=hidden),
            settings.teacher_summary(dataset))


def apply_preset(name: str):
    """A preset's settings, its dataset (presets are tuned on Fashion-MNIST) and that dataset's pickers."""
    cfg = settings.preset(name)
    return (cfg.temperature, cfg.alpha, cfg.epochs, cfg.lr, cfg.seed, cfg.repeats, cfg.unlabeled, list(cfg.methods),
            cfg.dkd_beta, cfg.feature_weight, cfg.dataset,
            *dataset_widgets(cfg.dataset, cfg.student, cfg.train_size, settings.hidden_class_name(cfg)))


def open_picture(image: dict | str):
    """An image input's picture (events with preprocess=False get Gradio's FileData dict), or ValueError.

    Gradio deletes an upload an hour after it was sent (CACHE_CLEANUP), while the page can still show it."""
    path = image["path"] if isinstance(image, dict) else image
    if not os.path.isfile(path):
        raise ValueError("This picture is no longer on the server (uploads are kept for an hour): upload it "
                         "again.")
    return predict.open_image(path)


def served_picture(picture: Image.Image) -> str:
    """A picture to show, as a file written whole in Gradio's cache (kd_core.views.served): Gradio 6.31 writes a
    returned PIL image in place, and identical previews of concurrent requests were served half-written."""
    return str(served.picture_file(picture, served.folder(get_upload_folder())))


def show_prediction(picture, students):
    """/predict's outputs: preview, steps, teacher, CE student, KD student, the students' source, then every other
    method's student (PREDICT_METHODS); a method the session's run did not train gets None (an empty Label)."""
    try:
        view = picture_views.predict_picture(picture, students, TOP_K)
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None
    kd, *others = (view.predictions.get(method) for method in PREDICT_METHODS)
    return (served_picture(view.preview), f"What the models see: {view.steps}.", view.predictions["teacher"],
            view.predictions["ce"], kd, f"Students: {view.students}.", *others)


def predict_upload(image: dict | str | None, students: session.SessionStudents | None):
    """An uploaded picture -> the 28×28 model input, then the teacher's and every student's top-k predictions."""
    if image is None:  # the upload was cleared
        return None, "", None, None, None, gr.skip(), *[None] * (len(PREDICT_METHODS) - 1)
    try:
        picture = open_picture(image)
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None
    return show_prediction(picture, students)


def predict_sketch(sketch: dict, students: session.SessionStudents | None):
    """A drawing (an ImageEditor value, checked by settings.check_sketch) -> the same as /predict."""
    try:
        picture = open_picture(sketch["composite"])
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None
    return show_prediction(picture, students)


def show_students(students: session.SessionStudents | None) -> list[gr.Label]:
    """The Predict tab's method Labels, each shown only when the session's students include that method's."""
    shown = session.student_methods(students)
    return [gr.Label(visible=method in shown) for method in PREDICT_METHODS]


def soften(image: dict | str | None, temperature: float):
    """The teacher's class probabilities for a picture at T = 1 and at `temperature`."""
    if image is None:
        return None, None, None, ""
    try:
        view = picture_views.soften_picture(open_picture(image), temperature)
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None
    return (served_picture(view.preview),
            gr.BarPlot(view.plain, title="Teacher at T = 1: its ordinary softmax"),
            gr.BarPlot(view.softened, title=f"Teacher at T = {temperature:g}: the soft targets KD matches"),
            view.caption)


# ------------------------------------------------------------------------------------------- layout

class TrainControls(NamedTuple):
    """What the Lesson tab sets on the Train tab: the preset picker, the widgets a preset fills, and the folded
    groups whose labels (group_labels) follow them."""

    preset: gr.Dropdown
    preset_outputs: list  # apply_preset's outputs, in its order
    group_inputs: list  # group_labels' inputs, in its order
    groups: list  # the Data, Students and Methods accordions


def group_labels(dataset: str, train_size: int, hide_class: str, unlabeled: int, student: str, lr: float,
                 epochs: int, seed: int, repeats: int, methods: list[str], dkd_beta: float, feature_weight: float):
    """The folded groups' labels: each its one-line summary of its widgets' values (kd_core.views.panels)."""
    return (gr.Accordion(label=panels.data_label(dataset, train_size, hide_class, unlabeled)),
            gr.Accordion(label=panels.students_label(student, lr, epochs, seed, repeats)),
            gr.Accordion(label=panels.methods_label(methods, dkd_beta, feature_weight)))


def train_tab(students: gr.State) -> TrainControls:
    gr.Markdown(FORMULA, latex_delimiters=INLINE_LATEX)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            # the gesture first (a preset, T, α); everything else folded into groups that say their values
            preset = gr.Dropdown(list(settings.PRESETS), value=next(iter(settings.PRESETS)), label="Preset",
                                 info="sets every knob; chosen on the validation split")
            temperature = gr.Slider(*settings.APP_TEMPERATURES, DEFAULTS.temperature, step=0.5,
                                    label="Temperature T",
                                    info="softens the teacher's and the KD student's softmax")
            alpha = gr.Slider(0, 1, DEFAULTS.alpha, step=0.05,
                              label="α: weight on the teacher's soft targets",
                              info="1 − α weighs cross-entropy with the labels")
            with gr.Accordion(panels.data_label(DEFAULTS.dataset, DEFAULTS.train_size, settings.NO_HIDDEN_CLASS,
                                                DEFAULTS.unlabeled), open=False) as data_group:
                dataset = gr.Dropdown([(settings.DATASET_LABELS[name], name) for name in settings.app_datasets()],
                                      value=DEFAULTS.dataset, label="Dataset",
                                      info=settings.dataset_hint() or None)
                teacher = gr.Markdown(settings.teacher_summary(DEFAULTS.dataset))
                train_size = gr.Dropdown(settings.train_size_choices(DEFAULTS.dataset), value=DEFAULTS.train_size,
                                         label="Training images (class-balanced)")
                # allow_custom_value on the two pickers whose choices follow the dataset: Gradio checks a value
                # against the page's first choices, so an API call for another dataset would be refused;
                # settings.make_config checks every value against its dataset instead, with a clear message
                hide_class = gr.Dropdown(settings.hidden_class_choices(DEFAULTS.dataset),
                                         value=settings.NO_HIDDEN_CLASS, label="Hide one class from the students",
                                         allow_custom_value=True,
                                         info="the teacher still knows it; can the KD student learn it?")
                unlabeled = gr.Dropdown(settings.unlabeled_choices(), value=DEFAULTS.unlabeled,
                                        label="Unlabelled images, labelled by the teacher (transfer set)",
                                        info="only the KD student learns from them, through the soft targets")
            with gr.Accordion(panels.students_label(DEFAULTS.student, DEFAULTS.lr, DEFAULTS.epochs, DEFAULTS.seed,
                                                    DEFAULTS.repeats), open=False) as students_group:
                student = gr.Dropdown(list(settings.app_students(DEFAULTS.dataset)), value=DEFAULTS.student,
                                      label="Student size", allow_custom_value=True)
                lr = gr.Dropdown([(f"{rate:g}", rate) for rate in settings.LEARNING_RATES], value=DEFAULTS.lr,
                                 label="Learning rate (Adam, both students)")
                epochs = gr.Slider(1, settings.MAX_APP_EPOCHS, DEFAULTS.epochs, step=1, label="Epochs")
                with gr.Row():
                    seed = gr.Number(DEFAULTS.seed, precision=0, minimum=0, label="First seed")
                    repeats = gr.Slider(1, MAX_REPEATS, DEFAULTS.repeats, step=1, label="Seeds",
                                        info="pairs trained together; the spread tells luck from a real effect")
            with gr.Accordion(panels.methods_label(DEFAULTS.methods, DEFAULTS.dkd_beta, DEFAULTS.feature_weight),
                              open=False) as methods_group:
                methods = gr.CheckboxGroup(list(METHODS), value=list(DEFAULTS.methods), label="Distillation methods",
                                           info="one student each, beside the CE student, same init and batches")
                gr.Markdown("\n".join(f"- **{name}**: {formula}" for name, formula in METHODS.items()),
                            elem_classes="kd-small")
                dkd_beta = gr.Slider(0, settings.MAX_DKD_BETA, DEFAULTS.dkd_beta, step=0.5,
                                     label="DKD β: weight on the non-target classes (dkd, dkd-std)")
                feature_weight = gr.Slider(0, 1, DEFAULTS.feature_weight, step=0.05,
                                           label="Feature weight w: on the feature loss, 1 − w on CE (hint, cosine)")
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id=START_ID)
                stop = gr.Button("Stop", variant="stop")
            status = gr.HTML('<div class="kd-status">Press Start to train both students.</div>')
            verdict_headline = gr.HTML()  # after a run: the verdict in words, coloured by it (kd_core.views.headline)
            with gr.Row():
                losses = gr.LinePlot(x="step", y="loss", color="student", color_map=plots.LOSS_COLOURS, height=300,
                                     title="Training loss", x_title="step", y_title="loss")
                accuracies = gr.Plot(label="Validation accuracy", show_label=False)
            gr.Markdown("The KD student's loss includes the soft-target term α·T²·KL, so it starts higher "
                        "than the CE student's (means over the seeds). The accuracy curves are measured on "
                        "500 held-out validation images, 12 times per run: a line is the mean over the "
                        "seeds, its band ± one standard deviation; the teacher's is the grey line. **Test "
                        "images never choose anything** (defaults, presets, the sweep's best cell): a "
                        "validation split of 5,000 training images does; the test set only reports.")
            table = gr.Dataframe(label="Results on the 10,000 test images (mean ± std over seeds)", visible=False,
                                 interactive=False)
            with gr.Column(visible=False) as bias_box:
                gr.Markdown("### The hidden class's bias\nNo student saw a labelled image of the hidden class, "
                            "so neither ever had its bias pushed up. Raise it and see what the KD student "
                            "learnt from the teacher's soft targets alone (no retraining: the test set is "
                            "re-scored from stored logits).")
                with gr.Row():
                    bias = gr.Slider(0, 8, 0, step=0.25, label="Bias added to the hidden class's logit")
                    auto = gr.Button("Automatic bias (no labels used)", size="sm")
                bias_plot = gr.Plot(show_label=False)
                bias_caption = gr.Markdown()
            with gr.Row():
                log_file = gr.DownloadButton("Run log (CSV)", visible=False)
                kd_file = gr.DownloadButton("KD student (safetensors)", visible=False)
            with gr.Row(visible=False) as export_row:
                cards = gr.File(label="KD student: model card (and ONNX once exported)", file_count="multiple",
                                interactive=False)
                export = gr.Button("Export the KD student to ONNX", size="sm")
            latency = gr.Dataframe(label="Latency on this CPU (1 thread; the fastest of 15 rounds)", visible=False,
                                   interactive=False)
            speedup = gr.Markdown()
    controls = [temperature, alpha, epochs, lr, student, train_size, hide_class, seed, dataset, repeats, unlabeled,
                methods, dkd_beta, feature_weight]
    preset_outputs = [temperature, alpha, epochs, lr, seed, repeats, unlabeled, methods, dkd_beta, feature_weight,
                      dataset, student, train_size, hide_class, teacher]
    group_inputs = [dataset, train_size, hide_class, unlabeled, student, lr, epochs, seed, repeats, methods, dkd_beta,
                    feature_weight]
    groups = [data_group, students_group, methods_group]
    # after a visitor's edit of one widget; after a preset or a dataset, once they have set every widget (the change
    # events of a preset's widgets, fired one by one, summarised values that were still being set)
    gr.on([widget.input for widget in group_inputs if widget is not dataset], group_labels, group_inputs, groups,
          api_visibility="private", show_progress="hidden")
    preset.input(apply_preset, preset, preset_outputs, api_visibility="private").then(
        group_labels, group_inputs, groups, api_visibility="private", show_progress="hidden")
    # .input, not .change: a preset sets the dataset and these pickers itself
    dataset.input(dataset_widgets, [dataset, student, train_size, hide_class],
                  [student, train_size, hide_class, teacher], api_visibility="private").then(
        group_labels, group_inputs, groups, api_visibility="private", show_progress="hidden")
    run = start.click(distill, [*controls, students], [status, losses, accuracies, table, log_file, kd_file,
                                                     students],
                      api_name="distill", concurrency_limit=TRAINING_VISITORS, concurrency_id="training",
                      show_progress="full", show_progress_on=[status])  # queue position while waiting
    # "Stopped" once the cancelled run has ended: set beside the cancel, an update the run had in flight could
    # arrive after it and leave the status at that step (the flaky browser test's "step 12/4,300")
    stop.click(None, None, None, cancels=[run], api_visibility="private").then(stopped, None, status,
                                                                              api_visibility="private")
    run.success(show_bias, students, [bias_box, bias, bias_plot, bias_caption], api_visibility="private")
    run.success(show_downloads, students, [export_row, cards], api_visibility="private")
    start.click(None, None, verdict_headline, js="() => ''", api_visibility="private")  # the new run's comes at its end
    run.success(show_headline, students, verdict_headline, api_visibility="private")
    export.click(export_onnx, students, [cards, latency, speedup], api_visibility="private", concurrency_id="export",
                 concurrency_limit=1)
    bias.release(set_bias, [bias, students], [bias_plot, bias_caption, students], api_visibility="private")
    auto.click(auto_bias, students, bias, api_visibility="private").then(
        set_bias, [bias, students], [bias_plot, bias_caption, students], api_visibility="private")
    return TrainControls(preset, preset_outputs, group_inputs, groups)


def predict_tab(page: gr.Blocks, students: gr.State) -> None:
    with gr.Row():
        with gr.Column():
            with gr.Tab("Upload"):
                image = gr.Image(EXAMPLES[0] if EXAMPLES else None, type="filepath", height=280,
                                 label="A picture of " + " or ".join(SUBJECTS[name]
                                                                     for name in settings.app_datasets()),
                                 sources=["upload", "clipboard"],
                                 elem_classes="kd-pixels")
                gr.Examples(EXAMPLES, image, label="Fashion-MNIST test images (click one)",
                            examples_per_page=10)
            with gr.Tab("Draw"):
                sketch = gr.Sketchpad(type="pil", image_mode="RGBA", height=320, canvas_size=(280, 280),
                                      label="Draw a garment: pick the brush on the left, then draw",
                                      brush=gr.Brush(colors=["#000000"], default_size=14), transforms=(),
                                      layers=False)
                classify = gr.Button("Classify the drawing", variant="primary")
        with gr.Column():
            preview = gr.Image(label="What the models see", height=280, interactive=False,
                               elem_classes="kd-pixels")
            steps = gr.Markdown()
    shown = session.student_methods(None)
    with gr.Row(elem_classes="kd-labels"):  # a grid of equal columns (CSS): six to a line at 1,400 px, more wrap
        teacher, ce = (gr.Label(num_top_classes=TOP_K, label=name) for name in ("teacher", NAMES["ce"]))
        methods = [gr.Label(num_top_classes=TOP_K, label=NAMES[method], visible=method in shown)
                   for method in PREDICT_METHODS]
    source = gr.Markdown()
    outputs = [preview, steps, teacher, ce, methods[0], source, *methods[1:]]
    # students.change: a finished run's students (maybe of another dataset) answer for the shown picture
    gr.on([image.change, page.load, students.change], predict_upload, [image, students], outputs,
          api_name="predict", preprocess=False)
    classify.click(predict_sketch, [sketch, students], outputs, api_name="predict_sketch", preprocess=False)
    # which students show follows the session's; on every prediction too, as Gradio may forget a session's students
    # (beyond SESSIONS_KEPT) while its page still shows their Labels
    gr.on([page.load, students.change, image.change, classify.click], show_students, students, methods,
          api_visibility="private")
    take_out_panel(students, image, sketch, classify)


# ------------------------------------------------------------- take the student out: the browser and the Hub
# The KD student in the visitor's browser (kd_core.publish.browser_student, onnxruntime-web vendored by
# kd_core.publish.web_runtime) and its publication on the Hub (kd_core.publish.hub), both in the Predict tab.

ON_SPACES = bool(os.environ.get("SPACE_ID"))  # set by Hugging Face Spaces: sign-in with the visitor's account
if web_runtime.present():
    gr.set_static_paths([web_runtime.ASSETS])  # served from the app's origin: no CDN, works offline


def browser_panel(picture, students: session.SessionStudents | None) -> str:
    """The in-browser panel's payload for a picture: the KD student's ONNX, the prepared input, the server's
    ONNX Runtime answer (the page's script then runs the student itself)."""
    if picture is None:
        return ""
    try:
        kd = students.kd if students is not None else predict.default_students()[1]
        pixels = predict.prepare_image(picture, kd.in_shape).pixels
        folder = served.folder(get_upload_folder()) / browser_student.MODEL_FOLDER
        return browser_student.panel_html(browser_student.panel_data(kd, pixels, folder))
    except USER_ERRORS as error:
        return f"<div class='kd-browser'>{error}</div>"


def browser_upload(image: dict | str | None, students: session.SessionStudents | None) -> str:
    try:
        return browser_panel(None if image is None else open_picture(image), students)
    except ValueError:  # /predict, on the same event, already tells the visitor
        return ""


def browser_sketch(sketch: dict, students: session.SessionStudents | None) -> str:
    try:
        return browser_panel(open_picture(sketch["composite"]), students)
    except (ValueError, KeyError, TypeError):  # /predict_sketch tells the visitor
        return ""


def publish(repo: str, private: bool, students: session.SessionStudents | None,
            token: gr.OAuthToken | None) -> str:
    """Publish this session's KD student on the Hub with the visitor's own token (Spaces sign-in)."""
    if token is None:
        raise gr.Error("Sign in with Hugging Face first (the button above).", print_exception=False)
    if students is None or students.summary is None:
        raise gr.Error("Train a pair first: this publishes your run's KD student.", print_exception=False)
    try:
        published = hub.push(students.run_dir, repo.strip(), private=private, token=token.token,
                             summary=students.summary)
    except ValueError as error:
        raise gr.Error(str(error), print_exception=False) from None
    return f"Published: [{published.repo_id}]({published.repo_url}) · commit: {published.commit_url}"


def take_out_panel(students: gr.State, image: gr.Image, sketch: gr.Sketchpad, classify: gr.Button) -> None:
    gr.Markdown("### Run the KD student in your browser")
    if not web_runtime.present():
        gr.Markdown(web_runtime.how_to_vendor())
    with gr.Group(visible=web_runtime.present()):
        gr.Markdown("The KD student's ONNX file runs on your own device through onnxruntime-web (one WebAssembly "
                    "thread), on the same 28×28 input as the server's models above; the runtime (3.9 MB) comes "
                    "from this app, not from a CDN.", elem_classes="kd-small")
        panel = gr.HTML()
        result = gr.HTML(elem_id="browser-student")
        run_here = gr.Button("Run the KD student in your browser", size="sm")
    if web_runtime.present():
        # only on the visitor's own actions, one export at a time: an export on every page load and after every
        # run cost each of a classroom's 30 visitors an ONNX export (5-21 s on a busy CPU) beside the others'
        # training; preprocess=False: the pictures arrive as /predict's and /predict_sketch's do (open_picture)
        exports = dict(api_visibility="private", preprocess=False, concurrency_id="export", concurrency_limit=1)
        for event in (gr.on([image.change, run_here.click], browser_upload, [image, students], panel, **exports),
                      classify.click(browser_sketch, [sketch, students], panel, **exports)):
            event.then(None, panel, result, js=browser_student.script())
    gr.Markdown("### Publish the KD student on the Hugging Face Hub")
    if not ON_SPACES:
        gr.Markdown("From the command line, with a token in `HF_TOKEN` (or after `hf auth login`): "
                    "`python -m kd_core distill --save-students students` then "
                    "`python -m kd_core push students --repo NAME` (it exports ONNX, writes the card with the "
                    "CE twin's figures and prints the commit URL). On a Space, a Sign-in button appears here.",
                    elem_classes="kd-small")
        return
    gr.LoginButton()
    with gr.Row():
        repo = gr.Textbox(label="Repository (NAME or OWNER/NAME)", value="kd-playground-student")
        private = gr.Checkbox(label="Private", value=True)
        button = gr.Button("Publish the KD student", variant="primary")
    published = gr.Markdown()
    button.click(publish, [repo, private, students], published, api_visibility="private", concurrency_id="export",
                 concurrency_limit=1)


def dark_knowledge_tab(page: gr.Blocks) -> gr.Slider:
    gr.Markdown("A trained teacher is confident: at T = 1 almost all its probability sits on one class. "
                "Dividing its logits by T > 1 before the softmax shows how it ranks the *wrong* classes. "
                "That ranking is what a KD student is trained to match.")
    with gr.Row():
        with gr.Column(scale=1):
            image = gr.Image(EXAMPLES[6] if len(EXAMPLES) > 6 else None, type="filepath", label="Picture",
                             sources=["upload", "clipboard"], height=220, elem_classes="kd-pixels")
            gr.Examples(EXAMPLES, image, label="Test images", examples_per_page=10)
            temperature = gr.Slider(0.5, 20, DEFAULTS.temperature, step=0.5, label="Temperature T")
            preview = gr.Image(label="What the teacher sees", height=140, interactive=False,
                               elem_classes="kd-pixels")
        with gr.Column(scale=2):
            plain, softened = (gr.BarPlot(x="class", y="probability", y_lim=[0, 1], sort=list(CLASS_NAMES),
                                          height=260, x_label_angle=-30) for _ in range(2))
            caption = gr.Markdown()
    gr.on([image.change, temperature.change, page.load], soften, [image, temperature],
          [preview, plain, softened, caption], api_name="soften", preprocess=False)
    return temperature


def sweep(temperatures: str, alphas: str, epochs: int, train_size: int, repeats: int):
    """Train a KD student per (T, α) and the CE baseline, for each seed, in one batched pass; stream the
    heatmap."""
    try:
        cfg = settings.sweep_config(epochs, train_size, repeats)
        grid = (sweep_values("temperatures", temperatures), sweep_values("alphas", alphas))
        on_device = in_caller_context(sweep_on_device)  # ZeroGPU then charges this visitor's quota
        for view in shared_runs.join_sweep(SWEEPS, cfg, *grid, start=on_device):
            yield (view.status, gr.skip() if view.heatmap is None else PlotData(type="matplotlib", plot=view.heatmap),
                   plots.sweep_lines(view.frame, "alpha"), plots.sweep_lines(view.frame, "T"),
                   gr.Dataframe(view.frame, visible=view.done))
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None


def sweep_tab() -> None:
    gr.Markdown(f"Train a KD student for every temperature × α pair, plus the CE baseline, **in one batched "
                f"pass** (all students share one initialisation and the same batches). At most "
                f"{MAX_GRID} KD students; student {DEFAULTS.student}, learning rate {DEFAULTS.lr:g}.")
    with gr.Row():
        grid = settings.SWEEP_DEFAULTS
        temperatures = gr.Textbox(grid["temperatures"], label="Temperatures T (comma-separated)")
        alphas = gr.Textbox(grid["alphas"], label="α values (comma-separated)")
        epochs = gr.Slider(1, settings.MAX_APP_EPOCHS, grid["epochs"], step=1, label="Epochs")
        train_size = gr.Dropdown(settings.train_size_choices(DEFAULTS.dataset), value=grid["train_size"],
                                 label="Training images")
        repeats = gr.Slider(1, MAX_REPEATS, grid["repeats"], step=1, label="Seeds",
                            info="each cell is the mean over the seeds; its colour shows only gains beyond their "
                                 "noise")
    with gr.Row():
        start = gr.Button("Start sweep", variant="primary")
        stop = gr.Button("Stop", variant="stop")
    status = gr.Markdown("Press Start sweep.")
    heatmap = gr.Plot(label="KD student accuracy over T × α")
    with gr.Row():
        by_t = gr.LinePlot(x="T", y="accuracy", color="alpha", height=280, x_title="T",
                           title="Accuracy vs temperature (one line per α)", y_title="accuracy (%)")
        by_alpha = gr.LinePlot(x="alpha", y="accuracy", color="T", height=280, x_title="α",
                               title="Accuracy vs α (one line per T)", y_title="accuracy (%)")
    table = gr.Dataframe(label="Grid", visible=False, interactive=False)
    run = start.click(sweep, [temperatures, alphas, epochs, train_size, repeats],
                      [status, heatmap, by_t, by_alpha, table],
                      api_name="sweep", concurrency_limit=TRAINING_VISITORS, concurrency_id="training")
    stop.click(None, None, None, cancels=[run], api_visibility="private").then(lambda: "Stopped.", None, status,
                                                                              api_visibility="private")


# ------------------------------------------------------------------------ Your data (kd_core.serve.own_data, sources)

def distill_own_data(upload, kind: str, arch: str, hub_id: str, teacher_epochs: int, image_size: int,
                     teacher_image_size: int, student: str, epochs: int, repeats: int):
    """Your zip and teacher: prepare the teacher (trained first when asked, a line per epoch), then the usual
    CE and KD students with seeds, curves, table and verdict."""
    try:
        cfg, dataset = own_data.app_config(upload, kind, arch, hub_id, teacher_epochs, image_size,
                                           teacher_image_size, student, epochs, repeats)
        for item in own_data.prepare_lines(cfg, dataset):
            if isinstance(item, own_data.Prepared):
                prepared = item
            else:
                yield (f'<div class="kd-status">{html.escape(item)}</div>', gr.skip(), gr.skip(), gr.skip(),
                       gr.skip(), gr.skip())
        updates = ViewUpdates()
        for view in shared_runs.join_run(RUNS, prepared.config, live_run_here()):
            done = view.table is not None
            yield *updates(view), view.students if done else gr.skip(), prepared if done else gr.skip()
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None


def predict_own_data(picture: Image.Image | None, prepared, students):
    """A picture -> the run's teacher's and students' top classes, with the run's class names."""
    if picture is None:
        return None, None, None
    try:
        found = own_data.predict_own(picture, prepared, students, TOP_K)
    except USER_ERRORS as error:
        raise gr.Error(str(error), print_exception=False) from None
    return found["teacher"], found["ce"], found["kd"]


def own_data_tab() -> None:
    gr.Markdown("Distil **your own** image classifier: upload a .zip with one folder per class (JPEG, PNG, "
                "WebP; optional `train/`, `val/`, `test/` folders, else 20 % of each class is the test split and "
                "a tenth of the rest the validation split), pick a teacher, and the CE and KD students train side "
                "by side as in the Train tab, with seeds and a verdict. " + own_data.LIMITS_TEXT)
    prepared, own_students = gr.State(None), gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            upload = gr.File(label="Your images (.zip)", file_types=[".zip"], type="filepath")
            kind = gr.Radio(list(own_data.TEACHER_KINDS), value=own_data.TEACHER_KINDS[0], label="Teacher")
            arch = gr.Dropdown(list(own_data.TEACHER_ARCHS), value=own_data.TEACHER_ARCHS[0],
                               label="Architecture to train (Train one on my data)")
            teacher_epochs = gr.Slider(1, own_data.MAX_APP_TEACHER_EPOCHS, 5, step=1, label="Teacher epochs")
            hub_id = gr.Textbox("", label="Hub id (ORG/NAME; needs the internet)", placeholder="timm/resnet18.a1_in1k")
            with gr.Row():
                image_size = gr.Number(0, precision=0, minimum=0, maximum=own_data.MAX_APP_IMAGE_SIZE,
                                       label="Student image size (0: as uploaded)")
                teacher_image_size = gr.Number(0, precision=0, minimum=0, maximum=own_data.MAX_APP_IMAGE_SIZE,
                                               label="Teacher image size (0: its own)")
            student = gr.Dropdown(list(own_data.STUDENTS), value=DEFAULTS.student, label="Student")
            with gr.Row():
                epochs = gr.Slider(1, own_data.MAX_APP_EPOCHS, 10, step=1, label="Student epochs")
                repeats = gr.Slider(1, MAX_REPEATS, 3, step=1, label="Seeds")
        with gr.Column(scale=3):
            with gr.Row():
                start = gr.Button("Start", variant="primary")
                stop = gr.Button("Stop", variant="stop")
            status = gr.HTML('<div class="kd-status">Upload a zip, then press Start.</div>')
            with gr.Row():
                losses = gr.LinePlot(x="step", y="loss", color="student", color_map=plots.LOSS_COLOURS, height=300,
                                     title="Training loss", x_title="step", y_title="loss")
                accuracies = gr.Plot(label="Validation accuracy", show_label=False)
            table = gr.Dataframe(label="Results on your test split (mean ± std over seeds)", visible=False,
                                 interactive=False)
            gr.Markdown("### Predict with your run's classes")
            with gr.Row():
                picture = gr.Image(type="pil", label="A picture", height=220)
                teacher_label = gr.Label(num_top_classes=TOP_K, label="Teacher")
                ce_label = gr.Label(num_top_classes=TOP_K, label="CE student")
                kd_label = gr.Label(num_top_classes=TOP_K, label="KD student")
    run = start.click(distill_own_data, [upload, kind, arch, hub_id, teacher_epochs, image_size, teacher_image_size,
                                         student, epochs, repeats],
                      [status, losses, accuracies, table, own_students, prepared], api_visibility="private",
                      concurrency_limit=TRAINING_VISITORS, concurrency_id="training", show_progress="full",
                      show_progress_on=[status])  # private: the API's checked endpoints are settings.api_checks
    stop.click(stopped, None, status, cancels=[run], api_visibility="private")
    picture.change(predict_own_data, [picture, prepared, own_students], [teacher_label, ce_label, kd_label],
                   api_visibility="private")


# ------------------------------------------------------------------------------------------- lesson

# after a Train step is shown, the page presses the Train tab's own Start: the same /distill event, so Stop, the
# queue, the headline and the bias panel work as for any run (a chained copy of the event would have none of them)
PRESS_START = (f"(index) => {{ if ({json.dumps([i for i, step in enumerate(lesson.STEPS) if step.preset])}"
               f".includes(index)) document.getElementById('{START_ID}').click(); }}")


def show_step(index: int, preset_widgets: int):
    """Show step `index`: its tab and its question above the tabs, with the Dark knowledge tab's T set, or the Train
    tab's preset picker and the `preset_widgets` widgets apply_preset fills."""
    step = lesson.STEPS[int(index)]
    shown = gr.Tabs(selected=step.tab), gr.Markdown(lesson.step_banner(int(index)), visible=True)
    if step.preset is None:
        return *shown, step.temperature, *[gr.skip()] * (1 + preset_widgets)
    return *shown, gr.skip(), step.preset, *apply_preset(step.preset)


def next_step(index: int):
    following = lesson.next_index(int(index))
    return following, lesson.step_markdown(following), gr.Button(lesson.STEPS[following].button)


def lesson_tab(tabs: gr.Tabs, banner: gr.Markdown, train: TrainControls, dark_temperature: gr.Slider) -> None:
    """Five steps for a projector (kd_core.views.lesson.STEPS): each sets and shows another tab's own widgets, and puts
    its question in `banner`, above the tabs, while the class watches."""
    index = gr.Number(0, visible=False)  # the step shown; a Number, not a State, so PRESS_START can read it
    card = gr.Markdown(lesson.step_markdown(0), elem_classes="kd-lesson")
    with gr.Row():
        go = gr.Button(lesson.STEPS[0].button, variant="primary", size="lg")
        following = gr.Button("Next step", size="lg")
    gr.Markdown("The steps: " + " · ".join(f"{i}. {step.title}" for i, step in enumerate(lesson.STEPS, 1)))
    go.click(functools.partial(show_step, preset_widgets=len(train.preset_outputs)), index,
             [tabs, banner, dark_temperature, train.preset, *train.preset_outputs],
             api_visibility="private").then(
        group_labels, train.group_inputs, train.groups, api_visibility="private", show_progress="hidden").then(
        None, index, None, js=PRESS_START)
    following.click(next_step, index, [index, card, go], api_visibility="private")


def delete_session_state(page: gr.Blocks, session_hash: str) -> None:
    """Run the delete_callback of every gr.State of one session now and drop the values.

    Gradio (6.31) has no public API for this: `Blocks.state_holder` (set when the page is launched) and
    its `delete_state` are private, so this is the one place that touches them, and
    tests/test_gradio_private_api.py fails loudly when an upgrade changes them.
    """
    holder = getattr(page, "state_holder", None)
    if holder is None or not callable(getattr(holder, "delete_state", None)):
        raise RuntimeError(f"Gradio {gr.__version__} changed Blocks.state_holder.delete_state, which "
                           f"app.delete_session_state relies on to free a closed session's students")
    holder.delete_state(session_hash)


def release_session(page: gr.Blocks):
    """The unload handler: when a visitor's tab (or client) disconnects, delete the session's gr.State now,
    which frees its students and, through `session.discard`, their run files. Gradio on its own keeps a
    closed session's state for an hour, in case the same session reconnects; a new page load never does."""
    async def release(request: gr.Request) -> None:  # async: on the event loop, as Gradio's expiry sweep is
        delete_session_state(page, request.session_hash)
    return release


class CheckedBlocks(gr.Blocks):
    """gr.Blocks that checks the values of each API call (settings.api_checks) before Gradio's own
    preprocessing, which answers a wrong type with a generic error ("The upstream Gradio app has raised an
    exception") or a message that names no parameter ("Value: x is not in the list of choices")."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        names, check = settings.api_checks(Path(self.GRADIO_CACHE)).get(block_fn.api_name, ((), None))
        if check is not None:
            try:
                if len(inputs) < len(names):
                    raise ValueError(f"/{block_fn.api_name} takes {len(names)} values ({', '.join(names)}); "
                                     f"got {len(inputs)}")
                check(**dict(zip(names, inputs, strict=False)))
            except ValueError as error:
                raise gr.Error(str(error), print_exception=False) from None
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)


def build(delete_cache: tuple[int, int] = CACHE_CLEANUP) -> gr.Blocks:
    """The page. The dataset picker offers what is on this machine when this runs (settings.app_datasets).
    `delete_cache`: (every s, older than s), see CACHE_CLEANUP."""
    with CheckedBlocks(title="KD Playground", delete_cache=delete_cache) as page:
        gr.Markdown(INTRO)
        gr.Markdown(header())
        students = gr.State(None, delete_callback=session.discard)  # this browser session's students
        lesson_banner = gr.Markdown(visible=False, elem_classes="kd-banner")  # the lesson's question, once it runs
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train"):
                train = train_tab(students)
            with gr.Tab("Predict"):
                predict_tab(page, students)
            with gr.Tab("Dark knowledge", id="dark-knowledge"):
                dark_temperature = dark_knowledge_tab(page)
            with gr.Tab("Sweep"):
                sweep_tab()
            with gr.Tab("Lesson", id="lesson"):
                lesson_tab(tabs, lesson_banner, train, dark_temperature)
            with gr.Tab("Your data"):
                own_data_tab()
        page.unload(release_session(page))
    return page.queue(max_size=64, default_concurrency_limit=4)


demo = build()

LAUNCH_OPTIONS = {"css": CSS, "allowed_paths": [str(CHECKPOINT_DIR / "examples")],
                  # uploads above this are refused by Gradio before any handler (Your data's zips: 50 MB)
                  "max_file_size": f"{own_data.sources.SPACE_LIMITS.upload_bytes // 2**20}mb",
                  # beyond this many sessions, the least recently used one is forgotten (its Predict tab
                  # falls back to the shipped students): a bound on the memory that open tabs can hold
                  "state_session_capacity": SESSIONS_KEPT,
                  # Gradio's 40 threads stay for Predict, Dark knowledge and the rest: training visitors hold
                  # one each while they wait for their run's next update
                  "max_threads": 40 + TRAINING_VISITORS}

if __name__ == "__main__":
    demo.launch(**LAUNCH_OPTIONS)
