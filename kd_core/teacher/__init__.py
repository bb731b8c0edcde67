"""kd_core.teacher.logits (face written after the move)."""
