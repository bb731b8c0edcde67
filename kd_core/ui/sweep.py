"""The Sweep tab: a KD student for every T × α pair, plus the CE baseline, trained in one batched pass (/sweep),
streamed as a heatmap, two line charts and the grid's table.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
from gradio.components.plot import PlotData

from kd_core.config import MAX_REPEATS
from kd_core.engine.sweep import MAX_GRID
from kd_core.engine.sweep import parse_values as sweep_values
from kd_core.run import resolve_run
from kd_core.serve import settings
from kd_core.serve.zerogpu import in_caller_context
from kd_core.ui.common import DEFAULTS, Services, user_errors, with_services
from kd_core.views import joined, plots
from kd_core.views.sweep import live_sweep


@user_errors
def sweep(services: Services, temperatures: str, alphas: str, epochs: int, train_size: int, repeats: int):
    """Train a KD student per (T, α) and the CE baseline, for each seed, in one batched pass; stream the
    heatmap."""
    run = resolve_run(settings.sweep_config(epochs, train_size, repeats))
    grid = (sweep_values("temperatures", temperatures), sweep_values("alphas", alphas))
    # a sweep takes a slot of the one pool (its stack trains through the pool's GPU-decorated engine); in this
    # handler's context, so that ZeroGPU charges this visitor's quota
    on_device = in_caller_context(partial(live_sweep, train=services.pool.events))
    for view in joined.join_sweep(services.sweeps, run, *grid, start=on_device):
        yield (view.status, gr.skip() if view.heatmap is None else PlotData(type="matplotlib", plot=view.heatmap),
               plots.sweep_lines(view.frame, "alpha"), plots.sweep_lines(view.frame, "T"),
               gr.Dataframe(view.frame, visible=view.done))


def sweep_tab(services: Services) -> None:
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
        # tilted: level, α's ticks ran into each other ("0.850.90.9")
        by_alpha = gr.LinePlot(x="alpha", y="accuracy", color="T", height=280, x_title="α", x_label_angle=-45,
                               title="Accuracy vs α (one line per T)", y_title="accuracy (%)")
    table = gr.Dataframe(label="Grid", visible=False, interactive=False)
    run = start.click(with_services(sweep, services), [temperatures, alphas, epochs, train_size, repeats],
                      [status, heatmap, by_t, by_alpha, table],
                      api_name="sweep", concurrency_limit=services.training_visitors, concurrency_id="training")
    stop.click(None, None, None, cancels=[run], api_visibility="private").then(lambda: "Stopped.", None, status,
                                                                              api_visibility="private")
