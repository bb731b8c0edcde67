"""View models, each beside what it shows: the live run and its results (`run_view`), the sweep (`sweep`), the
pictures of Predict and Dark knowledge (`pictures`), the hidden-class bias panel (`bias`), the verdict headline
(`headline`), the lesson (`lesson`), the class board (`class_board`), the folded groups' summaries (`panels`), a
session's students (`session`) and the charts' specs and frames (`plots`, drawn in the browser).
"""

from kd_core.views.run_view import RunView, live_run
from kd_core.views.session import SessionStudents
from kd_core.views.sweep import SweepView, live_sweep

__all__ = [
    "RunView",
    "SessionStudents",
    "SweepView",
    "live_run",
    "live_sweep",
]
