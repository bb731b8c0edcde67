"""kd_core.models (face written after the move)."""
