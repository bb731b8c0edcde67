"""kd_core.study (face written after the move)."""
