"""The Train tab: a preset, T and α up front, every other knob folded into groups that say their values (Data,
Students, Methods); Start streams the CE and KD students' curves (/distill), then the results table, the verdict
as a headline, the hidden-class bias panel, the run's files and the ONNX export. The knobs' widgets and the
results' are made by `knobs` and `results`, in the page's order; `wire` connects them.
"""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

import gradio as gr
from gradio.components.plot import PlotData

from kd_core.config import MAX_REPEATS
from kd_core.engine.bias import BIASES
from kd_core.engine.roles import METHODS
from kd_core.run import resolve_run
from kd_core.serve import settings
from kd_core.ui.common import DEFAULTS, Services, ViewUpdates, live_run_here, stopped, user_errors, with_services
from kd_core.ui.why import WhyPanel, show_diagnosis, why_panel, wire_why
from kd_core.views import export, headline, joined, link, panels, plots, session
from kd_core.views.bias import bias_view

# one line: the loss, and which side α weighs (t, s: teacher and student logits; y: the labels)
FORMULA = (r"$L = \alpha T^2 \, \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)) + (1-\alpha)\,"
           r"\mathrm{CE}(s, y)$ · **α weighs the teacher's soft targets** (t, s: teacher, student logits; y: labels)")
INLINE_LATEX = [{"left": "$", "right": "$", "display": False}]
BIAS_STEP = BIASES[1] - BIASES[0]  # the bias slider's step: the curve's points
START_ID = "kd-start"  # the Train tab's Start button, which the Lesson tab's steps press
# the link box's query -> the page's address with it, copied to the clipboard where the browser allows (it may not,
# in an iframe or without https: the box shows the link either way)
COPY_LINK = """(query) => { const url = window.location.origin + window.location.pathname + (query || '');
  try { navigator.clipboard.writeText(url).catch(() => {}); } catch (e) {} return url; }"""


# ----------------------------------------------------------------------------------------- handlers

@user_errors
def distill(services: Services, temperature: float, alpha: float, epochs: int, lr: float, student: str,
            train_size: int, hide_class: str, seed: int, dataset: str, repeats: int, unlabeled: int,
            methods: list[str], dkd_beta: float, feature_weight: float, class_code: str,
            students: session.SessionStudents | None):
    """Train CE and KD students side by side, one pair per seed; stream the curves, end with the results
    table and the verdict. With a `class_code` (the class's link /?class=CODE), the finished run is a point on
    that class's board (/class_board)."""
    cfg = settings.make_config(temperature=temperature, alpha=alpha, epochs=epochs, lr=lr,
                               student=student, train_size=train_size, hide_class=hide_class, seed=seed,
                               dataset=dataset, repeats=repeats, unlabeled=unlabeled, methods=methods,
                               dkd_beta=dkd_beta, feature_weight=feature_weight)
    run = resolve_run(cfg)  # once, here: the key, the pool, the budget, the engine and the results read it
    updates = ViewUpdates()
    with services.board.training(class_code):  # the board counts the classmates training now
        for view in joined.join_run(services.runs, run, live_run_here(services.pool)):
            finished = view.students.summary if view.students is not None else None
            if class_code and finished is not None and not finished["stopped"]:  # a run the time cap cut: none
                board_point(services, class_code, finished)  # before the result reaches the visitor
            yield (*updates(view, view.log_csv, view.kd_checkpoint),
                   view.students if view.table is not None else gr.skip())
    session.discard(students)  # the new run's students replace the previous run's


def board_point(services: Services, class_code: str, summary: dict) -> None:
    """The run's point on its class's board; a board that cannot be written (a full or read-only disk) costs the
    class one point, never the visitor's result: a warning says so and the run's views go on."""
    try:
        services.board.add(class_code, summary)
    except (OSError, sqlite3.Error) as error:
        gr.Warning(f"Your run is not on the class board: the board could not be saved ({error}).")


def show_bias(students: session.SessionStudents | None):
    """After a run: the hidden-class bias panel when a class was hidden, else nothing."""
    if students is None or students.bias_report is None:
        return gr.Column(visible=False), gr.skip(), gr.skip(), gr.skip()
    spec, caption = bias_view(students)
    return gr.Column(visible=True), gr.Slider(value=students.hidden_bias), PlotData(type="altair", plot=spec), caption


@user_errors
def set_bias(value: float, students: session.SessionStudents | None):
    """Move the hidden-class bias: the curve's marker, the caption, and the students the Predict tab uses."""
    students = session.with_hidden_bias(students, value)
    spec, caption = bias_view(students)
    return PlotData(type="altair", plot=spec), caption, students


@user_errors
def auto_bias(students: session.SessionStudents | None) -> float:
    if students is None or students.bias_report is None:
        raise ValueError("the automatic bias needs a run with a hidden class")
    return round(students.bias_report["auto_bias"] / BIAS_STEP) * BIAS_STEP  # on the slider's steps


def show_headline(students: session.SessionStudents | None) -> str:
    """After a run: the verdict as the headline above the charts (kd_core.views.headline)."""
    return headline.headline_html(None if students is None else students.summary)


def show_downloads(students: session.SessionStudents | None):
    files = session.downloads(students)
    return gr.Row(visible=bool(files)), [str(p) for p in files]


@user_errors
def export_onnx(students: session.SessionStudents | None):
    """The KD student as ONNX with its model card, beside the card already offered, and how fast it runs beside
    the teacher (a few seconds)."""
    view = export.export_view(students)
    return [str(p) for p in view.files], gr.Dataframe(view.latency, visible=True), view.words


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


@user_errors
def settings_link(preset: str, temperature: float, alpha: float, repeats: int, epochs: int, train_size: int,
                  methods: list[str], hide_class: str) -> gr.Textbox:
    """The query of a link to these settings (kd_core.views.link); the page's JS puts its address in front."""
    return gr.Textbox(link.settings_query(preset, temperature, alpha, repeats, epochs, train_size, methods,
                                          hide_class), visible=True)


def group_labels(dataset: str, train_size: int, hide_class: str, unlabeled: int, student: str, lr: float,
                 epochs: int, seed: int, repeats: int, methods: list[str], dkd_beta: float, feature_weight: float):
    """The folded groups' labels: each its one-line summary of its widgets' values (kd_core.views.panels)."""
    return (gr.Accordion(label=panels.data_label(dataset, train_size, hide_class, unlabeled)),
            gr.Accordion(label=panels.students_label(student, lr, epochs, seed, repeats)),
            gr.Accordion(label=panels.methods_label(methods, dkd_beta, feature_weight)))


# ------------------------------------------------------------------------------------------- layout

class TrainControls(NamedTuple):
    """What the Lesson tab sets on the Train tab: the preset picker, the widgets a preset fills, and the folded
    groups whose labels (group_labels) follow them."""

    preset: gr.Dropdown
    preset_outputs: list  # apply_preset's outputs, in its order
    group_inputs: list  # group_labels' inputs, in its order
    groups: list  # the Data, Students and Methods accordions


class Knobs(NamedTuple):
    """The Train tab's settings column, and the orders its handlers take them in."""

    preset: gr.Dropdown
    temperature: gr.Slider
    alpha: gr.Slider
    data_group: gr.Accordion
    dataset: gr.Dropdown
    teacher: gr.Markdown  # a line about the dataset's teacher
    train_size: gr.Dropdown
    hide_class: gr.Dropdown
    unlabeled: gr.Dropdown
    students_group: gr.Accordion
    student: gr.Dropdown
    lr: gr.Dropdown
    epochs: gr.Slider
    seed: gr.Number
    repeats: gr.Slider
    methods_group: gr.Accordion
    methods: gr.CheckboxGroup
    dkd_beta: gr.Slider
    feature_weight: gr.Slider
    link_button: gr.Button  # "Copy a link to these settings"
    link_box: gr.Textbox  # the link, shown (where the clipboard is not allowed, it is copied from here)

    def controls(self) -> list:
        """/distill's inputs but the session's students, in its order."""
        return [self.temperature, self.alpha, self.epochs, self.lr, self.student, self.train_size, self.hide_class,
                self.seed, self.dataset, self.repeats, self.unlabeled, self.methods, self.dkd_beta,
                self.feature_weight]

    def train_controls(self) -> TrainControls:
        preset_outputs = [self.temperature, self.alpha, self.epochs, self.lr, self.seed, self.repeats,
                          self.unlabeled, self.methods, self.dkd_beta, self.feature_weight, self.dataset,
                          self.student, self.train_size, self.hide_class, self.teacher]
        group_inputs = [self.dataset, self.train_size, self.hide_class, self.unlabeled, self.student, self.lr,
                        self.epochs, self.seed, self.repeats, self.methods, self.dkd_beta, self.feature_weight]
        return TrainControls(self.preset, preset_outputs, group_inputs,
                             [self.data_group, self.students_group, self.methods_group])


class Results(NamedTuple):
    """The Train tab's run: Start and Stop (under T and α, in the settings column), then the run column: the run's
    views, the bias panel, files and the ONNX export."""

    start: gr.Button
    stop: gr.Button
    status: gr.HTML
    verdict_headline: gr.HTML  # after a run: the verdict in words, coloured by it (kd_core.views.headline)
    diagnosis: gr.HTML  # after a run: why, and the fix (kd_core.engine.diagnosis)
    losses: gr.LinePlot
    accuracies: gr.Plot
    table: gr.Dataframe
    bias_box: gr.Column
    bias: gr.Slider
    auto: gr.Button
    bias_plot: gr.Plot
    bias_caption: gr.Markdown
    log_file: gr.DownloadButton
    kd_file: gr.DownloadButton
    export_row: gr.Row
    cards: gr.File
    export: gr.Button
    latency: gr.Dataframe
    speedup: gr.Markdown
    why: WhyPanel  # after a run: agreement, calibration, per-class gains (kd_core.ui.why)


def train_tab(students: gr.State, services: Services,
              class_code: gr.Textbox) -> tuple[TrainControls, Knobs, gr.Button]:
    """`class_code`: the session's class (kd_core.ui.board), sent as /distill's last parameter. Returns Start too:
    it is enabled once the page's link has been read (kd_core.ui.page)."""
    gr.Markdown(FORMULA, latex_delimiters=INLINE_LATEX, elem_classes="kd-formula")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            settings_column, buttons = knobs()
        with gr.Column(scale=3):
            run_column = results(*buttons)
    wire(settings_column, run_column, students, services, class_code)
    return settings_column.train_controls(), settings_column, run_column.start


def knobs() -> tuple[Knobs, tuple[gr.Button, gr.Button]]:
    """The settings column and its Start and Stop buttons (the run column's events start from them)."""
    # the gesture first (a preset, T, α, Start: on a phone's first screen too); everything else folded into groups
    # that say their values
    preset = gr.Dropdown(list(settings.PRESETS), value=next(iter(settings.PRESETS)), label="Preset",
                         info="sets every knob; chosen on the validation split")
    temperature = gr.Slider(*settings.APP_TEMPERATURES, DEFAULTS.temperature, step=0.5, label="Temperature T",
                            info="softens both softmaxes")
    alpha = gr.Slider(0, 1, DEFAULTS.alpha, step=0.05, label="α: weight on the teacher's soft targets",
                      info="1 − α weighs CE with the labels")
    with gr.Row():
        # off until the page's load events have applied its link (/?seeds=3&class=CODE): a Start pressed before
        # them would train the defaults, outside the class
        start = gr.Button("Start", variant="primary", elem_id=START_ID, min_width=100, interactive=False)
        stop = gr.Button("Stop", variant="stop", min_width=100)
    with gr.Accordion(panels.data_label(DEFAULTS.dataset, DEFAULTS.train_size, settings.NO_HIDDEN_CLASS,
                                        DEFAULTS.unlabeled), open=False) as data_group:
        dataset = gr.Dropdown([(settings.DATASET_LABELS[name], name) for name in settings.app_datasets()],
                              value=DEFAULTS.dataset, label="Dataset", info=settings.dataset_hint() or None)
        teacher = gr.Markdown(settings.teacher_summary(DEFAULTS.dataset))
        train_size = gr.Dropdown(settings.train_size_choices(DEFAULTS.dataset), value=DEFAULTS.train_size,
                                 label="Training images (class-balanced)")
        # allow_custom_value on the two pickers whose choices follow the dataset: Gradio checks a value against
        # the page's first choices, so an API call for another dataset would be refused; settings.make_config
        # checks every value against its dataset instead, with a clear message
        hide_class = gr.Dropdown(settings.hidden_class_choices(DEFAULTS.dataset), value=settings.NO_HIDDEN_CLASS,
                                 label="Hide one class from the students", allow_custom_value=True,
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
    link_button = gr.Button("Copy a link to these settings", size="sm")
    link_box = gr.Textbox(label="A link that opens the Train tab with these settings", visible=False,
                          interactive=False, elem_id="kd-link")
    return Knobs(preset, temperature, alpha, data_group, dataset, teacher, train_size, hide_class, unlabeled,
                 students_group, student, lr, epochs, seed, repeats, methods_group, methods, dkd_beta, feature_weight,
                 link_button, link_box), (start, stop)


def results(start: gr.Button, stop: gr.Button) -> Results:
    status = gr.HTML('<div class="kd-status">Press Start to train both students.</div>')
    verdict_headline = gr.HTML()
    diagnosis = gr.HTML(elem_id="diagnosis")  # after a run: its findings (kd_core.engine.diagnosis), if any
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
    # wrapped: at 1280×720 every column fits beside the settings (unwrapped, the last three were cut off)
    table = gr.Dataframe(label="Results on the 10,000 test images (mean ± std over seeds)", visible=False,
                         interactive=False, wrap=True, elem_classes="kd-results")
    why = why_panel()
    with gr.Column(visible=False) as bias_box:
        gr.Markdown("### The hidden class's bias\nNo student saw a labelled image of the hidden class, "
                    "so neither ever had its bias pushed up. Raise it and see what the KD student "
                    "learnt from the teacher's soft targets alone (no retraining: the test set is "
                    "re-scored from stored logits).")
        with gr.Row():
            bias = gr.Slider(BIASES[0], BIASES[-1], 0, step=BIAS_STEP,
                             label="Bias added to the hidden class's logit")
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
    return Results(start, stop, status, verdict_headline, diagnosis, losses, accuracies, table, bias_box, bias, auto,
                   bias_plot, bias_caption, log_file, kd_file, export_row, cards, export, latency, speedup, why)


def wire(knob: Knobs, shown: Results, students: gr.State, services: Services, class_code: gr.Textbox) -> None:
    """The Train tab's events: the groups' labels, presets, the dataset's pickers, /distill, Stop, and what
    follows a run."""
    lesson_controls = knob.train_controls()
    group_inputs, groups = lesson_controls.group_inputs, lesson_controls.groups
    # after a visitor's edit of one widget; after a preset or a dataset, once they have set every widget (the change
    # events of a preset's widgets, fired one by one, summarised values that were still being set)
    gr.on([widget.input for widget in group_inputs if widget is not knob.dataset], group_labels, group_inputs, groups,
          api_visibility="private", show_progress="hidden")
    knob.preset.input(apply_preset, knob.preset, lesson_controls.preset_outputs, api_visibility="private").then(
        group_labels, group_inputs, groups, api_visibility="private", show_progress="hidden")
    # .input, not .change: a preset sets the dataset and these pickers itself
    knob.dataset.input(dataset_widgets, [knob.dataset, knob.student, knob.train_size, knob.hide_class],
                       [knob.student, knob.train_size, knob.hide_class, knob.teacher], api_visibility="private").then(
        group_labels, group_inputs, groups, api_visibility="private", show_progress="hidden")
    run = shown.start.click(with_services(distill, services), [*knob.controls(), class_code, students],
                            [shown.status, shown.losses, shown.accuracies, shown.table, shown.log_file, shown.kd_file,
                             students],
                            api_name="distill", concurrency_limit=services.training_visitors,
                            concurrency_id="training", show_progress="full",
                            show_progress_on=[shown.status])  # queue position while waiting
    # "Stopped" once the cancelled run has ended: set beside the cancel, an update the run had in flight could
    # arrive after it and leave the status at that step (the flaky browser test's "step 12/4,300")
    shown.stop.click(None, None, None, cancels=[run], api_visibility="private").then(stopped, None, shown.status,
                                                                                    api_visibility="private")
    run.success(show_bias, students, [shown.bias_box, shown.bias, shown.bias_plot, shown.bias_caption],
                api_visibility="private")
    run.success(show_downloads, students, [shown.export_row, shown.cards], api_visibility="private")
    # the new run's headline comes at its end
    shown.start.click(None, None, [shown.verdict_headline, shown.diagnosis], js="() => ['', '']",
                      api_visibility="private")
    run.success(show_headline, students, shown.verdict_headline, api_visibility="private")
    wire_why(run, students, shown.why)
    run.success(show_diagnosis, students, shown.diagnosis, api_visibility="private")
    # the page's own address + the query, copied where the browser allows it, and shown in the box either way
    knob.link_button.click(settings_link, [knob.preset, knob.temperature, knob.alpha, knob.repeats, knob.epochs,
                                           knob.train_size, knob.methods, knob.hide_class], knob.link_box,
                           api_visibility="private").then(None, knob.link_box, knob.link_box, js=COPY_LINK,
                                                          api_visibility="private")
    shown.export.click(export_onnx, students, [shown.cards, shown.latency, shown.speedup], api_visibility="private",
                       concurrency_id="export", concurrency_limit=1)
    bias_outputs = [shown.bias_plot, shown.bias_caption, students]
    shown.bias.release(set_bias, [shown.bias, students], bias_outputs, api_visibility="private")
    shown.auto.click(auto_bias, students, shown.bias, api_visibility="private").then(
        set_bias, [shown.bias, students], bias_outputs, api_visibility="private")
