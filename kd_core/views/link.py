"""Links that set the lesson: a page's query (`/?preset=…&T=2.5&alpha=0.3&seeds=3&hide=data,students`) read into
the Train tab's knobs, and the knobs written back into such a query.

`read_link(query)` starts from the preset's settings (the first preset without one), applies each explicit knob
after it, in LINK_KNOBS' order, and checks every step with `settings.make_config` and `RunConfig.validate`, the same
checks as a Start: a bad value keeps what was there and adds one line to `notes`, naming the parameter and why.
Parameters it does not know (another feature's, like `class`) are left alone. `settings_query(knobs)` is the
inverse: the preset, then the knobs that differ from it, so `read_link(settings_query(k)).knobs == k`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from kd_core.config import RunConfig
from kd_core.serve import settings
from kd_core.views import lesson

# query name -> make_config's keyword, in the order they apply (after `preset`)
LINK_KNOBS = {"T": "temperature", "alpha": "alpha", "seeds": "repeats", "epochs": "epochs",
              "train_size": "train_size", "methods": "methods", "hide_class": "hide_class"}
# hide=… names -> what they hide on the Train tab (kd_core.ui.link maps them onto its widgets)
HIDE_NAMES = {"preset": "the preset picker", "data": "the Data group (dataset, images, hidden class, transfer set)",
              "students": "the Students group (student, lr, epochs, seeds)",
              "methods": "the Methods group (methods and their weights)"}
WHOLE = ("seeds", "epochs", "train_size")  # parsed as whole numbers


@dataclass(frozen=True)
class Link:
    """What a page's query sets: the preset, make_config's keywords (the Train tab's values), the names to hide,
    the Lesson step (0-based) to open, and a line per ignored parameter."""

    preset: str
    knobs: dict  # make_config's keywords, every one (the preset's, with the link's explicit values)
    hide: tuple[str, ...] = ()
    lesson: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def config(self) -> RunConfig:
        return settings.make_config(**self.knobs)


def preset_knobs(name: str) -> dict:
    """make_config's keywords holding `name`'s settings (the Train tab's values after choosing that preset)."""
    cfg = settings.preset(name)
    return dict(temperature=cfg.temperature, alpha=cfg.alpha, epochs=cfg.epochs, lr=cfg.lr, student=cfg.student,
                train_size=cfg.train_size, hide_class=settings.hidden_class_name(cfg), seed=cfg.seed,
                dataset=cfg.dataset, repeats=cfg.repeats, unlabeled=cfg.unlabeled, methods=list(cfg.methods),
                dkd_beta=cfg.dkd_beta, feature_weight=cfg.feature_weight)


def _value(name: str, text: str, dataset: str):
    """The query's text as the value make_config takes; a text that is no such value stays text, for make_config
    to refuse in its own words."""
    text = text.strip()
    if name == "methods":
        return [m.strip() for m in text.split(",") if m.strip()]
    if name == "hide_class":
        names = {c.lower(): c for c in settings.hidden_class_choices(dataset)}
        return names.get(text.lower(), text)
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if name in WHOLE and number.is_integer() else number


def _ignored(name: str, text: str, why: str) -> str:
    return f"Ignored {name}={settings.shown(text)} from the link: {why}"


def read_link(query: Mapping[str, str]) -> Link:
    """The Train tab's settings, the names to hide and the Lesson step that `query` (a page's query parameters)
    asks for; see the module's docstring."""
    notes = []
    preset = next(iter(settings.PRESETS))
    if "preset" in query:
        names = {name.lower(): name for name in settings.PRESETS}
        wanted = query["preset"].strip().lower()
        if wanted in names:
            preset = names[wanted]
        else:
            notes.append(_ignored("preset", query["preset"],
                                  f"no such preset; choose one of: {'; '.join(settings.PRESETS)}"))
    knobs = preset_knobs(preset)
    for name, keyword in LINK_KNOBS.items():
        if name not in query:
            continue
        trial = {**knobs, keyword: _value(name, query[name], knobs["dataset"])}
        try:
            settings.make_config(**trial).validate()
        except ValueError as error:
            notes.append(_ignored(name, query[name], str(error)))
            continue
        knobs = trial
    hide = []
    for name in (n.strip().lower() for n in query.get("hide", "").split(",") if n.strip()):
        if name in HIDE_NAMES:
            hide.append(name)
        else:
            notes.append(_ignored("hide", name, f"no such control; hide names: {', '.join(HIDE_NAMES)}"))
    step = None
    if "lesson" in query:
        text = query["lesson"].strip()
        if text.isdigit() and 1 <= int(text) <= len(lesson.STEPS):
            step = int(text) - 1
        else:
            notes.append(_ignored("lesson", query["lesson"], f"lesson must be a step from 1 to {len(lesson.STEPS)}"))
    return Link(preset, knobs, tuple(dict.fromkeys(hide)), step, tuple(notes))


def settings_query(preset: str, temperature: float, alpha: float, repeats: int, epochs: int, train_size: int,
                   methods: list[str], hide_class: str) -> str:
    """The query ("?preset=…&T=…") that opens the Train tab with these values: the preset (when it is not the
    first), then each knob that differs from the preset's."""
    if preset not in settings.PRESETS:
        raise ValueError(f"unknown preset {settings.shown(preset)}; choose one of {', '.join(settings.PRESETS)}")
    base = preset_knobs(preset)
    values = {"temperature": temperature, "alpha": alpha, "repeats": repeats, "epochs": epochs,
              "train_size": train_size, "methods": list(methods), "hide_class": hide_class}
    pairs = [] if preset == next(iter(settings.PRESETS)) else [("preset", preset)]
    for name, keyword in LINK_KNOBS.items():
        value = values[keyword]
        if value != base[keyword]:
            pairs.append((name, ",".join(value) if keyword == "methods" else f"{value:g}"
                          if isinstance(value, float) else str(value)))
    return "?" + urlencode(pairs) if pairs else ""

