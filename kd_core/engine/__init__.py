"""The training engine: one loop trains a stack of students with roles (CE, KD at (T, α), DKD, …) × seeds in
lockstep and streams the one vocabulary of events (`events`: Queued, TeacherEpoch, LogitsProgress, StackStarted,
StackStep, StackEvaluated, StackFinished). `train.distill` (CE and KD) and `sweep.sweep` (a T × α grid) are views
over `loop.train_stack`; `stack` runs many students as one, `roles` computes their losses, `run_data` holds a run's
data on the device, `stats` and `bias` read results, `bench` measures the engine. (The face hands on no name that
is also a submodule's: `from kd_core.engine import roles` is the module.)
"""

from kd_core.engine.budget import check_cpu_budget
from kd_core.engine.events import (
    Queued,
    StackEvaluated,
    StackEvent,
    StackFinished,
    StackResult,
    StackStarted,
    StackStep,
)
from kd_core.engine.loop import TrainingDiverged, train_stack
from kd_core.engine.roles import CE_ROLE, Role, method_role
from kd_core.engine.sweep import SweepResult, run_sweep
from kd_core.engine.train import RunResult, distill, run, run_result

__all__ = [
    "CE_ROLE",
    "Queued",
    "Role",
    "RunResult",
    "StackEvaluated",
    "StackEvent",
    "StackFinished",
    "StackResult",
    "StackStarted",
    "StackStep",
    "SweepResult",
    "TrainingDiverged",
    "check_cpu_budget",
    "distill",
    "method_role",
    "run",
    "run_result",
    "run_sweep",
    "train_stack",
]
