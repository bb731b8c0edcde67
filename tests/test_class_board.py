"""The class board: its store (kd_core.serve.class_board: codes, anonymity, expiry, restarts, threads), its view
(kd_core.views.class_board) and the app's /distill class_code and /class_board, driven through gradio_client."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
import uuid

import pytest

from kd_core.serve import settings
from kd_core.serve.class_board import TTL_S, ClassBoard, Point, point_of, run_key
from kd_core.views import class_board as views

BAD_CODES = ["", "ab", "a" * 33, "Physics", "physics 7b", "../../etc/passwd", "x/y", "a.b", "class;drop",
             "ph\u00e9", "abc\n", None, 42, ["abc"]]


def summary(T: float = 4.0, alpha: float = 0.9, seed: int = 0, gain: float = 0.012,
            ci95: list[float] | None = (0.004, 0.020), wins: int = 3, repeats: int = 3) -> dict:
    """A run's summary as RunResult.summary() has it: the fields a point reads."""
    return {"config": {"temperature": T, "alpha": alpha, "methods": ("kd",), "seed": seed, "repeats": repeats},
            "repeats": repeats, "kd_minus_ce": {"mean": gain, "std": 0.01, "ci95": None if ci95 is None else list(ci95),
                                                "n": repeats},
            "kd_wins": wins, "stopped": False}


def unique_code() -> str:
    return f"class-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def board(tmp_path):
    store = ClassBoard(tmp_path / "board.sqlite")
    yield store
    store.close()


# ------------------------------------------------------------------------------------------- the store

@pytest.mark.parametrize("code", BAD_CODES, ids=repr)
def test_a_bad_code_is_one_line_and_nothing_is_stored(board, code):
    with pytest.raises(ValueError) as raised:
        board.add(code, summary())
    message = str(raised.value)
    assert message.startswith("class_code must be 3 to 32 characters of a-z, 0-9 and -; got ") and "\n" not in message
    with pytest.raises(ValueError):
        board.points(code)
    assert not board.path.exists()  # not even the file: a bad code never reaches SQLite


@pytest.mark.parametrize("code", ["abc", "a" * 32, "physics-7b", "0-0", "---"])
def test_good_codes_are_accepted(code):
    assert settings.check_class_code(code) == code
    assert settings.check_class_code("", optional=True) == ""


def test_a_point_is_the_runs_t_alpha_methods_seeds_gain_interval_and_wins(board):
    added = board.add("physics-7b", summary(T=2.5, alpha=0.3, gain=-0.004, ci95=[-0.01, 0.002], wins=1))
    assert added == Point(2.5, 0.3, ("kd",), 3, -0.004, (-0.01, 0.002), 1)
    assert board.points("physics-7b") == [added]
    assert added.row() == {"T": 2.5, "alpha": 0.3, "methods": ["kd"], "seeds": 3, "kd_minus_ce": -0.004,
                           "ci95": [-0.01, 0.002], "kd_wins": 1}
    one_seed = board.add("physics-7b", summary(seed=9, ci95=None, repeats=1, wins=1))
    assert one_seed.ci95 is None and board.points("physics-7b")[-1].row()["ci95"] is None


def test_the_store_holds_no_names_or_addresses(board):
    board.add("physics-7b", summary())
    with sqlite3.connect(board.path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(points)")]
    assert columns == ["class", "run_key", "created", "T", "alpha", "methods", "seeds", "kd_minus_ce", "ci_low",
                       "ci_high", "kd_wins"]


def test_classes_are_apart_and_one_run_is_one_point(board):
    board.add("class-a", summary(T=2))
    board.add("class-a", summary(T=2))  # the same run, shared or replayed by a classmate
    board.add("class-a", summary(T=2, seed=1))
    board.add("class-b", summary(T=8))
    assert [p.T for p in board.points("class-a")] == [2, 2] and [p.T for p in board.points("class-b")] == [8]
    assert board.points("class-c") == []
    assert run_key(summary(T=2)) != run_key(summary(T=2, seed=1))


def test_points_expire_after_24_hours(tmp_path):
    now = [1_000_000.0]
    board = ClassBoard(tmp_path / "board.sqlite", clock=lambda: now[0])
    board.add("physics-7b", summary(T=1))
    now[0] += TTL_S - 1
    board.add("physics-7b", summary(T=2))
    assert [p.T for p in board.points("physics-7b")] == [1, 2]
    now[0] += 2  # the first point is 24 h and 1 s old
    assert [p.T for p in board.points("physics-7b")] == [2]
    board.add("physics-7b", summary(T=3))  # a write deletes what expired
    with sqlite3.connect(board.path) as db:
        assert sorted(t for (t,) in db.execute("SELECT T FROM points")) == [2, 3]
    now[0] += TTL_S + 1
    assert board.points("physics-7b") == []


def test_a_restart_keeps_the_class(tmp_path):
    first = ClassBoard(tmp_path / "board.sqlite")
    first.add("physics-7b", summary(T=3))
    first.close()
    assert [p.T for p in ClassBoard(tmp_path / "board.sqlite").points("physics-7b")] == [3]


def test_the_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CLASS_BOARD_DB", str(tmp_path / "elsewhere" / "b.sqlite"))
    board = ClassBoard()
    board.add("physics-7b", summary())
    assert (tmp_path / "elsewhere" / "b.sqlite").is_file()
    monkeypatch.delenv("KD_CLASS_BOARD_DB")
    monkeypatch.setenv("KD_DATA_DIR", str(tmp_path / "data"))
    assert ClassBoard().path == tmp_path / "data" / "class_board.sqlite"


def test_many_threads_add_and_read_at_once(board):
    errors = []

    def visitor(i: int) -> None:
        try:
            for j in range(10):
                board.add("busy-class", summary(T=0.5 + i, seed=j))
                with board.training("busy-class"):
                    board.points("busy-class")
        except Exception as error:  # noqa: BLE001 -- collected, asserted below
            errors.append(error)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(board.points("busy-class")) == 200 and board.training_now("busy-class") == 0


def test_training_counts_classmates_in_flight(board):
    with board.training("physics-7b"), board.training("physics-7b"), board.training(""):
        assert board.training_now("physics-7b") == 2 and board.training_now("other-class") == 0
    assert board.training_now("physics-7b") == 0


# ------------------------------------------------------------------------------------------- the view

def test_the_payload_and_the_class_means():
    points = [point_of(summary(T=2, gain=0.01)), point_of(summary(T=2, gain=0.03, seed=1)),
              point_of(summary(T=8, gain=-0.02, alpha=0.5))]
    payload = views.board_payload("physics-7b", points, 4)
    assert payload["class"] == "physics-7b" and payload["training"] == 4 and len(payload["rows"]) == 3
    assert views.class_means(points, "T") == [(2, pytest.approx(2.0), 2), (8, pytest.approx(-2.0), 1)]
    assert views.class_means(points, "alpha") == [(0.5, pytest.approx(-2.0), 1), (0.9, pytest.approx(2.0), 2)]
    assert views.board_heading("physics-7b", points, 1) == (
        "Class physics-7b: 3 runs on the board · 1 classmate training now · best T so far: 2 (KD − CE +2.0 "
        "points, mean of 2 runs)")


def test_the_chart_has_a_dot_and_interval_per_run_and_a_mean_per_value():
    points = [point_of(summary(T=2, gain=0.01, ci95=[0.0, 0.02])), point_of(summary(T=2, gain=0.03, seed=1)),
              point_of(summary(T=8, gain=-0.02, ci95=None, repeats=1, wins=0))]
    spec = views.board_spec(points, "T", views.PROJECTOR)
    _, intervals, dots, means = spec["layer"]
    assert [(r["x"], r["gain"], r["low"], r["high"]) for r in dots["data"]["values"]] == [
        (2, pytest.approx(1.0), pytest.approx(0.0), pytest.approx(2.0)),
        (2, pytest.approx(3.0), pytest.approx(0.4), pytest.approx(2.0)), (8, pytest.approx(-2.0), None, None)]
    assert intervals["transform"] == [{"filter": "datum.low != null"}]
    assert [(r["x"], r["mean"], r["runs"]) for r in means["data"]["values"]] == [(2, pytest.approx(2.0), 2),
                                                                                (8, pytest.approx(-2.0), 1)]
    assert spec["width"] == views.PROJECTOR.width and spec["config"]["axis"]["labelFontSize"] == views.PROJECTOR.font
    json.dumps(spec, allow_nan=False)  # what the browser gets
    with pytest.raises(ValueError, match="axis must be one of T, alpha"):
        views.board_spec(points, "lr")


# ----------------------------------------------------------------------------------------------- the app

TINY = {"alpha": 0.5, "epochs": 1, "train_size": 500, "repeats": 2}


def board_rows(client, code: str) -> list[dict]:
    return client.predict(code, api_name="/class_board")["rows"]


def test_two_classmates_see_each_others_points_within_2_s_and_another_class_sees_neither(server):
    from gradio_client import Client

    first, second, outsider = (Client(server, verbose=False) for _ in range(3))
    code, other = unique_code(), unique_code()
    jobs = {T: client.submit(temperature=T, **TINY, class_code=code, api_name="/distill")
            for T, client in ((2.0, first), (6.0, second))}
    outsider_job = outsider.submit(temperature=4.0, **TINY, class_code=other, api_name="/distill")
    seen_after = {}
    for T, job in jobs.items():
        job.result(timeout=300)
        done = time.perf_counter()
        reader = second if T == 2.0 else first  # the other classmate
        while T not in [row["T"] for row in board_rows(reader, code)]:
            assert time.perf_counter() - done < 2.0, f"T={T}: not on the board 2 s after its result"
            time.sleep(0.1)
        seen_after[T] = time.perf_counter() - done
    outsider_job.result(timeout=300)
    rows = board_rows(outsider, code)
    assert sorted(row["T"] for row in rows) == [2.0, 6.0]
    for row in rows:
        assert row["seeds"] == 2 and row["methods"] == ["kd"] and 0 <= row["kd_wins"] <= 2
        low, high = row["ci95"]
        assert low <= row["kd_minus_ce"] <= high and abs(row["kd_minus_ce"]) < 0.5  # a fraction, not points
        assert set(row) == {"T", "alpha", "methods", "seeds", "kd_minus_ce", "ci95", "kd_wins"}
    assert [row["T"] for row in board_rows(first, other)] == [4.0]  # the other class saw neither
    assert max(seen_after.values()) < 2.0


def test_a_bad_class_code_is_refused_before_training_and_nothing_is_stored(server):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    import app

    client = Client(server, verbose=False)
    before = app.SERVICES.board.path.stat().st_size if app.SERVICES.board.path.exists() else 0
    for code in ("ab", "../etc", "Physics-7B"):
        with pytest.raises(AppError, match=r"^class_code must be 3 to 32 characters of a-z, 0-9 and -, or empty "):
            client.predict(temperature=2.0, **TINY, class_code=code, api_name="/distill")
        with pytest.raises(AppError, match=r"^class_code must be 3 to 32 characters"):
            client.predict(code, api_name="/class_board")
    after = app.SERVICES.board.path.stat().st_size if app.SERVICES.board.path.exists() else 0
    assert after == before


@pytest.mark.slow
def test_a_30_visitor_class_rush_ends_with_30_points_and_no_errors(server):
    """T = 0.5 … 15, one tiny run each, all at once through gradio_client."""
    from gradio_client import Client

    code = unique_code()
    temperatures = [0.5 * i for i in range(1, 31)]
    clients = [Client(server, verbose=False) for _ in temperatures]
    started = time.perf_counter()
    jobs = [client.submit(temperature=T, alpha=0.5, epochs=1, train_size=500, repeats=1, class_code=code,
                          api_name="/distill") for client, T in zip(clients, temperatures, strict=True)]
    errors = []
    for job in jobs:
        try:
            job.result(timeout=600)
        except Exception as error:  # noqa: BLE001 -- counted
            errors.append(error)
    elapsed = time.perf_counter() - started
    board = clients[0].predict(code, api_name="/class_board")
    assert errors == []
    assert sorted(row["T"] for row in board["rows"]) == temperatures and board["training"] == 0
    assert all(math.isfinite(row["kd_minus_ce"]) and row["ci95"] is None for row in board["rows"])  # 1 seed each
    print(f"30-visitor class rush: {elapsed:.1f} s")


# ------------------------------------------------------------------------------------------- the browser

def run_in_page(page, screenshots, temperature: float) -> None:
    """Set T and 1 epoch on the Train tab, press Start and wait for the result."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train").click()
    screenshots.open_group(page, "Students")
    for label, value in (("Epochs", "1"), ("Temperature T", f"{temperature:g}")):
        page.get_by_label(f"number input for {label}").fill(value)
        page.get_by_label(f"number input for {label}").press("Enter")
    expect(screenshots.group(page, "Students")).to_contain_text("1 epoch")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.locator(".kd-status")).to_contain_text("done:", timeout=120_000)


@pytest.mark.browser
def test_two_browsers_in_one_class_see_each_others_points_and_the_projector_shows_the_class(server, screenshots):
    from playwright.sync_api import expect, sync_playwright

    import app

    code, other = unique_code(), unique_code()
    heading = "div.prose.kd-board-heading"
    out = screenshots.ROOT / "screenshots"
    with sync_playwright() as playwright:
        browser = screenshots.launch_chromium(playwright)
        try:
            first, second, outsider = (browser.new_page(viewport={"width": 1280, "height": 900}) for _ in range(3))
            for page, joined in ((first, code), (second, code), (outsider, other)):
                page.goto(f"{server}?class={joined}")
                page.get_by_role("tab", name="Board").click()
                expect(page.locator(heading)).to_contain_text(f"Class {joined}: 0 runs on the board")
            run_in_page(first, screenshots, 2.0)
            expect(second.locator(heading)).to_contain_text(f"Class {code}: 1 run on the board", timeout=2_000)
            run_in_page(second, screenshots, 6.0)
            first.get_by_role("tab", name="Board").click()
            expect(first.locator(heading)).to_contain_text(f"Class {code}: 2 runs on the board", timeout=2_000)
            expect(outsider.locator(heading)).to_contain_text(f"Class {other}: 0 runs on the board")
            assert sorted(p.T for p in app.SERVICES.board.points(code)) == [2.0, 6.0]
            first.screenshot(path=out / "board.png", full_page=True)

            projector = browser.new_page(viewport={"width": 1280, "height": 720})
            projector.goto(f"{server}?class={code}&view=board")
            expect(projector.locator(heading)).to_contain_text(f"Class {code}: 2 runs on the board")
            expect(projector.get_by_role("tab", name="Train")).not_to_be_visible()  # the board alone
            expect(projector.get_by_text("KD Playground")).not_to_be_visible()
            size = projector.locator(f"{heading} p").evaluate("p => parseFloat(getComputedStyle(p).fontSize)")
            assert size >= 28  # large type
            projector.wait_for_timeout(1000)  # the charts drawn
            projector.screenshot(path=out / "board-projector.png")

            bad = browser.new_page()
            bad.goto(f"{server}?class=../../etc")
            bad.get_by_role("tab", name="Board").click()
            expect(bad.locator(heading)).to_contain_text("The link's class was not joined: class must be 3 to 32 "
                                                         "characters of a-z, 0-9 and -")
        finally:
            browser.close()


def test_a_board_that_cannot_be_written_costs_the_point_not_the_visitors_result(tmp_path):
    from types import SimpleNamespace

    from kd_core.ui.train import board_point

    (tmp_path / "not-a-folder").write_text("a file where the board's folder should be")
    broken = ClassBoard(tmp_path / "not-a-folder" / "board.sqlite")
    with pytest.raises(OSError):
        broken.add("physics-7b", summary())
    with pytest.warns(UserWarning, match="not on the class board"):  # gr.Warning outside a request
        board_point(SimpleNamespace(board=broken), "physics-7b", summary())
