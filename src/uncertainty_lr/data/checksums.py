"""Checksum verification of vendored data files."""

from __future__ import annotations

import hashlib
from pathlib import Path


class DataFileError(FileNotFoundError):
    """A data file is missing, corrupt or malformed. The message names the file,
    what was expected and where to get it."""


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{file name: hex digest}``.

    Raises:
        DataFileError: if the checksum file itself is missing.
    """
    if not path.is_file():
        raise DataFileError(f"checksum file {path} is missing; restore it from git")
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.lstrip("*")] = digest
    return sums


def sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected_sha256: str, how_to_get: str) -> None:
    """Check that ``path`` exists and has the expected sha256.

    Args:
        path: the file.
        expected_sha256: hex digest.
        how_to_get: a sentence telling the user where to get a good copy.

    Raises:
        DataFileError: naming the file, the expected and actual digest, and
            ``how_to_get``.
    """
    if not path.is_file():
        raise DataFileError(f"data file {path} is missing. {how_to_get}")
    actual = sha256(path)
    if actual != expected_sha256:
        raise DataFileError(
            f"data file {path} is corrupt: sha256 {actual}, expected {expected_sha256}. "
            f"{how_to_get}"
        )


def verify_folder(folder: Path, names: list[str] | tuple[str, ...], how_to_get: str) -> Path:
    """Check that every file ``names`` in ``folder`` matches the folder's ``SHA256SUMS``.

    Returns:
        ``folder``.

    Raises:
        DataFileError: naming the missing or corrupt file (or checksum file), the
            expected checksum and ``how_to_get``.
    """
    sums = read_sha256sums(folder / "SHA256SUMS")
    for name in names:
        if name not in sums:
            raise DataFileError(f"{folder / 'SHA256SUMS'} lists no checksum of {name}. {how_to_get}")
        verify_file(folder / name, sums[name], how_to_get)
    return folder
