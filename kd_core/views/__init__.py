"""kd_core.views (face written after the move)."""
