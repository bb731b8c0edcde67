"""kd_core.data (face written after the move)."""
