"""Guards on a config as raw input, before its schema is checked.

A config file is text a user edits by hand, copies from a colleague or finds in a
cluster's shared folder, so it is treated as untrusted input: nothing in it may
become code (shell, TeX, Python), and a broken one must fail fast with a message
that names the key, never with a traceback, a hang or a late crash. The checks here
run first, in this order, because each later one relies on the earlier ones:

1. :func:`size_problems` - the config's expanded size is bounded (a few lines of
   nested YAML aliases expand to billions of values; every later walk, and the
   schema validator's own messages, would then take hours and gigabytes);
2. :func:`template_problems` - a config that asks for YTE templating
   (``__use_yte__``) is refused: it runs Python expressions when loaded;
3. :func:`non_finite_problems` - every number is finite (JSON Schema's ``minimum``
   and ``maximum`` let NaN through, since every comparison with NaN is false);
4. :func:`results_dir_problems` (after the schema) - the results folder is a plain
   relative path inside the repository unless the config says otherwise.

Error messages quote values through :func:`short_repr`, so a huge value never
becomes a huge message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

MAX_CONFIG_VALUES = 100_000
"""Most values (mapping entries and list items, counted after YAML alias expansion)
a config may hold; the study's largest config holds under 1,000."""

MAX_QUOTED = 60
"""Most characters of a value quoted in an error message."""

SAFE_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9._-]*"
"""One folder name of a path the pipeline writes: letters, digits, ``.``, ``_``,
``-`` (no spaces, quotes, ``$``, ``;`` or other characters a shell or TeX reads)."""

REPOSITORY_FOLDERS = (
    "src", "data", "workflow", "config", "notebooks", "paper", "tests", "profiles",
    "scripts", "docs", "benchmarks", "figures",
)
"""Folders of the repository's own files, which a results folder must not be."""

RESULTS_DIR_PATTERN = re.compile(rf"/?(?:{SAFE_SEGMENT}|\.\.)(?:/(?:{SAFE_SEGMENT}|\.\.))*/?")
"""Shape of ``results_dir``: folder names of :data:`SAFE_SEGMENT` (or ``..``)
separated by ``/``; whether it may leave the repository is a separate check."""


def short_repr(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr`` of a value cut to ``limit`` characters (with ``...`` and the
    original length), for error messages.

    Bounded in cost: a container of nested containers or of more than 20 entries
    is shown by kind and size, never expanded (a YAML alias bomb would take
    gigabytes), a small flat one in full.
    """
    items = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list, tuple)) and (
        len(value) > 20 or any(isinstance(v, (dict, list, tuple)) for v in items)
    ):
        kind = "mapping" if isinstance(value, dict) else "list"
        return f"<{kind} of {len(value)} entries>"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


def _walk(data: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``(path, value)`` of a nested config, depth first, leaves and
    containers alike; paths are ``a/b/0/c``. Lazy, so a caller can stop early."""
    stack = [(path, data)]
    while stack:
        here, value = stack.pop()
        yield here, value
        if isinstance(value, dict):
            items = [(f"{here}/{k}" if here else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(f"{here}/{i}" if here else str(i), v) for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))


def size_problems(data: Any, limit: int = MAX_CONFIG_VALUES) -> list[str]:
    """A problem if ``data`` holds more than ``limit`` values after alias expansion.

    Stops counting at ``limit + 1``, so the cost is bounded whatever the input.

    Args:
        data: the config as loaded from YAML or JSON.
        limit: most values allowed (:data:`MAX_CONFIG_VALUES`).

    Returns:
        one message, or none.
    """
    for count, _ in enumerate(_walk(data), start=1):
        if count > limit:
            return [
                f"  - (top level): the config expands to more than {limit:,} values "
                "(nested YAML aliases `*name` repeat a value many times); write the "
                "values out, or remove the aliases"
            ]
    return []


def template_problems(data: Any) -> list[str]:
    """A problem if the config opts into YTE templating (``__use_yte__``), whose
    expressions are Python code run when the file is read.

    Snakemake evaluates such a file itself when it is given with ``--configfile``,
    before the workflow can look at it; ``make run CONFIG=...``, ``make smoke`` and
    ``python -m uncertainty_lr_study.config_guard FILE`` read it as plain YAML and refuse
    it before Snakemake starts.
    """
    if isinstance(data, dict) and "__use_yte__" in data:
        return [
            "  - __use_yte__: the config asks to be evaluated as a YTE template, whose "
            "expressions are Python code; this study's configs are plain YAML: remove "
            "__use_yte__ and write the values out"
        ]
    return []


def non_finite_problems(data: Any) -> list[str]:
    """One problem per number that is NaN or infinite (YAML ``.nan``, ``.inf``).

    Every number the study reads is a finite quantity (a learning rate, a ratio, a
    count, a target), so a non-finite one is a mistake that the schema's ranges
    cannot catch (every comparison with NaN is false).
    """
    problems = []
    for path, value in _walk(data):
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(
                f"  - {path or '(top level)'}: {value!r} is not a finite number; write a "
                "finite value (e.g. 1.0e-3) or remove the key to use its default"
            )
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**63:
            problems.append(
                f"  - {path or '(top level)'}: an integer of {len(str(abs(value)))} digits "
                "is larger than any quantity of a run; write a number in range"
            )
    return problems


def input_problems(data: Any) -> list[str]:
    """Every raw-input problem of a config (:func:`size_problems`,
    :func:`template_problems`, :func:`key_and_text_problems`,
    :func:`non_finite_problems`), in that order; the later checks run only on a
    config of bounded size."""
    problems = size_problems(data)
    if problems:
        return problems
    return template_problems(data) + key_and_text_problems(data) + non_finite_problems(data)


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` (relative paths are taken from ``root``) lies inside
    ``root``, after resolving ``..`` and symbolic links."""
    root = Path(root).resolve()
    target = (root / path).resolve()
    return target == root or root in target.parents


def results_dir_problems(config: dict[str, Any], root: str | Path) -> list[str]:
    """Problems of the config's ``results_dir`` (a schema-valid config).

    The folder is written into by every job and named in every shell command, so:
    its folder names are :data:`SAFE_SEGMENT` (the schema's pattern, repeated here
    for settings given without the schema); it is not the repository itself or one
    of its source folders; and it lies inside the repository unless
    ``results_outside_repo: true`` says the user means it (a cluster's scratch
    folder, say).

    Args:
        config: the validated config.
        root: the repository root (:func:`uncertainty_lr_study.paths.repo_root`).
    """
    value = config["results_dir"]
    if not RESULTS_DIR_PATTERN.fullmatch(value):
        return [
            f"  - results_dir: {short_repr(value)} is not a plain folder path; use folder "
            "names of letters, digits, '.', '_' and '-' separated by '/' (e.g. results/run1)"
        ]
    if not is_inside(value, root):
        if config.get("results_outside_repo", False):
            return []
        return [
            f"  - results_dir: {value!r} lies outside the repository ({root}); to "
            "write there on purpose (e.g. a cluster's scratch folder) also set "
            "results_outside_repo: true"
        ]
    rel = PurePosixPath(os.path.relpath(Path(root, value).resolve(), Path(root).resolve()))
    first = rel.parts[0] if rel.parts else "."
    if first in (".", *REPOSITORY_FOLDERS):
        return [
            f"  - results_dir: {value!r} is the repository or a folder of its own files "
            f"({first}); use a folder of its own, e.g. results/run1"
        ]
    if Path(root, value).exists() and not Path(root, value).is_dir():
        return [f"  - results_dir: {value!r} is a file; use a folder of its own, e.g. results"]
    return []


def symlink_problems(config: dict[str, Any], root: str | Path) -> list[str]:
    """Symbolic links that would let a job write outside the repository: any link
    below ``results_dir``, ``figures/`` or ``paper/generated/`` (files or folders,
    found without following links) whose target lies outside it. A results folder
    that ``results_outside_repo: true`` allows may link anywhere.

    Args:
        config: the validated config.
        root: the repository root.
    """
    root = Path(root).resolve()
    tops = [(Path(root, "figures"), False), (Path(root, "paper", "generated"), False)]
    tops.append((Path(root, config["results_dir"]), config.get("results_outside_repo", False)))
    problems = []
    for top, anywhere in tops:
        if anywhere or not top.is_dir():
            continue
        for folder, dirs, files in os.walk(top, followlinks=False):
            for name in dirs + files:
                path = Path(folder, name)
                if path.is_symlink() and not is_inside(path.resolve(), root):
                    problems.append(
                        f"  - results_dir: {path} is a symbolic link to {path.resolve()}, "
                        "outside the repository: jobs would write there; remove the link "
                        "(or, for a results folder elsewhere on purpose, set results_dir "
                        "to it with results_outside_repo: true)"
                    )
                    if len(problems) >= 5:
                        return problems
    return problems


def _has_control(text: str, allowed: str) -> bool:
    return any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in text)


TEXT_KEYS = frozenset({"note", "reason", "description"})
"""Keys whose string values are prose and may hold line breaks."""


def key_and_text_problems(data: Any) -> list[str]:
    """Mapping keys that are not strings (YAML reads ``5:`` as the integer 5), and
    strings holding control characters (a line break, a tab, NUL), which would
    end up in folder names and commands; free text under :data:`TEXT_KEYS` may hold
    line breaks and tabs.
    """
    problems = []
    for path, value in _walk(data):
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    problems.append(
                        f"  - {path or '(top level)'}: the key {short_repr(key)} is a "
                        f"{type(key).__name__}; write it as a name (quote it: '{key}')"
                    )
                elif _has_control(key, ""):
                    problems.append(
                        f"  - {path or '(top level)'}: the key {short_repr(key)} holds a "
                        "control character (a line break, tab or NUL); remove it"
                    )
        elif isinstance(value, str):
            allowed = "\n\t" if path.rsplit("/", 1)[-1] in TEXT_KEYS else ""
            if _has_control(value, allowed):
                problems.append(
                    f"  - {path or '(top level)'}: {short_repr(value)} holds a control "
                    "character (a line break, tab or NUL); remove it"
                )
    return problems
