"""KD Playground core: data, models, the KD loss, and side-by-side CE / KD student training.

Importing this package has no side effects (no CUDA initialisation, no downloads, no thread
settings). Start with `kd_core.config.RunConfig` and `kd_core.engine.train.distill`.
"""
