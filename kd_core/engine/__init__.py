"""kd_core.engine.loop (face written after the move)."""
