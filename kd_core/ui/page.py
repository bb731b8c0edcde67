"""The page: the intro, the header, and the seven tabs (one module each) assembled by `build`, with a session's
students held in a gr.State and freed when the visitor leaves (`release_session`).
"""

from __future__ import annotations

import gradio as gr

from kd_core.serve import settings
from kd_core.ui import board, publish
from kd_core.ui.common import CheckedBlocks, Services
from kd_core.ui.dark_knowledge import dark_knowledge_tab
from kd_core.ui.lesson import lesson_tab
from kd_core.ui.link import link_notice, wire_link
from kd_core.ui.own_data import own_data_tab
from kd_core.ui.predict import predict_tab
from kd_core.ui.sweep import sweep_tab
from kd_core.ui.train import train_tab
from kd_core.views import session

INTRO = """# KD Playground
A **teacher** network's softened predictions (temperature **T**) train a small **KD student**, while its
twin, the **CE student**, learns from the labels alone: same size, same initial weights, same batches.
Pick T and α, press **Start**, and watch both learn side by side (Fashion-MNIST unless you pick another
dataset). Each run trains several seeds at once, so the verdict tells a real effect from luck. **Why KD helps
here and not always:** with 1,000 labelled images the teacher's soft targets carry what the labels lack (which
garments look alike), and KD wins in every seed; with all 55,000 labels the CE student learns that itself
(the *Full data* preset: no gain beyond seed noise)."""


def header(services: Services) -> str:
    return (f"Training runs on **{session.device_label()}** · one run is capped at {settings.MAX_APP_EPOCHS} "
            f"epochs and {settings.max_run_seconds():g} s; runs that differ only in T, α, methods or seeds train "
            f"together as one stack; {services.concurrent_runs} training slots, which stacks, sweeps and Your-data "
            f"teachers share, and others wait in the queue.")


def delete_session_state(page: gr.Blocks, session_hash: str) -> None:
    """Run the delete_callback of every gr.State of one session now and drop the values.

    Gradio (6.31) has no public API for this: `Blocks.state_holder` (set when the page is launched) and
    its `delete_state` are private, so this is the one place that touches them, and
    tests/test_gradio_private_api.py fails loudly when an upgrade changes them.
    """
    holder = getattr(page, "state_holder", None)
    if holder is None or not callable(getattr(holder, "delete_state", None)):
        raise RuntimeError(f"Gradio {gr.__version__} changed Blocks.state_holder.delete_state, which "
                           f"kd_core.ui.page.delete_session_state relies on to free a closed session's students")
    holder.delete_state(session_hash)


def release_session(page: gr.Blocks):
    """The unload handler: when a visitor's tab (or client) disconnects, delete the session's gr.State now,
    which frees its students and, through `session.discard`, their run files. Gradio on its own keeps a
    closed session's state for an hour, in case the same session reconnects; a new page load never does."""
    async def release(request: gr.Request) -> None:  # async: on the event loop, as Gradio's expiry sweep is
        delete_session_state(page, request.session_hash)
    return release


def build(services: Services, delete_cache: tuple[int, int]) -> gr.Blocks:
    """The page, its training served by `services`. The dataset picker offers what is on this machine when this
    runs (settings.app_datasets). `delete_cache`: (every s, older than s), see app.CACHE_CLEANUP."""
    publish.serve_runtime()
    with CheckedBlocks(title="KD Playground", delete_cache=delete_cache) as page:
        with gr.Column(elem_id="kd-intro"):  # hidden in the class board's projector view
            gr.Markdown(INTRO, elem_classes="kd-intro")
            gr.Markdown(header(services), elem_classes="kd-header")
            board.classroom_note()
        students = gr.State(None, delete_callback=session.discard)  # this browser session's students
        lesson_banner = gr.Markdown(visible=False, elem_classes="kd-banner")  # the lesson's question, once it runs
        notice = link_notice()  # what of the page's link was ignored, and why
        class_board = board.board_tab_state()
        with gr.Tabs() as tabs:
            with gr.Tab("Train", id="train"):
                train, knobs, start = train_tab(students, services, class_board.class_code)
            with gr.Tab("Predict"):
                predict_tab(page, students)
            with gr.Tab("Dark knowledge", id="dark-knowledge"):
                dark_temperature = dark_knowledge_tab(page)
            with gr.Tab("Sweep"):
                sweep_tab(services)
            with gr.Tab("Lesson", id="lesson"):
                lesson = lesson_tab(tabs, lesson_banner, train, dark_temperature)
            with gr.Tab("Your data"):
                own_data_tab(services)
            with gr.Tab("Board", id="board"):
                class_board = board.board_tab(class_board)
        linked = wire_link(page, notice, tabs, knobs, lesson)  # the query's knobs, hidden controls and lesson step
        joined = board.wire(page, tabs, class_board, services, after=linked)  # /?class=CODE; &view=board
        joined.then(lambda: gr.Button(interactive=True), None, start, api_visibility="private",
                    show_progress="hidden")  # the link is applied: Start trains what the page shows
        page.unload(release_session(page))
    return page.queue(max_size=64, default_concurrency_limit=4)
