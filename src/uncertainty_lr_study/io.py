"""Atomic file writes: a killed job never leaves a half-written file behind.

Every output of the project (run outputs, checkpoints, aggregate tables, LaTeX,
figures) goes through :func:`atomic_open`: the bytes go to a temporary file in the
target's folder, which is flushed and fsynced, renamed onto the target
(``os.replace``, atomic on POSIX) and the folder fsynced, so that the rename
itself survives a crash. The file gets the user's normal mode (``0o666`` less the
umask, as ``open`` gives), not the ``0o600`` of :func:`tempfile.mkstemp`.

Non-finite numbers: JSON has none, so :func:`atomic_write_json` writes NaN and
+-infinity as ``null`` (:func:`finite_or_none`), anywhere in the data. CSV files
(:func:`atomic_write_csv`) keep pandas' spelling: NaN as an empty cell, infinity as
``inf`` / ``-inf``, which ``pandas.read_csv`` reads back as the same values.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where folders cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:  # file systems without directory fsync
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends.

    The temporary file lies in ``path``'s folder (created as needed) and is made
    with mode ``0o666`` less the umask. On a clean exit it is flushed, fsynced and
    renamed onto ``path``, and the folder is fsynced; on an exception it is
    removed and ``path`` is left as it was.

    Args:
        path: the file to write.
        mode: ``"w"`` (text, UTF-8) or ``"wb"`` (bytes).

    Yields:
        The open temporary file.

    Raises:
        ValueError: a mode other than ``"w"`` or ``"wb"``.
        OSError: the folder or file cannot be written.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding="utf-8" if mode == "w" else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_open`).

    Raises:
        OSError: the folder or file cannot be written.
    """
    with atomic_open(path, "w") as f:
        f.write(text)


def finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float (NaN, +-infinity; Python or NumPy)
    replaced by None, inside dicts, lists and tuples too (tuples become lists,
    NumPy floats Python floats). Other values are returned unchanged."""
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    if isinstance(data, (float, np.floating)):
        value = float(data)
        return value if math.isfinite(value) else None
    return data


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON with sorted keys, atomically; every NaN or
    infinity in it is written as ``null`` (:func:`finite_or_none`), so the file is
    strict JSON.

    Raises:
        TypeError: ``data`` holds a value JSON cannot represent.
        OSError: the folder or file cannot be written.
    """
    text = json.dumps(finite_or_none(data), indent=2, sort_keys=True, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a data frame as CSV without its index, atomically (NaN: empty cell;
    infinity: ``inf``).

    Raises:
        OSError: the folder or file cannot be written.
    """
    atomic_write_text(path, frame.to_csv(index=False))
