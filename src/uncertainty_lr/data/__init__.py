"""Data loaders for the study's tasks: vendored local files first, a hub second."""

from uncertainty_lr.data.checksums import DataFileError, verify_file
from uncertainty_lr.data.mnist import MnistSplits, load_mnist

__all__ = ["DataFileError", "MnistSplits", "load_mnist", "verify_file"]
