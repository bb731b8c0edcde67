"""kd_core.study.trials (face written after the move)."""
