"""Every command in README.md's "Command line" block runs and exits 0; the first one as written, in a fresh
process, with the claim its comment makes (KD ahead beyond seed noise).

The others run in this process (`kd_core.__main__.main`, which returns the exit code the CLI exits with) from a
temporary folder, so their relative paths (`runs/my-run`, `checkpoints/…`) land there and never over the shipped
teacher, and with small sizes appended (argparse keeps an option's last value), so the block runs in about a
minute on 2 cores:
- `distill`: `--epochs 1 --train-size 500 --repeats 2` (the options of the command are still parsed and checked);
- `train-teacher`: `--arch mlp-tiny --epochs 1` (the CNN teacher's epoch takes about a minute on 2 cores).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kd_core.__main__ import main
from kd_core.models.checkpoints import default_teacher_path

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"distill": ["--epochs", "1", "--train-size", "500", "--repeats", "2"],
         "train-teacher": ["--arch", "mlp-tiny", "--epochs", "1"]}
PYTHON = ".venv/bin/python -m kd_core"  # how README's commands start


def readme_commands(readme: Path = ROOT / "README.md") -> list[str]:
    """The commands of the first ```bash block under "## Command line", continuation lines joined, comments left
    out."""
    text = readme.read_text()
    section = text[text.index("\n## Command line\n"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


COMMANDS = readme_commands()


def test_the_block_is_what_this_test_knows_how_to_run():
    assert COMMANDS and all(command.startswith(PYTHON + " ") for command in COMMANDS), COMMANDS
    assert {shlex.split(command)[3] for command in COMMANDS} <= set(SMALL)


def test_the_first_command_as_written_shows_kd_ahead_beyond_noise():
    """A fresh process, README's command unchanged: the lesson in seconds (1,000 labelled images, 5 seeds)."""
    out = subprocess.run([sys.executable, *shlex.split(COMMANDS[0])[1:]], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["verdict"].startswith("KD better than CE: +")
    assert result["kd_minus_ce"]["ci95"][0] > 0 and result["kd_wins"] == result["repeats"] == 5
    assert f"test: CE {result['ce_acc']:.4f}  KD {result['kd_acc']:.4f}; {result['verdict']}" in out.stderr


@pytest.mark.parametrize("command", COMMANDS[1:])
def test_each_other_command_exits_0_with_small_sizes(command, tmp_path, monkeypatch, capsys):
    teacher = default_teacher_path("fashion-mnist")
    shipped = teacher.read_bytes()
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)[3:]
    assert main([*argv, *SMALL[argv[0]]]) == 0, capsys.readouterr().err
    assert teacher.read_bytes() == shipped  # the retraining command wrote into the temporary folder
    written = {"--save-students": "kd-student.safetensors", "--out": ""}
    for option, name in written.items():
        if option in argv:
            assert (tmp_path / argv[argv.index(option) + 1] / name).exists()
