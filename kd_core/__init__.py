"""KD Playground core: knowledge distillation you can watch, as a package with no side effects on import.

A request (the CLI, an app handler, a study worker) becomes a `Run` once, in `kd_core.run.resolve_run`: the validated
`kd_core.config.RunConfig`, the dataset (`kd_core.data`) and the teacher (`kd_core.teacher`, `kd_core.models`).
`kd_core.serve` gives it a training slot (the stack pool, the one owner of training work), `kd_core.engine` trains its
students in lockstep and streams events (the one vocabulary, `kd_core.engine.events`), `kd_core.views` turns them
into what a tab shows, and `kd_core.ui` (the only package that imports gradio) or the CLI (`python -m kd_core`)
shows it. `kd_core.publish` takes a student home; `kd_core.study` searches hyper-parameters. Data flows one way;
lower layers never import higher ones. The losses are `kd_core.losses` (`kd_loss`: α weighs the teacher's soft
targets).
"""
