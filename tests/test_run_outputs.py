"""Run outputs are always written, strict and readable: a run that diverges at an
evaluation or gets non-finite settings is recorded as such (never a crash at the
end), every writer is atomic, fsynced and gives the user's normal file mode, and
the aggregate names a bad file in one line."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat

import pandas as pd
import pytest
from helpers import mnist_settings, transformer_settings

from uncertainty_lr_study.analysis.__main__ import main as analysis_main
from uncertainty_lr_study.analysis.aggregate import ResultsError, aggregate, write_aggregate
from uncertainty_lr_study.io import atomic_write_json
from uncertainty_lr_study.engine import save_checkpoint, train_classifier

RUN_FILES = ("metrics.json", "history.csv", "lr_trace.csv")


def tiny(**kw):
    """A 160-image, 1-epoch (5-step) LeNet-5 run validated on 500 images."""
    return mnist_settings(**{**dict(epochs=1, train_subset=160, val_subset=500), **kw})


def strict_json(path):
    """``path`` parsed as strict JSON: NaN / Infinity tokens are an error."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token} in {path}")

    text = path.read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    return json.loads(text, parse_constant=refuse)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("good")
    train_classifier(tiny(eval_every_steps=2), out, keep_checkpoint=False)
    return out


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    """lr 1e12 with an evaluation every step: the step-1 validation loss is NaN."""
    out = tmp_path_factory.mktemp("diverged")
    return out, train_classifier(tiny(lr=1e12, eval_every_steps=1), out, keep_checkpoint=False)


def test_a_non_finite_evaluation_is_recorded_as_diverged(diverged_run):
    out, metrics = diverged_run
    on_disk = strict_json(out / "metrics.json")
    assert on_disk == metrics
    assert metrics["status"] == "diverged" and metrics["diverged_at_epoch"] == pytest.approx(1 / 5)
    assert metrics["test"] is None and metrics["steps"] == 1
    assert metrics["final_val"]["loss"] is None  # NaN, written as null
    history = pd.read_csv(out / "history.csv")
    evals = history[history["kind"] == "eval"]
    assert evals["step"].tolist() == [0, 1] and math.isnan(evals["val_loss"].iloc[-1])
    assert (out / "lr_trace.csv").is_file()
    assert not (out / "checkpoint").exists()


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"scheduler": "step", "scheduler_params": {"gamma": math.nan, "step_size": 1}},
         "diverged"),
        ({"lr": math.inf}, "diverged"),
        ({"target_metric": "val_loss", "target_value": math.inf}, "completed"),
    ],
    ids=["gamma-nan", "lr-inf", "target-inf"],
)
def test_non_finite_settings_that_reach_a_run_are_written_as_null(overrides, status, tmp_path):
    # built directly (RunSettings.from_dict and the config refuse these values): the
    # run must still be recorded, whatever reaches it
    settings = tiny(**overrides)
    metrics = train_classifier(settings, tmp_path, keep_checkpoint=False)
    assert strict_json(tmp_path / "metrics.json") == metrics
    assert metrics["status"] == status
    if status == "diverged":  # a non-finite learning rate trains no further step
        assert metrics["test"] is None and metrics["diverged_at_epoch"] is not None
    assert not (tmp_path / "checkpoint").exists()
    for name, value in {**overrides, **overrides.get("scheduler_params", {})}.items():
        if isinstance(value, float) and not math.isfinite(value):
            saved = metrics["settings"].get(name, metrics["settings"]["scheduler_params"].get(name))
            assert saved is None


def test_trainer_run_with_a_non_finite_evaluation_is_recorded_as_diverged(
    tiny_checkpoint, tmp_path
):
    from uncertainty_lr_study.engine.trainer import train_transformer

    settings = transformer_settings(tiny_checkpoint, lr=1e12, eval_every_steps=1, warmup_steps=0)
    metrics = train_transformer(settings, tmp_path, keep_checkpoint=True)
    assert strict_json(tmp_path / "metrics.json") == metrics
    assert metrics["status"] == "diverged" and metrics["test"] is None
    assert metrics["diverged_at_epoch"] == pytest.approx(1 / 6) and metrics["steps"] == 1
    assert metrics["final_val"]["loss"] is None
    evals = pd.read_csv(tmp_path / "history.csv").query("kind == 'eval'")
    assert evals["step"].tolist() == [0, 1]
    # the diverged step is not checkpointed (a resumed run would start from NaN weights)
    assert not list((tmp_path / "checkpoint").glob("checkpoint-*"))


def test_a_diverged_run_aggregates_with_its_nulls_as_nan(diverged_run, tmp_path):
    out, _ = diverged_run
    write_aggregate([out / "metrics.json"], tmp_path)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["status"].tolist() == ["diverged"]
    assert runs["test_score"].isna().all() and not runs["target_reached"].any()


def copy_run(run, dest):
    shutil.copytree(run, dest)
    return dest / "metrics.json"


def assert_one_line_error(metrics_path, capsys, *fragments):
    """The CLI's aggregate step fails with one line naming the file and saying to re-run."""
    out = metrics_path.parent.parent / "aggregate"
    assert analysis_main(["aggregate", "--out", str(out), str(metrics_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in (metrics_path.parent.name, "re-run", *fragments):
        assert fragment in err, err


def test_non_utf8_metrics_is_named(good_run, tmp_path, capsys):
    bad = copy_run(good_run, tmp_path / "latin1")
    bad.write_bytes(b'{"task": "caf\xe9"}')
    with pytest.raises(ResultsError, match=r"latin1/metrics.json cannot be read \(UnicodeDecode"):
        aggregate([bad])
    assert_one_line_error(bad, capsys, "metrics.json", "UnicodeDecodeError")


def test_a_folder_in_place_of_metrics_is_named(good_run, tmp_path, capsys):
    bad = copy_run(good_run, tmp_path / "folder")
    bad.unlink()
    bad.mkdir()
    with pytest.raises(ResultsError, match=r"folder/metrics.json cannot be read \(IsADirectory"):
        aggregate([bad])
    assert_one_line_error(bad, capsys, "metrics.json", "IsADirectoryError")


def test_a_history_without_a_needed_column_or_not_utf8_is_named(good_run, tmp_path, capsys):
    bad = copy_run(good_run, tmp_path / "nocolumn")
    history = bad.with_name("history.csv")
    pd.read_csv(history).drop(columns="val_loss").to_csv(history, index=False)
    with pytest.raises(ResultsError, match=r"nocolumn/history.csv lacks column\(s\) val_loss"):
        aggregate([bad])
    assert_one_line_error(bad, capsys, "history.csv", "val_loss")
    history.write_bytes(history.read_bytes().replace(b"eval", b"\xe9val", 1))
    with pytest.raises(ResultsError, match=r"nocolumn/history.csv is malformed \(UnicodeDecode"):
        aggregate([bad])


def test_outputs_have_the_users_file_mode_and_no_temporary_files(umask_022, tmp_path):
    run = tmp_path / "run"
    train_classifier(tiny(), run, keep_checkpoint=True)
    write_aggregate([run / "metrics.json"], tmp_path / "aggregate")
    written = [run / f for f in RUN_FILES] + [run / "checkpoint" / "last.pt"]
    written += sorted((tmp_path / "aggregate").iterdir())
    assert len(written) == 8
    assert {p.name: oct(mode(p)) for p in written} == {p.name: "0o644" for p in written}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_every_write_is_fsynced_with_its_folder(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_json(tmp_path / "a.json", {"x": 1.0})
    assert synced == ["file", "folder"]
    synced.clear()
    save_checkpoint(tmp_path / "checkpoint" / "last.pt", {"format": 2})
    assert synced == ["file", "folder"]


def test_figures_are_written_atomically(good_run, umask_022, tmp_path, monkeypatch):
    from uncertainty_lr_study.analysis.figures import FIGURES, write_figures

    write_aggregate([good_run / "metrics.json"], tmp_path / "aggregate")
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    out = tmp_path / "figures"
    write_figures(
        pd.read_csv(tmp_path / "aggregate" / "runs.csv"),
        pd.read_csv(tmp_path / "aggregate" / "history.csv"),
        out,
    )
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(f"{n}.{ext}" for n in FIGURES for ext in ("pdf", "png"))
    assert sorted(replaced) == files  # every figure came through a temp-and-rename
    assert all(mode(out / f) == 0o644 for f in files)
    assert (out / "lr.pdf").read_bytes().startswith(b"%PDF")
    assert (out / "lr.png").read_bytes().startswith(b"\x89PNG")
