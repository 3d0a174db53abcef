import copy

import pytest
import yaml

from uncertainty_lr_study.config import (
    ConfigError,
    RunSettings,
    load_config,
    load_schema,
    resolve_run,
    validate_config,
)
from uncertainty_lr_study.models import MODELS
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.registry import SCHEDULERS
from uncertainty_lr_study.tasks import DATA_SETS, HF_MODELS, MODEL_KINDS

CONFIGS = ["config/config.yaml", "config/smoke.yaml", "config/paper.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    config = load_config(repo_root() / name)
    study = {n for n, s in SCHEDULERS.items() if s.family in ("baseline", "uncertainty")}
    assert study <= set(config["schedulers"])


def test_schema_names_every_registry_method_and_smoke_runs_each_on_mnist():
    from uncertainty_lr_study.config import load_schema, task_schedulers

    assert load_schema()["$defs"]["scheduler"]["enum"] == list(SCHEDULERS)
    smoke = load_config(repo_root() / "config/smoke.yaml")
    assert set(task_schedulers(smoke, "mnist")) == set(SCHEDULERS)


def test_paper_config_is_the_study_plan():
    t = load_config(repo_root() / "config/paper.yaml")["tasks"]["mnist"]
    assert (t["epochs"], t["batch_size"], t["lr"], t["optimizer"]) == (50, 32, 0.001, "adam")
    assert len(load_config(repo_root() / "config/paper.yaml")["seeds"]) >= 5


def test_schema_lists_exactly_the_registry():
    schema = load_schema()
    ref = {"$ref": "#/$defs/scheduler"}
    assert schema["$defs"]["scheduler"]["enum"] == list(SCHEDULERS)
    assert schema["properties"]["schedulers"]["items"] == ref
    assert schema["properties"]["scheduler_params"]["propertyNames"] == ref
    assert schema["$defs"]["task"]["properties"]["schedulers"]["items"] == ref


def test_schema_lists_exactly_the_models_and_datasets():
    task = load_schema()["$defs"]["task"]["properties"]
    assert set(task["model"]["enum"]) == set(MODELS) | set(HF_MODELS)
    assert set(task["dataset"]["enum"]) == set(DATA_SETS)
    assert set(task["model"]["enum"]) == set(MODEL_KINDS)


def bad_config():
    config = load_config(repo_root() / "config/smoke.yaml")
    config = copy.deepcopy(config)
    config["schedulers"] = ["step", "cosin"]
    config["tasks"]["mnist"]["lr"] = -0.1
    config["seeds"] = []
    config["learning_rate"] = 3
    return config


def test_all_errors_reported_at_once_with_paths():
    with pytest.raises(ConfigError) as info:
        validate_config(bad_config())
    msg = str(info.value)
    assert "4 problem(s)" in msg
    assert "schedulers/1: 'cosin' is not one of" in msg and "['constant', 'step', 'cosine'," in msg
    assert "tasks/mnist/lr: -0.1 is less than or equal to the minimum of 0" in msg
    assert "seeds: [] should be non-empty" in msg
    assert "'learning_rate' was unexpected" in msg


def test_snakemake_refuses_a_bad_config_before_any_job(repo_copy, run_snakemake):
    (repo_copy / "bad.yaml").write_text(yaml.safe_dump(bad_config()))
    proc = run_snakemake(repo_copy, "-n", "--configfile", "bad.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "4 problem(s)" in out and "tasks/mnist/lr" in out and "cosin" in out
    assert not (repo_copy / "results").exists()


def test_run_settings_check_types_and_names():
    settings = resolve_run(load_config(repo_root() / "config/smoke.yaml"), "mnist", "step", 0)
    data = settings.to_dict()
    assert RunSettings.from_dict(data) == settings
    data.update(seed="0", lr="fast", scheduler="warp", extra=1)
    del data["epochs"]
    with pytest.raises(ConfigError) as info:
        RunSettings.from_dict(data)
    msg = str(info.value)
    for part in (
        "extra: unknown field",
        "epochs: missing",
        "seed: expected int, got '0'",
        "lr: expected float",
        "scheduler: unknown 'warp'",
    ):
        assert part in msg


def test_resolve_run_rejects_names_outside_the_config():
    config = load_config(repo_root() / "config/smoke.yaml")
    with pytest.raises(ConfigError, match="unknown task 'imdb'"):
        resolve_run(config, "imdb", "step", 0)
    config["schedulers"] = ["step"]
    with pytest.raises(ConfigError, match="not in task 'imdb-lstm''s list"):
        resolve_run(config, "imdb-lstm", "cosine", 0)


def test_preflight_catches_what_the_schema_cannot(tmp_path, monkeypatch):
    from uncertainty_lr_study.config import preflight

    config = load_config(repo_root() / "config/smoke.yaml")
    preflight(config)  # the shipped config passes
    config["scheduler_params"] = {"uncertainty-gradnorm": {"treshold": 0.2}, "step": {"gamma": 0.5}}
    config["scheduler_params"]["uncertainty-variance"] = {"factor": 1.5}
    config["tasks"]["mnist"]["target"]["value"] = 1.5
    config["tasks"]["mnist"]["train_subset"] = 999_999
    with pytest.raises(ConfigError) as info:
        preflight(config)
    msg = str(info.value)
    assert "4 problem(s)" in msg
    assert "scheduler_params/uncertainty-gradnorm: unknown hyperparameter(s) ['treshold']" in msg
    assert "scheduler_params/uncertainty-variance: factor must lie in (0, 1)" in msg
    assert "tasks/mnist/target/value: a val_accuracy target is a fraction in (0, 1]" in msg
    assert "tasks/mnist/train_subset: 999999 exceeds the 55,000 training examples" in msg


def test_preflight_checks_the_data_files(tmp_path, monkeypatch):
    import shutil

    from uncertainty_lr_study.config import preflight

    root = tmp_path / "repo"
    shutil.copytree(repo_root() / "data", root / "data")
    shutil.copytree(repo_root() / "workflow", root / "workflow")
    (root / "data/raw/mnist/t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    config = load_config(repo_root() / "config/smoke.yaml")
    monkeypatch.setenv("UNCERTAINTY_LR_ROOT", str(root))
    with pytest.raises(
        ConfigError, match="t10k-labels-idx1-ubyte.gz is corrupt: sha256 .* expected b91679a0"
    ):
        preflight(config)


def test_float_valued_integers_are_accepted_as_integers():
    config = load_config(repo_root() / "config/smoke.yaml")
    config["tasks"]["mnist"]["epochs"] = 3.0  # YAML `3.0`: the schema admits it as an integer
    settings = resolve_run(validate_config(config), "mnist", "step", 0)
    assert settings.epochs == 3 and isinstance(settings.epochs, int)
    assert RunSettings.from_dict(settings.to_dict()) == settings


def test_unknown_scheduler_name_is_called_unknown():
    config = load_config(repo_root() / "config/smoke.yaml")
    with pytest.raises(ConfigError, match="unknown scheduler 'warp'; valid: constant"):
        resolve_run(config, "mnist", "warp", 0)


def test_preflight_checks_models_against_their_tasks():
    from uncertainty_lr_study.config import preflight

    config = load_config(repo_root() / "config/smoke.yaml")
    lstm, bert = config["tasks"]["imdb-lstm"], config["tasks"]["imdb-minilm"]
    lstm["warmup_ratio"] = 0.1
    lstm["model_params"] = {"hidden_size": 0}
    lstm["test_subset"] = 30_000
    bert["pretrained"] = "no-such-org/no-such-model"
    config["tasks"]["mnist"]["model"] = "lstm"
    with pytest.raises(ConfigError) as info:
        preflight(config)
    msg = str(info.value)
    assert "5 problem(s)" in msg, msg
    assert "tasks/mnist/model: 'lstm' cannot read dataset 'mnist' (it reads: imdb)" in msg
    assert "tasks/imdb-lstm/warmup_ratio: applies to model 'transformer' only" in msg
    assert "tasks/imdb-lstm/model_params: vocab_size must be >= 2 and embedding_dim, hidden_size" in msg
    assert "tasks/imdb-lstm/test_subset: 30000 exceeds the 25,000 test examples of imdb" in msg
    assert "tasks/imdb-minilm/pretrained: no local copy of pretrained model" in msg
    assert "make prepare" in msg


def test_a_task_may_reduce_the_grid():
    from uncertainty_lr_study.config import planned_runs

    config = load_config(repo_root() / "config/config.yaml")
    runs = planned_runs(config)
    minilm = [(s, k) for t, s, k in runs if t == "imdb-minilm"]
    own = config["tasks"]["imdb-minilm"]["schedulers"]
    assert len(own) < len(config["schedulers"])  # a reduced grid: its own list, one seed
    assert sorted(minilm) == sorted((s, 0) for s in own)
    # mnist: the study's schedules on every seed, the peers and controls on peer_seeds
    mnist = [(s, k) for t, s, k in runs if t == "mnist"]
    study = [s for s in config["tasks"]["mnist"]["schedulers"] if s in config["schedulers"]]
    others = [s for s in config["tasks"]["mnist"]["schedulers"] if s not in config["schedulers"]]
    assert len(mnist) == len(study) * len(config["seeds"]) + len(others) * len(
        config["tasks"]["mnist"]["peer_seeds"]
    )
    smoke = load_config(repo_root() / "config/smoke.yaml")
    with pytest.raises(ConfigError, match="not in task 'imdb-minilm''s list: cosine, uncertainty-gradnorm"):
        resolve_run(smoke, "imdb-minilm", "step", 0)
    # a task's schedule overrides the config's
    assert resolve_run(config, "imdb-lstm", "step", 0).scaling == "fraction"
    assert resolve_run(config, "mnist", "step", 0).scaling == "absolute"


def test_notebook_parameters_are_checked_before_papermill():
    import subprocess
    import sys

    from uncertainty_lr_study.experiment import check_parameters

    good = "{config_file: config/smoke.yaml, task: imdb-lstm, scheduler: step, seed: 0}"
    assert check_parameters(good).task == "imdb-lstm"
    with pytest.raises(ConfigError, match="seed must be an integer, got 'zero'"):
        check_parameters(good.replace("seed: 0", "seed: zero"))
    with pytest.raises(ConfigError, match=r"lr: expected float, got '0\.1x'"):
        settings = resolve_run(load_config(repo_root() / "config/smoke.yaml"), "mnist", "step", 0)
        check_parameters(yaml.safe_dump({"settings": {**settings.to_dict(), "lr": "0.1x"}}))
    with pytest.raises(ConfigError, match="outdir: unknown parameter"):
        check_parameters("{outdir: x}")
    proc = subprocess.run(
        [sys.executable, "-m", "uncertainty_lr_study.experiment", "check-parameters", "{progress: 1}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "progress: expected true or false, got 1" in proc.stderr


def test_preflight_checks_options_against_the_data_and_the_run():
    from uncertainty_lr_study.config import preflight

    config = load_config(repo_root() / "config/smoke.yaml")
    mnist, lstm, bert, qa = (
        config["tasks"][k] for k in ("mnist", "imdb-lstm", "imdb-minilm", "squad-minilm")
    )
    mnist["max_length"] = 64  # IMDB-only option
    mnist["val_subset"] = 6_000  # more than the 5,000 validation images
    lstm["model_params"] = {"pad_id": 7}  # comes from the data
    bert["vocab_size"] = 100  # LSTM-only option
    bert["max_length"] = 1024  # MiniLM has 512 positions
    bert["warmup_ratio"] = 0.9  # ceil(0.9 * 4 steps) = 4: no step after the warmup
    bert["doc_stride"] = 32  # SQuAD-only option
    qa["target"]["metric"] = "val_accuracy"  # SQuAD measures exact match and F1
    qa["truncation"] = "head_tail"  # IMDB-only option: SQuAD windows the context
    qa["doc_stride"] = 90  # 128-token windows, 32-token questions: no new context
    with pytest.raises(ConfigError) as info:
        preflight(config)
    msg = str(info.value)
    assert "10 problem(s)" in msg, msg
    assert "tasks/mnist/max_length: applies to dataset(s) imdb, squad only" in msg
    assert "tasks/imdb-minilm/doc_stride: applies to dataset(s) squad only" in msg
    assert "tasks/squad-minilm/target/metric: 'val_accuracy' is not measured on 'squad'" in msg
    assert "tasks/squad-minilm/truncation: applies to dataset(s) imdb only" in msg
    assert "tasks/squad-minilm/doc_stride: 90 leaves no new context" in msg
    assert "tasks/mnist/val_subset: 6000 exceeds the 5,000 validation examples" in msg
    assert "tasks/imdb-lstm/model_params: ['pad_id'] come from the data" in msg
    assert "tasks/imdb-minilm/vocab_size: applies to model 'lstm' only" in msg
    assert "tasks/imdb-minilm/max_length: 1024 exceeds the 512 positions" in msg
    assert "tasks/imdb-minilm/warmup: 4 warmup steps, but the run has only 4 optimizer steps" in msg


def test_a_folder_that_does_not_exist_is_named_as_such():
    from uncertainty_lr_study.pretrained import PretrainedError, resolve_pretrained

    with pytest.raises(PretrainedError, match="folder './no/such' does not exist"):
        resolve_pretrained("./no/such", offline=False)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ("{settings: abc}", "`settings` must be a mapping"),
        ("{settings: [1, 2]}", "`settings` must be a mapping"),
        (
            "{config_file: config/smoke.yaml, task: mnist, scheduler: [cosine], seed: 0}",
            "scheduler must be a string",
        ),
        ("{config_file: 3, task: mnist, scheduler: step, seed: 0}", "config_file must be a string"),
        ("{config_file: config/smoke.yaml, task: mnist, scheduler: step, seed: 7}", "seed 7 is not among task 'mnist''s seeds"),
    ],
)
def test_notebook_parameters_of_the_wrong_shape_are_refused(parameters, message):
    from uncertainty_lr_study.experiment import check_parameters

    with pytest.raises(ConfigError, match=message):
        check_parameters(parameters)


def test_run_settings_values_are_checked():
    settings = resolve_run(load_config(repo_root() / "config/smoke.yaml"), "mnist", "step", 0)
    bad = {**settings.to_dict(), "dataset": "cifar", "epochs": 0, "lr": -1.0, "device": "tpu"}
    with pytest.raises(ConfigError) as info:
        RunSettings.from_dict(bad)
    msg = str(info.value)
    for text in ("dataset: 'cifar' is not one of mnist, imdb", "epochs: 0 is not >= 1",
                 "lr: -1.0 is not > 0", "device: 'tpu' is not auto, cpu or cuda"):
        assert text in msg


def test_sensitivity_sweep_points_and_their_settings():
    from uncertainty_lr_study.config import (
        preflight,
        resolve_sensitivity_run,
        sensitivity_points,
        sensitivity_runs,
    )

    config = load_config(repo_root() / "config/smoke.yaml")
    points = sensitivity_points(config)
    assert points == {
        ("uncertainty-gradnorm", "threshold_0.1"): {"threshold": 0.1},
        ("uncertainty-gradnorm", "threshold_1"): {"threshold": 1.0},
        ("uncertainty-gradnorm", "rel-threshold_1.1"): {"threshold_mode": "rel", "threshold": 1.1},
    }
    assert len(sensitivity_runs(config)) == 3
    s = resolve_sensitivity_run(config, "uncertainty-gradnorm", "rel-threshold_1.1", 0)
    base = resolve_run(config, "mnist", "uncertainty-gradnorm", 0)
    assert s.epochs == 2 and s.scheduler_params == {"threshold_mode": "rel", "threshold": 1.1}
    assert {k: v for k, v in s.to_dict().items() if k not in ("epochs", "scheduler_params")} == {
        k: v for k, v in base.to_dict().items() if k not in ("epochs", "scheduler_params")
    }
    with pytest.raises(ConfigError, match="not a point of the sensitivity sweep"):
        resolve_sensitivity_run(config, "uncertainty-gradnorm", "threshold_0.5", 0)
    # preflight: the sweep's task must exist and every point must build
    config["sensitivity"]["sweeps"].append(
        {"scheduler": "uncertainty-variance", "param": "factor", "values": [1.5]}
    )
    with pytest.raises(ConfigError, match="sensitivity/uncertainty-variance/factor_1.5: factor"):
        preflight(config)
    config["sensitivity"]["task"] = "cifar"
    with pytest.raises(ConfigError, match="'cifar' is not a task of this config"):
        preflight(config)


def test_peer_seeds_cut_the_peers_and_controls_only():
    from uncertainty_lr_study.config import planned_runs, preflight

    config = load_config(repo_root() / "config/smoke.yaml")
    config["tasks"]["mnist"]["seeds"] = [0, 1, 2]
    config["tasks"]["mnist"]["peer_seeds"] = [0]
    runs = [(s, k) for t, s, k in planned_runs(config) if t == "mnist"]
    assert {k for s, k in runs if s == "cosine"} == {0, 1, 2}
    assert {k for s, k in runs if s in ("prodigy", "replay-variance")} == {0}
    with pytest.raises(ConfigError, match="seeds for 'prodigy': 0"):
        resolve_run(config, "mnist", "prodigy", 1)
    config["tasks"]["mnist"]["peer_seeds"] = [0, 5]
    with pytest.raises(ConfigError, match=r"peer_seeds: \[5\] are not among the task's seeds"):
        preflight(config)


def test_a_cross_seed_replay_reads_the_next_seed_of_its_source():
    from uncertainty_lr_study.config import preflight

    config = load_config(repo_root() / "config/smoke.yaml")
    config["tasks"]["mnist"]["seeds"] = [0, 3, 7]
    config["tasks"]["mnist"]["peer_seeds"] = [0, 3, 7]
    read = {k: resolve_run(config, "mnist", "replay-xseed-variance", k).source_seed for k in (0, 3, 7)}
    assert read == {0: 3, 3: 7, 7: 0}  # cyclically
    assert resolve_run(config, "mnist", "replay-variance", 3).source_seed == -1  # its own seed
    # only a cross-seed control's settings carry it (they are Snakemake params)
    assert "source_seed" not in resolve_run(config, "mnist", "cosine", 0).to_dict()
    # hand-made settings: source_seed only on a cross-seed control, and another seed
    bad = resolve_run(config, "mnist", "cosine", 0).to_dict()
    with pytest.raises(ConfigError, match="only a cross-seed control"):
        RunSettings.from_dict({**bad, "source_seed": 3})
    bad = resolve_run(config, "mnist", "replay-xseed-variance", 3).to_dict()
    with pytest.raises(ConfigError, match="source_seed: equals seed"):
        RunSettings.from_dict({**bad, "source_seed": 3})
    config["tasks"]["mnist"]["seeds"] = config["tasks"]["mnist"]["peer_seeds"] = [0]
    with pytest.raises(ConfigError, match="replays 'uncertainty-variance' from another seed"):
        preflight(config)


def test_the_longest_runs_are_scheduled_first(repo_copy, run_snakemake):
    # started last, a 15-minute MiniLM run leaves a core idle at the end of the
    # default pipeline; the training jobs carry the priority of their task's model
    import re

    from uncertainty_lr_study.config import run_priority

    config = load_config(repo_root() / "config/config.yaml")
    priorities = {task: run_priority(config, task) for task in config["tasks"]}
    assert priorities == {"mnist": 0, "imdb-lstm": 1, "imdb-minilm": 2, "squad-minilm": 2}
    proc = run_snakemake(repo_copy, "-n", "--configfile", "config/config.yaml")
    jobs = re.findall(
        r"wildcards: task=([\w-]+), scheduler=[\w-]+, seed=\d+\n(?:\s+priority: (\d+))?",
        proc.stdout,
    )
    assert len(jobs) >= 60
    assert all(int(p or 0) == priorities[task] for task, p in jobs)


def test_the_pipeline_makes_a_cross_seed_replays_source_first(repo_copy, run_snakemake):
    # the default's replay-xseed-variance on seed 0 reads seed 1's uncertainty run
    target = "results/runs/mnist/replay-xseed-variance/seed0/metrics.json"
    proc = run_snakemake(repo_copy, "-n", target, "--configfile", "config/config.yaml")
    jobs = proc.stdout.split("rule train:")[1:]
    replay = next(j for j in jobs if "replay-xseed-variance/seed0/metrics.json" in j)
    assert "results/runs/mnist/uncertainty-variance/seed1/lr_trace.csv" in replay
    assert any("output: results/runs/mnist/uncertainty-variance/seed1/metrics.json" in j for j in jobs)
