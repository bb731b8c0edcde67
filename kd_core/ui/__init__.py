"""kd_core.ui: the Gradio page, and the only package of kd_core that imports gradio. One module per tab (train,
predict with publish's take-out panel, dark_knowledge, sweep, lesson, own_data, board), each its layout and its
handlers, which call the rest of kd_core and fill widgets; `common` holds what they share (the one `user_errors`
decorator that shows a visitor's errors as gr.Error, `ViewUpdates`, the CSS, `CheckedBlocks`, `Services`) and
`page.build(services, delete_cache)` assembles the tabs. app.py makes the services and launches the page.
"""

from kd_core.ui.common import CSS, Services
from kd_core.ui.page import build

__all__ = ["CSS", "Services", "build"]
