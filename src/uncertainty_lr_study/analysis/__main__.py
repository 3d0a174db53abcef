"""Command line of the analysis steps, as the Snakemake rules call them::

    python -m uncertainty_lr_study.analysis aggregate --out results/aggregate RUN/metrics.json ...
    python -m uncertainty_lr_study.analysis sensitivity --out results/aggregate/sensitivity.csv RUN/metrics.json ...
    python -m uncertainty_lr_study.analysis figures --aggregate results/aggregate --out figures
    python -m uncertainty_lr_study.analysis tables --aggregate results/aggregate --out paper/generated

Errors in the inputs are reported as one line naming the bad file (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from uncertainty_lr_study.analysis.aggregate import ResultsError, write_aggregate


def _optional_csv(path: Path) -> pd.DataFrame | None:
    """A table of the aggregate step, or None where it was not written."""
    return pd.read_csv(path) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """Run one analysis step; returns the process exit code: 0, or 1 after one
    ``error: ...`` line on stderr for a bad input or output file (a
    :class:`ResultsError`, an unreadable, missing or malformed file, a file that
    cannot be written)."""
    parser = argparse.ArgumentParser(prog="python -m uncertainty_lr_study.analysis")
    sub = parser.add_subparsers(dest="command", metavar="{aggregate,sensitivity,figures,tables}", required=True)
    agg = sub.add_parser("aggregate", help="collect run outputs into runs.csv and history.csv")
    agg.add_argument("--out", required=True, type=Path)
    agg.add_argument("metrics", nargs="+", type=Path, help="the runs' metrics.json files")
    sens = sub.add_parser("sensitivity", help="collect the sensitivity sweep's runs")
    sens.add_argument("--out", required=True, type=Path, help="the CSV file to write")
    sens.add_argument("metrics", nargs="*", type=Path, help="the sweep runs' metrics.json")
    for name, help_ in (("figures", "draw the paper's figures"), ("tables", "write LaTeX tables")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--aggregate", required=True, type=Path, help="folder of runs.csv")
        p.add_argument("--out", required=True, type=Path)
        if name == "tables":
            p.add_argument("--config-name", default="", help="the config's paper.config_name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "aggregate":
            write_aggregate(args.metrics, args.out)
            return 0
        if args.command == "sensitivity":
            from uncertainty_lr_study.analysis.aggregate import aggregate_sensitivity  # noqa: PLC0415
            from uncertainty_lr_study.io import atomic_write_csv  # noqa: PLC0415

            atomic_write_csv(args.out, aggregate_sensitivity(args.metrics))
            return 0
        if not (args.aggregate / "runs.csv").is_file():
            raise ResultsError(
                f"{args.aggregate / 'runs.csv'} does not exist: run the aggregate step first "
                "(python -m uncertainty_lr_study.analysis aggregate ..., or snakemake)"
            )
        runs = pd.read_csv(args.aggregate / "runs.csv")
        if args.command == "figures":
            from uncertainty_lr_study.analysis.figures import write_figures  # noqa: PLC0415

            write_figures(
                runs,
                pd.read_csv(args.aggregate / "history.csv"),
                args.out,
                sensitivity=_optional_csv(args.aggregate / "sensitivity.csv"),
            )
        else:
            from uncertainty_lr_study.analysis.latex import write_tables  # noqa: PLC0415

            write_tables(
                runs,
                args.out,
                args.config_name,
                comparison=_optional_csv(args.aggregate / "comparison.csv"),
                sensitivity=_optional_csv(args.aggregate / "sensitivity.csv"),
                signal_levels=_optional_csv(args.aggregate / "signal_levels.csv"),
            )
    except KeyError as err:  # a column the tables and figures read is missing
        print(
            f"error: an aggregate table in {getattr(args, 'aggregate', '?')} lacks the "
            f"column(s) {err}: it was not written by this version's aggregate step; "
            "delete the aggregate folder and run snakemake again",
            file=sys.stderr,
        )
        return 1
    except (
        ResultsError,
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
    ) as err:
        print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
