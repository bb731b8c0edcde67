"""Data: the built-in datasets as whole uint8 tensors with fixed stratified validation and test splits (`datasets`),
and a user's images, an ImageFolder or a zip of one (`sources`) or a Hub dataset, a save_to_disk folder or parquet
files (`hub`), decoded once into the same `Dataset`.
"""

from kd_core.data.datasets import CLASSES, Dataset, DatasetUnavailable, load_dataset
from kd_core.data.sources import load_folder, resolve_dataset

__all__ = [
    "CLASSES",
    "Dataset",
    "DatasetUnavailable",
    "load_dataset",
    "load_folder",
    "resolve_dataset",
]
