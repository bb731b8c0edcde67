"""The command line's run commands (`distill`, `sweep`, `train-teacher --data`): each resolves its run once
(kd_core.run) and prints the engine's events, the same stream the app shows. The parser and the other commands are
in kd_core/__main__.py."""
