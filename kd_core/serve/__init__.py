"""kd_core.serve (face written after the move)."""
