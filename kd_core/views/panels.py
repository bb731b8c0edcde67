"""The Train tab's folded groups ("Data", "Students", "Methods"): the one line each shows while folded.

Each function takes the group's widget values as the app holds them (kd_core.serve.settings' choices: a dataset
name, a hidden class's name or settings.NO_HIDDEN_CLASS, 0 for "all images" or "no transfer set") and
returns the group's label, its name and then its current values, so a folded group still says what a Start
will train.
"""

from __future__ import annotations

from collections.abc import Sequence

from kd_core.data.datasets import TRAIN_SET_SIZES
from kd_core.serve.settings import DATASET_LABELS, NO_HIDDEN_CLASS
from kd_core.views.headline import method_name

FEATURE_METHODS = ("hint", "cosine")  # the methods the feature weight w applies to
DKD_METHODS = ("dkd", "dkd-std")  # the methods DKD's β applies to


def data_label(dataset: str, train_size: int, hide_class: str, unlabeled: int) -> str:
    """'Data: Fashion-MNIST · 1,000 labelled images · no class hidden · no transfer set'."""
    images = f"all {TRAIN_SET_SIZES[dataset]:,}" if train_size == 0 else f"{train_size:,}"
    hidden = "no class hidden" if hide_class == NO_HIDDEN_CLASS else f"{hide_class} hidden"
    transfer = f"+ {unlabeled:,} unlabelled" if unlabeled else "no transfer set"
    return f"Data: {DATASET_LABELS[dataset]} · {images} labelled images · {hidden} · {transfer}"


def students_label(student: str, lr: float, epochs: int, seed: int, repeats: int) -> str:
    """'Students: mlp-small · lr 0.003 · 20 epochs · 5 seeds from 0'."""
    seeds = f"{repeats:g} seeds from {seed}" if repeats > 1 else f"seed {seed}"
    return f"Students: {student} · lr {lr:g} · {epochs:g} epoch{'s' * (epochs != 1)} · {seeds}"


def methods_label(methods: Sequence[str], dkd_beta: float, feature_weight: float) -> str:
    """'Methods: KD' (its knobs are T and α), plus DKD's β and the feature weight w when a chosen method uses
    them."""
    knobs = ([f"β {dkd_beta:g}"] if any(m in DKD_METHODS for m in methods) else []) + (
        [f"w {feature_weight:g}"] if any(m in FEATURE_METHODS for m in methods) else [])
    names = ", ".join(method_name(m) for m in methods) or "none chosen"
    return f"Methods: {names}" + "".join(f" · {knob}" for knob in knobs)
