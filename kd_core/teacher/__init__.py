"""kd_core.teacher (face written after the move)."""
