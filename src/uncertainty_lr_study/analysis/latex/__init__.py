"""LaTeX tables, macros and text of the paper, generated from the aggregate tables
(:mod:`.escape`, :mod:`.tables`, :mod:`.text`).

Writes into the paper's ``generated/`` folder:

- ``comparison_table.tex``: the main table: per task and method, the median test
  score and steps to target with bootstrap intervals, speed-up and paired
  probability of improvement against the best baselines
  (:mod:`uncertainty_lr_study.analysis.comparison`).
- ``results_table.tex``: per task and scheduler, test accuracy (SQuAD: exact
  match), precision, recall and F1 (mean +- standard deviation over seeds), epochs and seconds to the validation
  target (median over seeds; a run that misses the target counts as infinite),
  and device-hours (sum over seeds).
- ``setup.tex``: the experimental setup as it was run (from the runs' recorded
  settings), as a table (its macros go to ``numbers.tex``).
- ``numbers.tex``: every number the paper's text uses, as ``\\newcommand`` macros.
- ``findings.tex``: the results paragraph, worded from the measured numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from uncertainty_lr_study.analysis import comparison as comp
from uncertainty_lr_study.analysis.latex.escape import check_no_missing_numbers, tex_escape
from uncertainty_lr_study.analysis.latex.tables import (
    comparison_tex,
    results_table,
    schedules_by_seeds,
    sensitivity_tex,
    setup_tex,
)
from uncertainty_lr_study.analysis.latex.text import (
    control_verdict,
    controls_text,
    numbers_and_findings,
    ranking_text,
)
from uncertainty_lr_study.io import atomic_write_text

__all__ = [
    "GENERATED",
    "check_no_missing_numbers",
    "comparison_tex",
    "control_verdict",
    "controls_text",
    "numbers_and_findings",
    "ranking_text",
    "results_table",
    "schedules_by_seeds",
    "sensitivity_tex",
    "setup_tex",
    "tex_escape",
    "write_tables",
]


GENERATED = (
    "comparison_table.tex",
    "sensitivity.tex",
    "results_table.tex",
    "setup.tex",
    "numbers.tex",
    "findings.tex",
)
"""The files :func:`write_tables` writes into ``paper/generated/`` (the pipeline's
``tables`` rule declares them from here; ``paper/main.tex`` inputs each)."""


def write_tables(
    runs: pd.DataFrame,
    out_dir: str | Path,
    config_name: str = "",
    comparison: pd.DataFrame | None = None,
    sensitivity: pd.DataFrame | None = None,
    signal_levels: pd.DataFrame | None = None,
) -> None:
    """Write ``results_table.tex``, ``comparison_table.tex``, ``setup.tex``,
    ``numbers.tex``, ``findings.tex`` and ``sensitivity.tex`` into ``out_dir``;
    ``config_name`` (the config's ``paper.config_name``) becomes the macro
    ``\\ConfigName``. ``comparison``, ``sensitivity`` and ``signal_levels`` are the
    aggregate's CSV tables (the comparison is computed from ``runs`` when not
    given; the others are left out of the text when missing)."""
    out = Path(out_dir)
    table = comp.comparison(runs) if comparison is None else comparison
    setup_table, setup_macros = setup_tex(runs)
    numbers, findings = numbers_and_findings(runs, config_name)
    texts = {
        "comparison_table.tex": comparison_tex(table),
        "sensitivity.tex": ranking_text(table)
        + "\n"
        + controls_text(runs)
        + "\n"
        + sensitivity_tex(sensitivity, signal_levels),
        "results_table.tex": results_table(runs),
        "setup.tex": setup_table,
        "numbers.tex": setup_macros + numbers,
        "findings.tex": findings,
    }
    if tuple(texts) != GENERATED:
        raise RuntimeError(f"write_tables builds {tuple(texts)}, GENERATED says {GENERATED}")
    for name, text in texts.items():  # all checked before any is written
        check_no_missing_numbers(name, text)
    for name, text in texts.items():
        atomic_write_text(out / name, text)
