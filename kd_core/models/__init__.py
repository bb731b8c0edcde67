"""kd_core.models.zoo (face written after the move)."""
