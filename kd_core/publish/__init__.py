"""kd_core.publish (face written after the move)."""
