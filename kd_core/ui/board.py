"""The Board tab: a class's finished runs as two browser-drawn charts (KD − CE against T and against α), how many
classmates are training now, updated every second; the projector view at `/?class=CODE&view=board` (the board
alone, large type); the /class_board endpoint. A visitor joins a class by its link `/?class=CODE` (`join_from_link`,
the page's load event) or by typing its code here; the page's `class_code` box then goes with every /distill.
Storage: kd_core.serve.class_board; charts: kd_core.views.class_board.
"""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
from gradio.components.plot import PlotData

from kd_core.serve import settings, zerogpu
from kd_core.serve.class_board import ClassBoard
from kd_core.ui.common import Services, user_errors
from kd_core.views import class_board as board_views
from kd_core.views import plots

BOARD_ID = "kd-board"
REFRESH_S = 1.0  # the board's poll: a classmate's point shows within this and a request's round trip (< 2 s)
PROJECTOR_JS = """() => { if (new URLSearchParams(location.search).get('view') === 'board')
    document.body.classList.add('kd-projector'); }"""
NO_CLASS = ("No class joined. A teacher picks a class code (3 to 32 characters of a-z, 0-9 and -) and shares the "
            "link `/?class=CODE`; everyone who opens it is in the class, and their finished runs appear here.")


class Session(NamedTuple):
    """The session's class, made before the tabs: the Train tab sends `class_code` with /distill."""

    class_code: gr.Textbox  # hidden: the session's class ("" none)
    projector: gr.State  # whether this page is the projector view (its charts larger)
    shown: gr.State  # what the board shows now (points, training), so an unchanged tick sends nothing


class Board(NamedTuple):
    """The Board tab's widgets and the session's class."""

    class_code: gr.Textbox
    projector: gr.State
    shown: gr.State
    code: gr.Textbox
    join: gr.Button
    heading: gr.Markdown
    charts: gr.Row  # shown once a class is joined
    by_T: gr.Plot
    by_alpha: gr.Plot
    timer: gr.Timer


# ----------------------------------------------------------------------------------------- handlers

def class_board_api(board: ClassBoard):
    def class_board(class_code: str) -> dict:
        """A class's board: {"class", "training", "rows": [{"T", "alpha", "methods", "seeds", "kd_minus_ce",
        "ci95", "kd_wins"}]}, differences as fractions, oldest run first (points expire after 24 h)."""
        code = settings.check_class_code(class_code)
        return board_views.board_payload(code, board.points(code), board.training_now(code))
    return user_errors(class_board)


def board_view(board: ClassBoard, code: str, projector: bool, shown: tuple | None = None):
    """The heading and both charts of class `code` (nothing new when they show what `shown` says), and what
    they show now."""
    if not code:
        return NO_CLASS, gr.skip(), gr.skip(), None
    points, training = board.points(code), board.training_now(code)
    now = (len(points), points[-1] if points else None, training)
    if now == shown:
        return gr.skip(), gr.skip(), gr.skip(), shown
    size = board_views.PROJECTOR if projector else board_views.TAB
    charts = [PlotData(type="altair", plot=plots.spec_json(board_views.board_spec(points, axis, size)))
              for axis in ("T", "alpha")]
    return board_views.board_heading(code, points, training), *charts, now


def join_from_link(board: ClassBoard):
    """The page's load event: `/?class=CODE` joins the class (a bad code: one line, no class), and
    `&view=board` opens the projector view (the Board tab alone, in large type)."""
    def from_link(request: gr.Request):
        query = request.query_params if request is not None else {}
        asked, projector = query.get("class", ""), query.get("view", "") == "board"
        try:
            code = settings.check_class_code(asked, optional=True, name="class")
        except ValueError as error:
            return "", "", gr.Timer(active=False), f"The link's class was not joined: {error}", gr.skip(), \
                gr.skip(), None, projector, gr.Tabs(selected="board") if projector else gr.skip(), gr.skip()
        heading, by_T, by_alpha, shown = board_view(board, code, projector)
        return (code, code, gr.Timer(active=bool(code)), heading, by_T, by_alpha, shown, projector,
                gr.Tabs(selected="board") if projector else gr.skip(), gr.Row(visible=bool(code)))
    return from_link


def join_typed(board: ClassBoard):
    @user_errors
    def join(typed: str, projector: bool):
        """The Join button: the typed code becomes the session's class (a bad one: one line, nothing changes)."""
        code = settings.check_class_code(typed.strip().lower(), name="the class code")
        heading, by_T, by_alpha, shown = board_view(board, code, projector)
        return code, gr.Timer(active=True), heading, by_T, by_alpha, shown, gr.Row(visible=True)
    return join


def refresh(board: ClassBoard):
    def tick(code: str, projector: bool, shown: tuple | None):
        return board_view(board, code, projector, shown)
    return tick


# ------------------------------------------------------------------------------------------- layout

def classroom_note() -> None:
    """On ZeroGPU: the line that a class behind one connection shares one anonymous quota, and the sign-in."""
    note = zerogpu.classroom_note()
    if note:
        with gr.Row():
            gr.Markdown(note, elem_classes="kd-board-note")
            gr.LoginButton()


def board_tab_state() -> Session:
    return Session(gr.Textbox("", visible=False, label="class_code"), gr.State(False), gr.State(None))


def board_tab(session: Session) -> Board:
    with gr.Column(elem_id=BOARD_ID):
        classroom_note()
        with gr.Row(elem_id="kd-board-join"):
            code = gr.Textbox(label="Class code", placeholder="e.g. physics-7b", max_length=64, scale=3,
                              info="or open the teacher's link /?class=CODE; points are anonymous, kept 24 h")
            join = gr.Button("Join the class", scale=1)
        heading = gr.Markdown(NO_CLASS, elem_classes="kd-board-heading")
        with gr.Row(visible=False) as charts:
            by_T = gr.Plot(show_label=False)
            by_alpha = gr.Plot(show_label=False)
    timer = gr.Timer(REFRESH_S, active=False)
    return Board(*session, code, join, heading, charts, by_T, by_alpha, timer)


def wire(page: gr.Blocks, tabs: gr.Tabs, shown: Board, services: Services, after=None):
    """The link's class and view at load (after the event `after`, when given: one link reader at a time, since both
    may select a tab), the Join button, the live refresh, and /class_board. Returns the class's load event."""
    board = services.board
    view = [shown.heading, shown.by_T, shown.by_alpha, shown.shown]
    outputs = [shown.class_code, shown.code, shown.timer, *view, shown.projector, tabs, shown.charts]
    load = page.load if after is None else after.then
    joined = load(join_from_link(board), None, outputs, js=PROJECTOR_JS, api_visibility="private",
                  show_progress="hidden")
    shown.join.click(join_typed(board), [shown.code, shown.projector],
                     [shown.class_code, shown.timer, *view, shown.charts],
                     api_visibility="private")
    shown.timer.tick(refresh(board), [shown.class_code, shown.projector, shown.shown], view,
                     api_visibility="private", show_progress="hidden", concurrency_id="board",
                     concurrency_limit=16)
    gr.api(class_board_api(board), api_name="class_board", concurrency_id="board")
    return joined
