"""What every tab shares: the one decorator that shows a visitor's errors (`user_errors`), the shared services a
page is built with (`Services`: shared runs, the stack pool), a run's views as Gradio outputs (`ViewUpdates`),
pictures in and out of Gradio's cache, the page's CSS, and `CheckedBlocks`, which checks the values of each API
call (kd_core.serve.settings.api_checks) before Gradio's own preprocessing.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import gradio as gr
from gradio.components.plot import PlotData
from gradio.utils import get_upload_folder
from PIL import Image

from kd_core.config import RunConfig
from kd_core.data.datasets import DatasetUnavailable
from kd_core.engine.train import TrainingDiverged
from kd_core.models import predict
from kd_core.models.checkpoints import CHECKPOINT_DIR
from kd_core.publish.export import ExportUnavailable
from kd_core.serve import settings, shared_runs, stack_pool
from kd_core.serve.class_board import ClassBoard
from kd_core.serve.zerogpu import in_caller_context
from kd_core.views import plots, run_view, served

DEFAULTS = RunConfig()
EXAMPLES = sorted(str(path) for path in (CHECKPOINT_DIR / "examples").glob("*.png"))
TOP_K = 3  # classes shown per model in the Predict tab
# a visitor's errors: each is one line for the page (CheckpointError is a ValueError; ExportUnavailable names the
# missing ONNX packages, which requirements.txt installs)
USER_ERRORS = (ValueError, DatasetUnavailable, TrainingDiverged, ExportUnavailable)
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
.kd-diagnosis { background: #fef9c3; color: #422006; border-radius: 6px; padding: 0.4em 0.7em; }
.kd-diagnosis ul { margin: 0.2em 0 0 1.1em; }
.kd-lesson { font-size: 1.3em; }
.kd-banner { font-size: 1.1em; background: #ffedd5; border-radius: 6px; }
/* the class board; its projector view (/?class=CODE&view=board) shows the board alone, in large type; the class
   kd-projector is on <body>, outside the container Gradio scopes these rules to, hence !important */
.kd-board-heading p { font-size: 1.25em; font-weight: 600; }
.kd-projector #kd-intro, .kd-projector .tab-wrapper, .kd-projector [role="tablist"], .kd-projector footer,
.kd-projector #kd-board-join { display: none !important; }
.kd-projector .kd-board-heading p { font-size: 2.2em !important; line-height: 1.25 !important; }
.kd-projector .kd-board-note p { font-size: 1.4em !important; }
/* the results table: every column beside the settings at 1280×720 (with its headers wrapped) */
.kd-results table { font-size: 12px !important; }
.kd-results th, .kd-results td { padding-left: 4px !important; padding-right: 4px !important; }
/* a phone (390×844): T, α and Start on the first screen, so the words above them shrink and the server's
   details (the header line) wait for a larger screen */
@media (max-width: 640px) {
  .kd-intro p, .kd-formula p { font-size: 13px !important; line-height: 1.35 !important; }
  .kd-intro h1 { font-size: 24px !important; margin: 0 !important; }
  .kd-header { display: none !important; }
}
"""


@dataclass(frozen=True)
class Services:
    """What every visitor of a process shares, made once by app.py and handed to `build`."""

    runs: shared_runs.SharedRuns  # Train and Your data runs: identical requests share one
    sweeps: shared_runs.SharedRuns  # the Sweep tab's: a sweep is a stack of its own
    pool: stack_pool.StackPool  # the one owner of training slots
    training_visitors: int  # /distill and /sweep calls served at once (each holds a thread)
    concurrent_runs: int  # stacks training at once (the header says so)
    # the class board's points ($KD_CLASS_BOARD_DB); the file is opened at the first class's first call
    board: ClassBoard = dataclasses.field(default_factory=ClassBoard)


def user_errors(handler: Callable) -> Callable:
    """`handler`, with the errors that are a visitor's to fix (USER_ERRORS) shown to them as a gr.Error with the
    error's message and no traceback in the log. A generator handler stays a generator, which Gradio streams."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except USER_ERRORS as error:
                raise gr.Error(str(error), print_exception=False) from None
        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except USER_ERRORS as error:
            raise gr.Error(str(error), print_exception=False) from None
    return call


def with_services(handler: Callable, services: Services) -> Callable:
    """`handler(services, ...)` as Gradio calls it, with the inputs only. Gradio documents an endpoint from its
    function: the parameters are the handler's less `services` (a partial's), the description its docstring."""
    bound = partial(handler, services)
    bound.__name__, bound.__doc__ = handler.__name__, handler.__doc__
    return bound


def live_run_here(pool: stack_pool.StackPool):
    """The Train tab's run through the stack pool, iterated in this handler's context from the shared run's
    thread: a stack's thread runs in its first member's context, where ZeroGPU finds the visitor to charge."""
    return in_caller_context(partial(run_view.live_run, train=pool.events))


def stopped() -> str:
    return '<div class="kd-status">Stopped. Change the settings and press Start again.</div>'


def open_picture(image: dict | str):
    """An image input's picture (events with preprocess=False get Gradio's FileData dict), or ValueError.

    Gradio deletes an upload an hour after it was sent (app.CACHE_CLEANUP), while the page can still show it."""
    path = image["path"] if isinstance(image, dict) else image
    if not os.path.isfile(path):
        raise ValueError("This picture is no longer on the server (uploads are kept for an hour): upload it "
                         "again.")
    return predict.open_image(path)


def served_picture(picture: Image.Image) -> str:
    """A picture to show, as a file written whole in Gradio's cache (kd_core.views.served): Gradio 6.31 writes a
    returned PIL image in place, and identical previews of concurrent requests were served half-written."""
    return str(served.picture_file(picture, served.folder(get_upload_folder())))


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


@user_errors
def check_api_values(api_name: str | None, inputs: list, uploads: Path) -> None:
    """An API call's values checked by settings.api_checks (ValueError naming the parameter), if it has a check."""
    names, check = settings.api_checks(uploads).get(api_name, ((), None))
    if check is not None:
        if len(inputs) < len(names):
            raise ValueError(f"/{api_name} takes {len(names)} values ({', '.join(names)}); got {len(inputs)}")
        check(**dict(zip(names, inputs, strict=False)))


class CheckedBlocks(gr.Blocks):
    """gr.Blocks that checks the values of each API call (settings.api_checks) before Gradio's own
    preprocessing, which answers a wrong type with a generic error ("The upstream Gradio app has raised an
    exception") or a message that names no parameter ("Value: x is not in the list of choices")."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call=False):
        check_api_values(block_fn.api_name, inputs, Path(self.GRADIO_CACHE))
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)
