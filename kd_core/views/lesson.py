"""The guided lesson for a teacher at a projector: five steps, all of their words in `STEPS`.

A step names what it shows: either a preset of the Train tab (kd_core.serve.settings.PRESETS), which the app sets
and then starts through the Train tab's own Start, or the Dark knowledge tab at a temperature. The app builds
its Lesson tab from this tuple alone; the layout holds no lesson text.
"""

from __future__ import annotations

from dataclasses import dataclass

from kd_core.serve.settings import PRESETS

TABS = ("train", "dark-knowledge")  # the app's tab ids a step can show


@dataclass(frozen=True)
class Step:
    title: str
    look_at: str  # one sentence: what to watch once the step is shown
    question: str  # one question for the class
    tab: str  # which tab the step shows (TABS)
    button: str  # the step's one button
    preset: str | None = None  # a settings.PRESETS name: set on the Train tab, then started
    temperature: float | None = None  # the Dark knowledge tab's T

    def __post_init__(self):  # a typo in a step fails on import, not in front of a class
        if self.tab not in TABS:
            raise ValueError(f"a lesson step shows one of {', '.join(TABS)}; got {self.tab!r}")
        if (self.preset is None) == (self.tab == "train") or (self.preset is not None and self.preset not in PRESETS):
            raise ValueError(f"a Train step names one of the presets ({', '.join(PRESETS)}); got {self.preset!r}")
        if (self.temperature is None) == (self.tab == "dark-knowledge"):
            raise ValueError("a Dark knowledge step, and only that, sets the temperature")


STEPS: tuple[Step, ...] = (
    Step("Dark knowledge at T = 1 and T = 4",
         "Compare the two charts: at T = 1 the teacher puts almost everything on one class; at T = 4 the rest of "
         "its belief shows, and the wrong classes it ranks high look like the picture.",
         "Which wrong classes does the teacher think this shirt resembles, and why would a student want to know?",
         "dark-knowledge", "Show the teacher at T = 1 and T = 4", temperature=4.0),
    Step("CE vs KD with 1,000 labels",
         "Watch the two accuracy curves part, then read the headline above the charts: KD against CE, over five "
         "seeds, with its 95 % interval.",
         "Both students saw the same 1,000 labelled images: where does the KD student's extra knowledge come from?",
         "train", "Train CE and KD on 1,000 labels", preset="Defaults: 1,000 images, KD beats CE"),
    Step("The full-data null result",
         "The same comparison with all 55,000 labels: the headline should now say there is no difference beyond "
         "seed noise.",
         "Why does the teacher stop helping once the labels are plentiful?",
         "train", "Train on all 55,000 labels", preset="Full data: no gain here"),
    Step("The teacher labels unlabelled images",
         "Only the KD student also learns from 50,000 images nobody labelled, through the teacher's soft targets; "
         "watch the gap in the headline (this run takes a few minutes on a laptop CPU).",
         "Nobody labelled those 50,000 images: what exactly does the KD student learn from them?",
         "train", "Train with 50,000 unlabelled images", preset="The teacher labels images for the student"),
    Step("The hidden class and its bias",
         "No student ever saw a dress: read the hidden-class line under the headline, then press the automatic "
         "bias in the panel below the charts.",
         "The CE student never names a dress; how can the KD student, and why does it need a push on that class?",
         "train", "Train without any dresses", preset="Hidden class: no dresses for the students"),
)


def step_markdown(index: int) -> str:
    """Step `index` (0-based) as the Lesson tab shows it: its title, what to look at, the question."""
    step = STEPS[index]
    return (f"## Step {index + 1} of {len(STEPS)}: {step.title}\n\n**Look at:** {step.look_at}\n\n"
            f"**Ask the class:** {step.question}")


def step_banner(index: int) -> str:
    """The one line shown above the tabs while step `index` is on: the step and its question."""
    return f"**Lesson, step {index + 1} of {len(STEPS)}:** {STEPS[index].question}"


def next_index(index: int) -> int:
    """The step after `index`; after the last one, the first again."""
    return (index + 1) % len(STEPS)
