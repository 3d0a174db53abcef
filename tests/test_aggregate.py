"""The aggregate step refuses inputs that would give a wrong table."""

import json
import shutil

import pytest
from helpers import mnist_settings

from uncertainty_lr_study.analysis.__main__ import main as analysis_main
from uncertainty_lr_study.analysis.aggregate import ResultsError, aggregate
from uncertainty_lr_study.engine import train_classifier


def settings(**kw):
    """A 160-image, 1-epoch run: enough to write real outputs."""
    return mnist_settings(
        **{**dict(epochs=1, target_value=0.5, eval_every_steps=5, train_subset=160), **kw}
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    paths = []
    for sched in ("constant", "uncertainty-variance"):
        train_classifier(settings(scheduler=sched), root / sched)
        paths.append(root / sched / "metrics.json")
    train_classifier(settings(epochs=2, scheduler="step"), root / "other")
    return paths, root / "other" / "metrics.json"


def test_good_runs_aggregate(runs):
    paths, _ = runs
    table, history = aggregate(paths)
    assert list(table["scheduler"]) == ["constant", "uncertainty-variance"]
    assert table["lr_decreases"].isna().tolist() == [True, False]
    assert set(history["scheduler"]) == {"constant", "uncertainty-variance"}


def test_a_run_given_twice_is_refused(runs):
    paths, _ = runs
    with pytest.raises(ResultsError, match="mnist/constant/seed0 was given 2 times"):
        aggregate([paths[0], paths[0]])


def test_runs_from_different_configs_are_refused(runs):
    paths, other = runs
    with pytest.raises(ResultsError, match="differ in 'epochs'"):
        aggregate([*paths, other])


def test_truncated_and_malformed_files_are_named(runs, tmp_path):
    paths, _ = runs
    bad = tmp_path / "bad"
    shutil.copytree(paths[0].parent, bad)
    history = (bad / "history.csv").read_text().splitlines()
    (bad / "history.csv").write_text("\n".join(history[:-3]) + "\n")
    with pytest.raises(ResultsError, match="history.csv has .* rows, its metrics.json says"):
        aggregate([bad / "metrics.json"])
    (bad / "metrics.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ResultsError, match="is not a JSON object"):
        aggregate([bad / "metrics.json"])
    text = paths[0].read_text()
    (bad / "metrics.json").write_text(text[: len(text) // 2])
    with pytest.raises(ResultsError, match=r"bad/metrics.json is not valid JSON"):
        aggregate([bad / "metrics.json"])


def test_cli_reports_one_line_errors(runs, tmp_path, capsys):
    assert analysis_main(["aggregate", "--out", str(tmp_path), str(tmp_path / "missing.json")]) == 1
    assert "missing.json is missing; re-run its training job" in capsys.readouterr().err
    assert (
        analysis_main(["tables", "--aggregate", str(tmp_path / "none"), "--out", str(tmp_path)])
        == 1
    )
    assert "run the aggregate step first" in capsys.readouterr().err


def test_setup_table_names_the_schedules_by_the_seeds_they_ran_on():
    # a reduced grid (peers on seed 0 only) must be visible in the paper's setup table
    import pandas as pd

    from uncertainty_lr_study.analysis.latex import schedules_by_seeds

    rows = [("uncertainty-gradnorm", k) for k in (0, 1, 2)] + [("constant", k) for k in (0, 1, 2)]
    rows += [("prodigy", 0), ("replay-gradnorm", 0)]
    runs = pd.DataFrame(rows, columns=["scheduler", "seed"])
    assert schedules_by_seeds(runs) == [
        ("schedules, seeds 0, 1, 2", "constant, uncertainty-gradnorm"),
        ("schedules, seed 0 only", "prodigy, replay-gradnorm"),
    ]
    full = runs[runs["scheduler"] != "prodigy"].assign(seed=0).drop_duplicates()
    assert schedules_by_seeds(full) == [
        ("schedules", "constant, uncertainty-gradnorm, replay-gradnorm")
    ]
