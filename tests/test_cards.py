"""A downloaded model card states the command that reproduces its run: running it gives the card's figures."""

import json
import re
import shlex

from kd_core.__main__ import main
from kd_core.config import RunConfig
from kd_core.views import export, run_view, session


def test_the_apps_card_reproduces_its_run(tmp_path, capsys, monkeypatch):
    views = list(run_view.live_run(RunConfig(repeats=2, epochs=2, train_size=500, temperature=3.0)))
    students = views[-1].students
    card = (students.run_dir / "kd-student.md").read_text()
    command = re.search(r"```bash\n(python -m kd_core distill .*)\n```", card).group(1)
    stated = re.search(r"\*\*KD student \(this model\)\*\* \| ([\d.]+) ± ([\d.]+) %", card).groups()
    argv = shlex.split(command)[3:]  # after "python -m kd_core"
    argv[argv.index("--save-students") + 1] = str(tmp_path / "students")
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert f"{100 * result['kd_acc']:.2f}" == stated[0] and f"{100 * result['kd_acc_std']:.2f}" == stated[1]
    assert result["repeats"] == 2 and result["config"]["temperature"] == 3.0
    session.discard(students)
    # the ONNX export of the same student, with its card
    view = export.export_view(session.SessionStudents(**{**students.__dict__, "run_dir": tmp_path}))
    assert [p.name for p in view.files] == ["kd-student.md", "kd-student.onnx"]
    assert list(view.latency["model"]) == ["teacher", "KD student"] and "faster" in view.words
