"""What many visitors share: the stack pool, the one owner of training slots (`stack_pool`, its planning in
`plan`), identical requests sharing one run (`shared_runs`), ZeroGPU's durations and refusals (`zerogpu`), a class's
board (`class_board`), and what a visitor may set (`settings`, `own_data`).
"""

from kd_core.serve.stack_pool import SLOTS, StackPool

__all__ = [
    "SLOTS",
    "StackPool",
]
