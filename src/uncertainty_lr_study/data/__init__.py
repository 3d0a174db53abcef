"""Data loaders for the study's tasks: vendored local files first, a hub second."""

from __future__ import annotations

from pathlib import Path

from uncertainty_lr_study.data import imdb, mnist, squad
from uncertainty_lr_study.data.checksums import DataFileError, verify_file
from uncertainty_lr_study.data.mnist import MnistSplits, load_mnist

_CONTENT_CHECKS = {
    "mnist": mnist.check_mnist_files,
    "imdb": imdb.check_imdb_files,
    "squad": squad.check_squad_files,
}


def check_data_content(dataset: str, root: str | Path | None = None) -> list[str]:
    """The cheap checks of a data set's vendored files, for the preflight: each
    file's checksum against ``SHA256SUMS`` (a malformed line is named), then the
    content checks its loader makes (well under 2 s per data set):

    - ``mnist``: gzip stream, IDX magic number, shape (60,000 / 10,000 images of
      28 x 28 and as many labels), payload length, labels in 0..9;
    - ``imdb``: Parquet readable, ``text`` strings of valid UTF-8, ``label`` integers
      (or exactly integral floats) all 0 or 1, no missing label;
    - ``squad``: gzip stream, UTF-8, JSON, and the SQuAD v1.1 structure (every field
      and type, answers at their ``answer_start``).

    Args:
        dataset: ``"mnist"``, ``"imdb"`` or ``"squad"``.
        root: the data set's folder (default ``data/raw/<dataset>``).

    Returns:
        One message per bad file (or the bad checksum file alone), each naming the
        file, what is wrong and how to restore it; empty when every file is good.

    Raises:
        ValueError: an unknown ``dataset``.
    """
    if dataset not in _CONTENT_CHECKS:
        raise ValueError(f"dataset must be one of {sorted(_CONTENT_CHECKS)}, got {dataset!r}")
    return _CONTENT_CHECKS[dataset](root)


__all__ = ["DataFileError", "MnistSplits", "check_data_content", "load_mnist", "verify_file"]
