"""Every command in the ```bash blocks of README.md and docs/*.md runs and exits 0, or is listed in SKIPPED with
the reason it cannot run here; README's first command runs as written, in a fresh process, with the claim its
comment makes (KD ahead beyond seed noise).

The others run from a temporary folder, one per document and shared by its commands in their order (so a
document's `distill --save-students students` is there for its `export students/…`), with relative paths
(`runs/my-run`, `checkpoints/…`) landing there and never over the shipped teacher. `python -m kd_core …` runs in
this process (`kd_core.__main__.main`, which returns the exit code the CLI exits with) and `bench/*.py` in a
subprocess, each with small sizes appended (argparse keeps an option's last value), so their options are still
parsed and checked:
- `distill`, `sweep`: `--epochs 1 --train-size 500 --repeats 2` (with `--data`: the whole small folder, and
  `--teacher-epochs 2` where the command trains its teacher);
- `train-teacher`: `--arch mlp-tiny --epochs 1` (the CNN teacher's epoch takes about a minute on 2 cores; with
  `--data`, the command's own architecture for 2 epochs);
- `study`: 4 trials, 1 worker, the distill sizes above; `bench`, `bench/run.py`: 1,000 samples, 1 repeat.
Commands that read `my-images/` or `my-images.zip` find 1,000 Fashion-MNIST PNGs, 100 per class, made here.

The ```python blocks are run too: docs/api.md's against the app served on loopback (in tests/test_app.py, which
serves it), the others here. PYTHON_BLOCKS names who runs each one, and a test keeps that list complete.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kd_core.__main__ import main
from kd_core.models.checkpoints import default_teacher_path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON = ".venv/bin/python"  # how the documents' commands start
SMALL_RUN = ["--epochs", "1", "--train-size", "500", "--repeats", "2"]
SMALL = {"distill": SMALL_RUN, "sweep": SMALL_RUN,
         "train-teacher": ["--arch", "mlp-tiny", "--epochs", "1"],
         "study": ["--trials", "4", "--workers", "1", "--stack", "4", *SMALL_RUN],
         "bench": ["--samples", "1000", "--repeats", "1"], "export": [],
         "bench/run.py": ["--samples", "1000", "--repeats", "1"], "bench/zerogpu_durations.py": []}

# what a command contains -> why it is not run here (each one's behaviour is tested elsewhere where it can be)
SKIPPED = {
    "bash scripts/setup.sh": "installs the environment these tests run in; CI runs it on a fresh clone (.ci/run)",
    f"{PYTHON} app.py": "serves the app until it is stopped; tests/test_app.py serves the same app on loopback",
    "sudo ": "needs root on a PostgreSQL host",
    "postgresql://": "needs a PostgreSQL server; tests/test_study.py runs a study on a throwaway one",
    "kd_core push ": "online: writes to the Hugging Face Hub with your token; tests/test_hub.py pushes the same way "
                     "to a loopback stand-in of the Hub",
    "--dataset cifar10": "needs the CIFAR-10 download (online) and a GPU for the ResNets; tests/test_cifar.py "
                         "checks the same paths on small data, and -m gpu on a GPU",
    "--scaling": "measures on all 60,000 images whatever --samples says: minutes on 2 cores",
}

# the ```python blocks: document -> who runs it
PYTHON_BLOCKS = {
    "docs/api.md": "tests/test_app.py::test_readme_api_example_runs, against the app served on loopback",
    "docs/sweeps-and-studies.md": "test_the_python_examples_run, here",
}


def blocks(document: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", document.read_text(), re.S)


def commands(document: Path) -> list[str]:
    """The commands of the document's ```bash blocks, continuation lines joined, comments left out."""
    found = []
    for block in blocks(document, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.sub(r"(^|\s+)#.*", "", line).strip()
            if command:
                found.append(" ".join(command.split()))
    return found


def skip_reason(command: str) -> str | None:
    return next((reason for part, reason in SKIPPED.items() if part in command), None)


def name(document: Path) -> str:
    return str(document.relative_to(ROOT))


README_COMMANDS = commands(ROOT / "README.md")
CLI_BLOCK = [command for command in README_COMMANDS if command.startswith(f"{PYTHON} -m kd_core ")]
ALL = [(document, index, command) for document in DOCUMENTS for index, command in enumerate(commands(document))]


def test_each_command_is_one_this_test_knows_how_to_run_or_skip():
    runnable = [(f"{PYTHON} -m kd_core {sub} " for sub in SMALL if "/" not in sub),
                (f"{PYTHON} {script}" for script in SMALL if "/" in script)]
    prefixes = tuple(prefix for group in runnable for prefix in group)
    unknown = [(name(document), command) for document, _, command in ALL
               if not skip_reason(command) and not command.startswith(prefixes)]
    assert unknown == []
    # README's first screen: the two commands that set up and launch, set up and test
    assert README_COMMANDS[:2] == ["bash scripts/setup.sh && .venv/bin/python app.py",
                                   "bash scripts/setup.sh --dev && .venv/bin/python -m pytest"]


def test_the_first_command_as_written_shows_kd_ahead_beyond_noise():
    """A fresh process, README's command unchanged: the lesson in seconds (1,000 labelled images, 5 seeds)."""
    assert CLI_BLOCK[0] == f"{PYTHON} -m kd_core distill --json"
    out = subprocess.run([sys.executable, *shlex.split(CLI_BLOCK[0])[1:]], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["verdict"].startswith("KD better than CE: +")
    assert result["kd_minus_ce"]["ci95"][0] > 0 and result["kd_wins"] == result["repeats"] == 5
    assert f"test: CE {result['ce_acc']:.4f}  KD {result['kd_acc']:.4f}; {result['verdict']}" in out.stderr


def write_my_images(folder: Path) -> None:
    """`my-images/` (an ImageFolder of 1,000 Fashion-MNIST PNGs, 100 per class) and `my-images.zip` of it."""
    from PIL import Image

    from kd_core.data.datasets import load_dataset

    dataset = load_dataset("fashion-mnist")
    images, labels = dataset.train_images, dataset.train_labels
    with zipfile.ZipFile(folder / "my-images.zip", "w") as archive:
        for label, class_name in enumerate(name.replace("/", " or ") for name in dataset.classes):
            (folder / "my-images" / class_name).mkdir(parents=True)
            for row in (labels == label).nonzero().flatten()[:100].tolist():
                path = folder / "my-images" / class_name / f"{row}.png"
                Image.fromarray(images[row, 0].numpy()).save(path)
                archive.write(path, path.relative_to(folder))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One working folder per document, shared by its commands in their order."""
    made: dict[str, Path] = {}

    def folder(document: Path) -> Path:
        if name(document) not in made:
            made[name(document)] = tmp_path_factory.mktemp(document.stem)
            if "my-images" in document.read_text():
                write_my_images(made[name(document)])
        return made[name(document)]
    return folder


def small_sizes(argv: list[str]) -> list[str]:
    small = SMALL[argv[0]]
    if "--data" not in argv:
        return small
    if argv[0] == "train-teacher":
        return ["--epochs", "2"]
    teacher = ["--teacher-epochs", "2"] if "--teacher-epochs" in argv else []
    return [*small, "--train-size", "0", *teacher]


@pytest.mark.parametrize("document, command", [
    pytest.param(document, command, id=f"{name(document)}:{index}") for document, index, command in ALL
    if command != CLI_BLOCK[0]])
def test_each_command_exits_0_with_small_sizes(document, command, folders, monkeypatch, capsys):
    if skip_reason(command):
        pytest.skip(skip_reason(command))
    teacher = default_teacher_path("fashion-mnist")
    shipped = teacher.read_bytes()
    folder = folders(document)
    monkeypatch.chdir(folder)
    words = shlex.split(command)
    if words[1] == "-m":
        argv = words[3:]
        assert main([*argv, *small_sizes(argv)]) == 0, capsys.readouterr().err
    else:
        script, *argv = words[1:]
        out = subprocess.run([sys.executable, str(ROOT / script), *argv, *SMALL[script]], cwd=folder,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
    assert teacher.read_bytes() == shipped  # a retraining command wrote into the temporary folder
    written = {"--save-students": "kd-student.safetensors", "--out": ""}
    for option, file_name in written.items():
        if option in argv:
            assert (folder / argv[argv.index(option) + 1] / file_name).exists()


def test_every_python_block_has_a_runner():
    with_python = {name(document) for document in DOCUMENTS if blocks(document, "python")}
    assert with_python == set(PYTHON_BLOCKS)
    assert all(len(blocks(ROOT / document, "python")) == 1 for document in PYTHON_BLOCKS)


@pytest.mark.parametrize("document", [document for document, runner in PYTHON_BLOCKS.items()
                                      if runner.endswith(", here")])
def test_the_python_examples_run(document, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    [code] = blocks(ROOT / document, "python")
    scope: dict = {}
    exec(compile(code, document, "exec"), scope)
    assert capsys.readouterr().out
