"""LaTeX from plain values: escaping any text (:func:`tex_escape`), macro names,
numbers with their rules for missing values, and the check that no ``nan`` or
``inf`` reaches the paper (:func:`check_no_missing_numbers`)."""

from __future__ import annotations

import math
import re
import unicodedata

import pandas as pd


def macro_name(*parts: str) -> str:
    """CamelCase LaTeX macro name from parts: ``("mnist", "step", "acc")`` ->
    ``\\MnistStepAcc`` (digits spelled out, since macro names take letters only)."""
    digits = "Zero One Two Three Four Five Six Seven Eight Nine".split()
    words = []
    for part in parts:
        part = re.sub(r"\d", lambda m: digits[int(m.group())], str(part))
        words += [w.capitalize() for w in re.split(r"[^A-Za-z]+", part) if w]
    return "\\" + "".join(words)


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def tex_escape(text: str) -> str:
    """Plain text as LaTeX source that prints it, and nothing else.

    Every character TeX gives a meaning (``\\ { } $ & # ^ _ % ~``, and ``< > |``,
    which T1 prints otherwise as other glyphs) becomes a macro or an escaped
    character, so no input can start a command (``\\input``), a group, math mode or
    a comment. Control characters (newlines, tabs) become spaces; other non-ASCII
    characters become their ASCII letters where Unicode decomposes them (``e`` for
    ``é``) and ``?`` elsewhere, since pdfLaTeX stops on a character it has no glyph
    for. Every config string that reaches the paper goes through here.

    Args:
        text: any string (e.g. the config's ``paper.config_name``).

    Returns:
        LaTeX source for text mode.
    """
    out = []
    for char in str(text):
        if char in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[char])
        elif char.isascii():
            out.append(char if char.isprintable() else " ")
        else:
            ascii_form = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(tex_escape(ascii_form) if ascii_form.isprintable() and ascii_form else "?")
    return "".join(out)


# a number's place (math, a table cell, a macro's value) holding nan or inf
_MISSING_NUMBER = re.compile(
    r"(?:[{$&]|\\pm)\s*[-+]?(?:nan|inf|infinity)\s*(?:[}$&%\\]|$)", re.IGNORECASE
)


def check_no_missing_numbers(name: str, text: str) -> None:
    """Refuse generated LaTeX in which a missing or infinite number was formatted
    as ``nan`` or ``inf`` (the paper says ``--``, ``diverged`` or ``not reached``).

    Raises:
        ValueError: naming the file and the line, so a formatting gap fails the
            tables job instead of printing ``nan`` in the paper.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        match = _MISSING_NUMBER.search(line)
        if match:
            raise ValueError(
                f"{name}, line {number}: a missing number was written as "
                f"{match.group()!r} ({line.strip()[:120]}); format it with a rule for "
                "missing values (e.g. _percent_or_dash)"
            )


def _num(value: float, fmt: str) -> str:
    if math.isnan(value):
        return "--"
    if math.isinf(value):
        return r"$\infty$"
    return format(value, fmt)


def _with_ci(value: float, low: float, high: float, fmt: str, scale: float = 1.0) -> str:
    if math.isnan(value):
        return "--"
    text = _num(value * scale, fmt) if math.isfinite(value) else r"$\infty$"
    if math.isnan(low):
        return text
    lo = _num(low * scale, fmt) if math.isfinite(low) else r"$\infty$"
    hi = _num(high * scale, fmt) if math.isfinite(high) else r"$\infty$"
    return f"{text} [{lo}, {hi}]"


def _pct(mean: float, std: float, n: int) -> str:
    """Mean +- standard deviation in percent; the mean alone for a single seed or
    where no standard deviation exists (one completed run of several); ``--`` where
    no run completed (a diverged run has no test metrics)."""
    if not math.isfinite(mean):
        return "--"
    if n < 2 or not math.isfinite(std):
        return f"${100 * mean:.2f}$"
    return f"${100 * mean:.2f} \\pm {100 * std:.2f}$"


def _percent_or_dash(value: float) -> str:
    """A fraction as a percentage with two decimals; ``--`` where it does not exist
    (every run diverged), never ``nan``."""
    return f"{100 * value:.2f}" if math.isfinite(value) else "--"


def _pct_text(value: float) -> str:
    return "--" if math.isnan(value) else f"${100 * value:.2f}\\%$"


def _count(value: float) -> str:
    return "--" if pd.isna(value) else f"{int(value):,}"
