"""From run outputs to the paper: aggregate table, figures, LaTeX tables and numbers.

Data flow: ``results/runs/**/metrics.json`` + ``history.csv`` -> :mod:`aggregate`
(``runs.csv``, ``history.csv``) -> :mod:`figures` and :mod:`tables` -> ``paper/``.
The aggregate tables are the only input of figures and tables.
"""
