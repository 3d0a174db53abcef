import dataclasses
import json

import pandas as pd
import pytest
from helpers import mnist_settings

from uncertainty_lr_study.engine import train_classifier

TIMING = {"wall_seconds", "train_seconds", "device_hours", "peak_memory_mb", "host"}


settings = mnist_settings


def strip_timing(metrics):
    return {k: v for k, v in metrics.items() if k not in TIMING and k != "time_to_target"} | {
        "ttt": {k: v for k, v in metrics["time_to_target"].items() if k != "seconds"}
    }


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    out = tmp_path_factory.mktemp("a")
    return out, train_classifier(settings(scheduler="uncertainty-variance"), out)


def test_outputs_follow_the_contract(run_a):
    out, metrics = run_a
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in (
        "test",
        "time_to_target",
        "wall_seconds",
        "device",
        "device_hours",
        "peak_memory_mb",
        "versions",
        "git_commit",
        "settings",
        "steps",
        "status",
    ):
        assert key in metrics
    assert set(metrics["test"]) == {
        "loss",
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
    }
    assert metrics["steps"] == 2 * 20 and metrics["status"] == "completed"
    assert metrics["device_hours_unit"] == "cpu-core-hours"
    hist = pd.read_csv(out / "history.csv")
    evals, steps = hist[hist.kind == "eval"], hist[hist.kind == "step"]
    assert evals["step"].tolist() == [0, 10, 20, 30, 40]
    assert steps["step"].tolist() == list(range(5, 41, 5))
    for col in (
        "epoch",
        "seconds",
        "lr",
        "train_loss",
        "val_loss",
        "val_accuracy",
        "grad_norm",
        "predictive_variance",
    ):
        assert col in hist.columns
    # a real model learns: 640 images, 2 epochs, well above chance
    assert metrics["test"]["accuracy"] > 0.6
    assert evals["val_accuracy"].iloc[-1] > evals["val_accuracy"].iloc[0]


def test_same_seed_same_result(run_a, tmp_path):
    _, metrics = run_a
    again = train_classifier(settings(scheduler="uncertainty-variance"), tmp_path)
    assert strip_timing(again) == strip_timing(metrics)


def test_seed_pairs_schedulers_and_differs_across_seeds(run_a, tmp_path):
    out, _ = run_a
    train_classifier(settings(scheduler="constant"), tmp_path / "c")
    train_classifier(settings(scheduler="constant", seed=1), tmp_path / "s1")
    a = pd.read_csv(out / "history.csv")
    c = pd.read_csv(tmp_path / "c" / "history.csv")
    s1 = pd.read_csv(tmp_path / "s1" / "history.csv")
    # first epoch (before any scheduler decision): identical weights and data order
    first = lambda h: h[h.step <= 20].drop(columns="seconds").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(first(a), first(c))
    assert s1["val_loss"].iloc[0] != c["val_loss"].iloc[0]


def test_divergence_is_recorded_not_raised(tmp_path):
    metrics = train_classifier(settings(lr=1e12, epochs=1), tmp_path)
    assert metrics["status"] == "diverged"
    assert metrics["test"] is None and metrics["time_to_target"]["reached"] is False
    assert (tmp_path / "history.csv").exists()


def test_divergence_found_at_a_later_read_counts_from_its_own_step(tmp_path, monkeypatch):
    """The host reads the per-step values every few steps: a NaN image met at step 12
    of 20 stops the run at step 12 whether the loss is read after every step (a row
    per step) or only at the end of the epoch."""
    from uncertainty_lr_study.engine import torch_loop as training

    real = training.DATA_SETS["mnist"]

    def poisoned(s):
        data = real.load(s)
        data.x_train[443] = float("nan")  # in the batch of step 12 in seed 0's order
        return data

    monkeypatch.setitem(training.DATA_SETS, "mnist", dataclasses.replace(real, load=poisoned))
    runs = [
        train_classifier(
            settings(epochs=1, sample_every_steps=k, eval_every_steps=0), tmp_path / f"{k}"
        )
        for k in (1, 0)
    ]
    for m in runs:
        assert m["status"] == "diverged" and m["steps"] == 12 and m["diverged_at_epoch"] == 0.6
    assert runs[0]["final_lr"] == runs[1]["final_lr"]


def test_freed_memory_is_kept_where_the_c_library_is_glibc():
    import platform

    from uncertainty_lr_study.engine import reuse_freed_memory

    assert reuse_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_pending_steps_read_the_values_item_would_give():
    import torch

    from uncertainty_lr_study.engine import _PendingSteps

    pending = _PendingSteps()
    values = torch.randn(4, 3)
    for k, (a, b, c) in enumerate(values):
        pending.add(k, k / 4, a, b, c)
    assert len(pending) == 4
    assert pending.read() == [(k, k / 4, *(x.item() for x in row)) for k, row in enumerate(values)]
    assert len(pending) == 0 and pending.read() == []


KILL_SETTINGS = dict(
    scheduler="uncertainty-variance",
    epochs=3,
    train_subset=16_000,
    eval_every_steps=0,
    sample_every_steps=50,
)


def test_killed_run_resumes_from_its_checkpoint_with_identical_results(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    s = settings(**KILL_SETTINGS)
    out = tmp_path / "killed"
    code = (
        "from uncertainty_lr_study.config import RunSettings\n"
        "from uncertainty_lr_study.engine import train_classifier\n"
        f"train_classifier(RunSettings(**{s.to_dict()!r}), {str(out)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    ckpt = out / "checkpoint" / "last.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt.exists(), "no checkpoint was written after the first epoch"
    time.sleep(0.5)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()

    resumed = train_classifier(s, out)
    assert resumed["resumed_from_epoch"] in (1, 2)  # not from scratch
    assert not ckpt.exists()  # deleted once the run completed
    straight = train_classifier(s, tmp_path / "straight")
    assert straight["resumed_from_epoch"] is None
    drop = {"resumed_from_epoch"}
    assert {k: v for k, v in strip_timing(resumed).items() if k not in drop} == {
        k: v for k, v in strip_timing(straight).items() if k not in drop
    }
    a = pd.read_csv(out / "history.csv").drop(columns="seconds")
    b = pd.read_csv(tmp_path / "straight" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(a, b)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    from uncertainty_lr_study.engine import CheckpointError

    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "last.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="last.pt cannot be read .* delete it"):
        train_classifier(settings(epochs=1), tmp_path)


def test_checkpoint_of_other_settings_is_ignored(tmp_path):
    train_classifier(settings(epochs=1, train_subset=320), tmp_path, keep_checkpoint=True)
    assert (tmp_path / "checkpoint" / "last.pt").exists()
    metrics = train_classifier(settings(epochs=1, train_subset=640), tmp_path)
    assert metrics["resumed_from_epoch"] is None and metrics["steps"] == 20


def test_keep_checkpoints_is_bookkeeping_not_a_run_setting(tmp_path, monkeypatch):
    from uncertainty_lr_study.config import load_config, resolve_run
    from uncertainty_lr_study.paths import repo_root

    config = load_config(repo_root() / "config/smoke.yaml")
    before = resolve_run(config, "mnist", "step", 0)
    config["keep_checkpoints"] = True
    assert resolve_run(config, "mnist", "step", 0) == before  # Snakemake params unchanged
    monkeypatch.setenv("UNCERTAINTY_LR_KEEP_CHECKPOINTS", "1")  # what the train rule sets
    train_classifier(settings(epochs=1, train_subset=320), tmp_path / "a")
    assert (tmp_path / "a" / "checkpoint" / "last.pt").exists()
    monkeypatch.setenv("UNCERTAINTY_LR_KEEP_CHECKPOINTS", "0")
    train_classifier(settings(epochs=1, train_subset=320), tmp_path / "b")
    assert not (tmp_path / "b" / "checkpoint").exists()
