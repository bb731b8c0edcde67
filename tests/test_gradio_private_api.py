"""The one private Gradio API the app relies on, `Blocks.state_holder.delete_state`, wrapped in
`kd_core.ui.page.delete_session_state`: these tests fail loudly when a Gradio upgrade renames or changes it."""


import gradio as gr
import pytest
from gradio_client import Client
from support import free_port

import app
from kd_core.ui import page as ui_page


@pytest.fixture
def page_with_state():
    """A launched page whose one gr.State records what its delete_callback receives."""
    deleted = []
    with gr.Blocks() as page:
        box = gr.Textbox()
        state = gr.State(None, delete_callback=deleted.append)
        box.submit(lambda text: text, box, state, api_name="remember")
        box.change(lambda stored: stored or "", state, box, api_name="recall")
    page.launch(prevent_thread_lock=True, quiet=True, server_port=free_port())
    yield page, deleted
    page.close()


def test_deleting_a_sessions_state_runs_its_delete_callback_and_drops_the_value(page_with_state):
    page, deleted = page_with_state
    client = Client(page.local_url, verbose=False)
    client.predict("students of this session", api_name="/remember")
    assert client.predict("", api_name="/recall") == "students of this session"
    other = Client(page.local_url, verbose=False)
    other.predict("another visitor's", api_name="/remember")

    ui_page.delete_session_state(page, client.session_hash)

    assert deleted == ["students of this session"]  # the callback ran once, with this session's value only
    assert client.predict("", api_name="/recall") == ""  # the value is gone for this session
    assert other.predict("", api_name="/recall") == "another visitor's"
    ui_page.delete_session_state(page, "no-such-session")  # an unknown session is not an error
    assert deleted == ["students of this session"]
    client.close()
    other.close()


@pytest.mark.parametrize("change", ["state_holder removed", "delete_state renamed"])
def test_a_gradio_that_changed_the_private_api_is_a_loud_error(change, monkeypatch):
    with gr.Blocks() as page:
        gr.State(None)
    if change == "state_holder removed":
        monkeypatch.delattr(page, "state_holder", raising=False)
    else:
        monkeypatch.setattr(page, "state_holder", object())
    with pytest.raises(RuntimeError, match=r"Gradio .* changed Blocks.state_holder.delete_state"):
        ui_page.delete_session_state(page, "any")


def test_the_apps_unload_handler_goes_through_the_wrapper():
    """The app's page is built with an unload handler whose code calls `delete_session_state`."""
    handler = ui_page.release_session(app.demo)
    assert "delete_session_state" in handler.__code__.co_names
    assert "state_holder" not in handler.__code__.co_names
