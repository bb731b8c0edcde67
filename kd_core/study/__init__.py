"""Hyper-parameter studies with Optuna (optional: requirements-study.txt), each worker training its trials as one
stack (`trials`), over a search space in RunConfig's units (`space`). `trials` imports optuna, so this face does not.
"""

from kd_core.study.space import SearchSpace, load_space

__all__ = [
    "SearchSpace",
    "load_space",
]
