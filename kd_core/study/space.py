"""A study's search space: which method and hyper-parameters a trial may pick, in RunConfig's units.

`SearchSpace` holds the ranges (T and DKD β on a log scale) and the learning-rate choices; `suggest` is
define-by-run, so a trial draws only what its method reads (kd: T, α; dkd: T, β; hint, cosine: the feature
weight; dist: nothing more). A small JSON or YAML file may replace ranges (`load_space`); every bound goes
through `RunConfig.validate`, the one home of the allowed values. `trial_role` turns a trial's parameters
into the engine's `Role`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml  # PyYAML comes with gradio (requirements.txt)
from optuna.trial import Trial

from kd_core.config import RunConfig
from kd_core.engine.roles import FEATURE_METHODS, METHODS, Role, method_role


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may pick, in RunConfig's units; (low, high) ranges, T and β on a log scale."""

    methods: tuple[str, ...] = tuple(METHODS)
    temperature: tuple[float, float] = (1.0, 16.0)  # kd, kd-std, dkd, dkd-std
    alpha: tuple[float, float] = (0.0, 1.0)  # kd, kd-std: weight on the teacher's soft targets
    dkd_beta: tuple[float, float] = (0.5, 16.0)  # dkd, dkd-std
    feature_weight: tuple[float, float] = (0.0, 1.0)  # hint, cosine
    lr: tuple[float, ...] = (1e-3, 3e-3, 1e-2)  # choices: a stack shares one learning rate

    def check(self) -> SearchSpace:
        """Every bound through RunConfig.validate (the one home of the ranges); low ≤ high."""
        base = RunConfig()
        base.replace(methods=self.methods).validate()
        for name in ("temperature", "alpha", "dkd_beta", "feature_weight"):
            low, high = getattr(self, name)
            for bound in (low, high):
                base.replace(**{name: bound}).validate()
            if low > high:
                raise ValueError(f"search space: {name} needs low ≤ high; got [{low:g}, {high:g}]")
        if not self.lr:
            raise ValueError("search space: lr needs at least one choice")
        for lr in self.lr:
            base.replace(lr=lr).validate()
        return self

    def suggest(self, trial: Trial) -> dict:
        """Define-by-run: a method, then only the hyper-parameters that method reads."""
        params = {"method": trial.suggest_categorical("method", list(self.methods)),
                  "lr": trial.suggest_categorical("lr", list(self.lr))}
        method = params["method"]
        if method in ("kd", "kd-std", "dkd", "dkd-std"):
            params["T"] = trial.suggest_float("T", *self.temperature, log=True)  # T > 0 (RunConfig)
        if method in ("kd", "kd-std"):
            params["alpha"] = trial.suggest_float("alpha", *self.alpha)
        if method in ("dkd", "dkd-std"):
            params["dkd_beta"] = trial.suggest_float("dkd_beta", *self.dkd_beta, log=self.dkd_beta[0] > 0)  # β may be 0
        if method in FEATURE_METHODS:
            params["feature_weight"] = trial.suggest_float("feature_weight", *self.feature_weight)
        return params


def load_space(path: str | None) -> SearchSpace:
    """The default space, with the keys of a small JSON or YAML file replacing its ranges."""
    if not path:
        return SearchSpace()
    try:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            overrides = yaml.safe_load(text) or {}
        else:
            overrides = json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error).splitlines()[0]
        raise ValueError(f"search space file {path}: {reason}") from None
    known = {f.name for f in fields(SearchSpace)}
    if not isinstance(overrides, dict) or set(overrides) - known:
        raise ValueError(f"search space file {path}: expected an object with keys among {', '.join(sorted(known))}")
    try:
        return SearchSpace(**{key: tuple(value) for key, value in overrides.items()}).check()
    except TypeError:
        raise ValueError(f"search space file {path}: each key takes a list") from None


def trial_role(params: dict, name: str) -> Role:
    """The role a trial's parameters describe (a method's unused knobs keep RunConfig's defaults)."""
    role = method_role(params["method"], params.get("T", RunConfig.temperature), params.get("alpha", RunConfig.alpha),
                       params.get("dkd_beta", RunConfig.dkd_beta),
                       params.get("feature_weight", RunConfig.feature_weight))
    return replace(role, name=name)
