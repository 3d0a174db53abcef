"""Checksum verification of vendored data files, and the per-file checks that follow it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


class DataFileError(FileNotFoundError):
    """A data file is missing, corrupt or malformed. The message names the file,
    what was expected and where to get it."""


def _restore_hint(path: Path) -> str:
    return f"Restore it from git: `git checkout -- data/raw/{path.parent.name}/{path.name}`."


def read_sha256sums(path: Path, how_to_get: str | None = None) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into ``{file name: lower-case hex digest}``.

    Each non-blank line is ``<64 hex digits> <space> [*]<file name>``.

    Args:
        path: the checksum file.
        how_to_get: how to restore it (default: ``git checkout`` of the vendored copy).

    Raises:
        DataFileError: the checksum file is missing or not UTF-8 text, or a line (named
            by its number) has not two fields, a digest that is not 64 hex digits, or a
            file name listed before.
    """
    how_to_get = how_to_get or _restore_hint(path)
    if not path.is_file():
        raise DataFileError(f"checksum file {path} is missing. {how_to_get}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataFileError(
            f"checksum file {path} is not UTF-8 text ({err}). {how_to_get}"
        ) from err
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, *rest = line.split(maxsplit=1)
        name = rest[0].strip().lstrip("*") if rest else ""
        problem = None
        if not name:
            problem = "expected '<sha256 digest>  <file name>'"
        elif not _DIGEST.fullmatch(digest):
            problem = f"digest {digest[:80]!r} is not 64 hex digits"
        elif name in sums:
            problem = f"{name} is listed twice"
        if problem:
            raise DataFileError(
                f"checksum file {path} line {number} is malformed: {problem}. {how_to_get}"
            )
        sums[name] = digest.lower()
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
    if actual != expected_sha256.lower():
        raise DataFileError(
            f"data file {path} is corrupt: sha256 {actual}, expected {expected_sha256}. "
            f"{how_to_get}"
        )


def _unlisted(folder: Path, name: str, how_to_get: str) -> DataFileError:
    return DataFileError(f"{folder / 'SHA256SUMS'} lists no checksum of {name}. {how_to_get}")


def verify_folder(folder: Path, names: list[str] | tuple[str, ...], how_to_get: str) -> Path:
    """Check that every file ``names`` in ``folder`` matches the folder's ``SHA256SUMS``.

    Returns:
        ``folder``.

    Raises:
        DataFileError: naming the missing or corrupt file (or the checksum file and
            its malformed line), the expected checksum and ``how_to_get``.
    """
    sums = read_sha256sums(folder / "SHA256SUMS")
    for name in names:
        if name not in sums:
            raise _unlisted(folder, name, how_to_get)
        verify_file(folder / name, sums[name], how_to_get)
    return folder


def folder_problems(
    folder: Path,
    names: list[str] | tuple[str, ...],
    how_to_get: str,
    read: Callable[[Path], Any],
) -> list[str]:
    """Every problem of a data folder: per file its checksum, then ``read(path)``.

    Args:
        folder: the data set's folder (with ``SHA256SUMS``).
        names: its data files.
        how_to_get: where to get a good copy.
        read: reads and checks one file, raising :class:`DataFileError`.

    Returns:
        One message per bad file (the checksum file's problem alone when it is bad);
        empty when every file is good.
    """
    try:
        sums = read_sha256sums(folder / "SHA256SUMS")
    except DataFileError as err:
        return [str(err)]
    problems = []
    for name in names:
        try:
            if name not in sums:
                raise _unlisted(folder, name, how_to_get)
            verify_file(folder / name, sums[name], how_to_get)
            read(folder / name)
        except DataFileError as err:
            problems.append(str(err))
    return problems
