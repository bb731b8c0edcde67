"""kd_core.data.datasets (face written after the move)."""
