"""kd_core.engine (face written after the move)."""
