"""Data: the built-in datasets as whole uint8 tensors with fixed stratified validation and test splits (`datasets`),
and a user's images, an ImageFolder or a zip of one, decoded once into the same `Dataset` (`sources`).
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
