"""A teacher's preparation in words: one line per event of the run's stream (its place in the queue, each epoch,
the progress between epochs, the logits pass), for the Your data tab's status line and the CLI alike."""

from __future__ import annotations

from kd_core.engine.events import LogitsProgress, Queued, TeacherEpoch, TeacherProgress
from kd_core.run import Run
from kd_core.serve.stack_pool import queued_status


def teacher_line(event: object, epochs: int) -> str | None:
    """The line for a teacher event (`epochs`: the teacher's, when it is trained); None for any other event."""
    if isinstance(event, TeacherEpoch):
        return (f"teacher epoch {event.epoch}/{epochs}: validation accuracy {100 * event.val_acc:.1f}% "
                f"(loss {event.train_loss:.4f}, {event.seconds:.0f} s)")
    if isinstance(event, TeacherProgress):
        return (f"teacher epoch {event.epoch}/{epochs}: step {event.step:,} of {event.total_steps:,}, "
                f"{event.images_per_s:,.0f} images/s, about {event.eta_s:,.0f} s left")
    if isinstance(event, LogitsProgress):
        return f"the teacher's logits: {event.done:,} of {event.total:,} images"
    return None


def status_line(event: object | None, run: Run, last_epoch: TeacherEpoch | None = None) -> str:
    """The Your data tab's status while the run's teacher is prepared (None: before its first event); between
    epochs, the last finished epoch's validation accuracy stays in the line (`last_epoch`)."""
    if isinstance(event, Queued):
        return queued_status(event)
    line = teacher_line(event, run.config.teacher_epochs)
    if isinstance(event, TeacherProgress) and last_epoch is not None:
        line += f" · after epoch {last_epoch.epoch}: validation accuracy {100 * last_epoch.val_acc:.1f}%"
    return line or f"{run.dataset.note}; preparing the teacher {run.config.teacher}…"
