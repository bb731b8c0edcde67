"""Links that set the lesson (kd_core.views.link, kd_core.ui.link): the query's knobs through the same checks as a
Start, one line per ignored parameter, `hide=` and `lesson=`, the copy-link button's query read back; and the same
in headless Chromium, where a preset's cascade must not overwrite an explicit value."""

from urllib.parse import parse_qsl

import pytest

from kd_core.serve import settings
from kd_core.views import lesson
from kd_core.views.link import HIDE_NAMES, LINK_KNOBS, preset_knobs, read_link, settings_query

DEFAULT_PRESET = next(iter(settings.PRESETS))
FULL_DATA = "Full data: no gain here"


def test_a_link_sets_the_knobs_it_names_and_keeps_the_defaults_of_the_others():
    opened = read_link({"T": "2.5", "alpha": "0.3", "seeds": "3"})
    assert opened.preset == DEFAULT_PRESET and opened.notes == () and opened.hide == () and opened.lesson is None
    assert opened.knobs == {**preset_knobs(DEFAULT_PRESET), "temperature": 2.5, "alpha": 0.3, "repeats": 3}
    cfg = opened.config
    assert (cfg.temperature, cfg.alpha, cfg.seeds) == (2.5, 0.3, (0, 1, 2))


def test_the_preset_applies_first_and_an_explicit_value_after_it():
    opened = read_link({"preset": FULL_DATA.upper(), "T": "7", "methods": "kd, dist", "hide_class": "dress"})
    assert opened.preset == FULL_DATA and opened.notes == ()
    assert opened.knobs == {**preset_knobs(FULL_DATA), "temperature": 7.0, "methods": ["kd", "dist"],
                            "hide_class": "Dress"}
    assert (opened.config.train_size, opened.config.epochs, opened.config.hide_class) == (0, 3, 3)


@pytest.mark.parametrize("name, text, why", [
    ("T", "abc", "temperature must be a number in [0.5, 20]; got 'abc'"),
    ("T", "nan", "temperature must be a number in [0.5, 20]; got nan"),
    ("alpha", "1.5", "alpha must be a number in [0, 1]; got 1.5"),
    ("seeds", "9", "repeats must be a whole number in [1, 8]"),
    ("epochs", "2.5", "epochs must be a whole number in [1, 20]"),
    ("train_size", "123", "train_size must be one of 0, 20000"),
    ("methods", "kd,foo", "methods must be a list of one or more of kd"),
    ("hide_class", "Unicorn", "hide_class must be 'none' or one of"),
])
def test_a_bad_value_keeps_the_default_and_one_line_names_it(name, text, why):
    opened = read_link({name: text, "alpha": "0.3"} if name != "alpha" else {name: text})
    assert opened.knobs[LINK_KNOBS[name]] == preset_knobs(DEFAULT_PRESET)[LINK_KNOBS[name]]
    assert len(opened.notes) == 1 and opened.notes[0].startswith(f"Ignored {name}={text!r} from the link: ")
    assert why in opened.notes[0]
    if name != "alpha":  # the good value beside it still applies
        assert opened.knobs["alpha"] == 0.3


def test_hide_lesson_and_a_bad_preset():
    opened = read_link({"hide": "Data, students,methods,wings", "lesson": "3", "class": "room-12"})
    assert opened.hide == ("data", "students", "methods") and opened.lesson == 2
    assert opened.notes == (f"Ignored hide='wings' from the link: no such control; hide names: "
                            f"{', '.join(HIDE_NAMES)}",)  # (`class` is another feature's: left alone)
    for step in ("0", str(len(lesson.STEPS) + 1), "two"):
        assert read_link({"lesson": step}).lesson is None
        assert f"lesson must be a step from 1 to {len(lesson.STEPS)}" in read_link({"lesson": step}).notes[0]
    bad = read_link({"preset": "Nope", "T": "3"})
    assert bad.preset == DEFAULT_PRESET and bad.knobs["temperature"] == 3.0 and "no such preset" in bad.notes[0]


def test_the_copied_query_opens_the_same_settings():
    knobs = dict(temperature=7.0, alpha=0.5, repeats=5.0, epochs=3.0, train_size=0, methods=["kd", "dkd"],
                 hide_class="Dress")
    query = settings_query(FULL_DATA, **knobs)
    pairs = dict(parse_qsl(query.removeprefix("?")))
    assert pairs == {"preset": FULL_DATA, "T": "7", "methods": "kd,dkd", "hide_class": "Dress"}  # what differs
    assert read_link(pairs).knobs == {**preset_knobs(FULL_DATA), "temperature": 7.0, "methods": ["kd", "dkd"],
                                      "hide_class": "Dress"}
    assert settings_query(DEFAULT_PRESET, 4.0, 0.9, 5, 20, 1000, ["kd"], "none") == ""  # the defaults: no query
    with pytest.raises(ValueError, match="unknown preset"):
        settings_query("Nope", 4.0, 0.9, 5, 20, 1000, ["kd"], "none")


# ------------------------------------------------------------------------------------------ Chromium

def opened(browser, server, query: str, ready: tuple[str, str] = ("button", "Start")):
    """A page at `query`, once the element `ready` (role, name) shows: Start, or with lesson=N the Lesson tab (the
    link's load event moves there, and Start is then out of sight: waiting for it would race the load)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server.rstrip("/") + "/" + query)
    expect(page.get_by_role(ready[0], name=ready[1], exact=True)).to_be_visible()
    return page


def number(page, label: str):
    return page.get_by_label(f"number input for {label}").first


@pytest.mark.browser
def test_a_link_opens_with_its_values(server, screenshots, browser):
    from playwright.sync_api import expect

    page = opened(browser, server, "?T=2.5&alpha=0.3&seeds=3")
    expect(number(page, "Temperature T")).to_have_value("2.5")
    expect(number(page, "α: weight on the teacher's soft targets")).to_have_value("0.3")
    expect(screenshots.group(page, "Students")).to_contain_text("3 seeds from 0")
    expect(page.locator("#kd-link-notice")).to_be_hidden()
    page.close()


@pytest.mark.browser
def test_a_presets_link_keeps_its_explicit_t(server, screenshots, browser):
    from playwright.sync_api import expect

    page = opened(browser, server, "?preset=Full+data%3A+no+gain+here&T=7.5")
    expect(screenshots.group(page, "Students")).to_contain_text("lr 0.001 · 3 epochs")  # the preset's
    expect(number(page, "Temperature T")).to_have_value("7.5")  # not the preset's 2
    page.wait_for_timeout(1500)  # (no late change event may overwrite it)
    expect(number(page, "Temperature T")).to_have_value("7.5")
    expect(number(page, "α: weight on the teacher's soft targets")).to_have_value("0.5")
    page.close()


@pytest.mark.browser
def test_a_bad_value_keeps_the_default_and_names_the_parameter(server, browser):
    from playwright.sync_api import expect

    page = opened(browser, server, "?T=abc")
    expect(page.locator("#kd-link-notice")).to_contain_text("Ignored T='abc' from the link: temperature must be")
    expect(number(page, "Temperature T")).to_have_value("4")
    page.close()


@pytest.mark.browser
def test_hide_hides_what_it_names_and_lesson_opens_its_step(server, screenshots, browser):
    from playwright.sync_api import expect

    page = opened(browser, server, "?hide=data,students,methods&lesson=2", ready=("tab", "Lesson"))
    expect(page.get_by_role("tab", name="Lesson")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_text("Step 2 of 5: CE vs KD with 1,000 labels")).to_be_visible()
    screenshots.open_tab(page, "Train")
    for name in ("Data", "Students", "Methods"):
        expect(screenshots.group(page, name)).to_have_count(0)
    expect(page.get_by_label("Preset", exact=True)).to_be_visible()
    expect(number(page, "Temperature T")).to_be_visible()
    page.close()


@pytest.mark.browser
def test_the_copy_button_shows_a_link_that_opens_these_settings(server, screenshots, browser):
    from playwright.sync_api import expect

    page = opened(browser, server, "?T=3&epochs=7&methods=kd,dist")
    expect(screenshots.group(page, "Methods")).to_contain_text("KD, DIST")
    page.get_by_role("button", name="Copy a link to these settings").click()
    box = page.locator("#kd-link textarea, #kd-link input").first
    expect(box).to_have_value(server.rstrip("/") + "/?T=3&epochs=7&methods=kd%2Cdist")
    page.close()


@pytest.mark.browser
def test_start_pressed_at_once_trains_the_links_settings_in_its_class(server, screenshots, browser):
    """Start is enabled only once the page's link is applied: pressed as soon as it can be, the run has the link's
    seeds and T, and its point lands on the link's class board (before, it trained the defaults, outside the class)."""
    import uuid

    from gradio_client import Client

    code = f"link-{uuid.uuid4().hex[:8]}"
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server.rstrip("/") + f"/?class={code}&T=2&seeds=2")
    page.get_by_role("button", name="Start", exact=True).click()  # waits for it to be enabled, no longer
    page.locator(".kd-headline").first.wait_for(timeout=120_000)
    page.close()
    rows = Client(server, verbose=False).predict(code, api_name="/class_board")["rows"]
    assert [(row["T"], row["seeds"]) for row in rows] == [(2.0, 2)]
