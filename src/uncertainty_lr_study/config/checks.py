"""Checks of a schema-valid config that the schema cannot make, run before any job
(:func:`preflight`): each a small named function returning its problems, one line
each, with its path in the config."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import torch

from uncertainty_lr_study.config.errors import ConfigError
from uncertainty_lr_study.config.plan import sweep_label, task_schedulers, task_seeds
from uncertainty_lr_study.config.settings import cross_seed_source
from uncertainty_lr_study.config_guard import short_repr
from uncertainty_lr_study.data import check_data_content
from uncertainty_lr_study.data.squad_windows import DEFAULT_MAX_LENGTH, MIN_MAX_LENGTH, context_room
from uncertainty_lr_study.models import build_model
from uncertainty_lr_study.pretrained import PretrainedError, resolve_pretrained
from uncertainty_lr_study.registry import SCHEDULERS, build_scheduler
from uncertainty_lr_study.tasks import DATA_SETS, HF_MODELS, MODEL_KINDS, target_metrics

TEXT_ONLY = {
    "max_length": ("imdb", "squad"),
    "test_subset": ("imdb", "squad"),
    "truncation": ("imdb",),
    "vocab_size": ("imdb",),
    "min_frequency": ("imdb",),
    "doc_stride": ("squad",),
}
"""Task keys that apply to some data sets only."""
LSTM_ONLY = ("vocab_size", "min_frequency", "model_params")
TRANSFORMER_ONLY = ("warmup_steps", "warmup_ratio", "pretrained", "precision", "group_by_length")


def preflight(config: dict[str, Any]) -> None:
    """Checks of a validated config that the schema cannot make, before any job.

    - every ``scheduler_params`` entry, and every point of the sensitivity sweep,
      builds its scheduler (unknown keys, values out of range: the registry's own
      errors; :func:`scheduler_params_problems`, :func:`sensitivity_problems`);
    - peers and controls are paired with the schedules they need
      (:func:`pairing_problems`), whose packages are installed
      (:func:`package_problems`);
    - per task (:func:`task_problems`): targets the data set measures, in (0, 1] for
      fractions; a model that reads the data set, built from its ``model_params``;
      a transformer's checkpoint, sequence length and warmup; keys that apply to
      the task; SQuAD windows with room for context; subsets within the splits;
      local data files that match their checksums and pass the loaders' cheap
      content checks (:func:`uncertainty_lr_study.data.check_data_content`), or the
      ``datasets`` package for a ``hub`` source.

    Raises:
        ConfigError: listing every problem with its path.
    """
    problems = [
        *scheduler_params_problems(config),
        *sensitivity_problems(config),
        *pairing_problems(config),
        *package_problems(config),
    ]
    checked: set[str] = set()
    for task, t in config["tasks"].items():
        problems += task_problems(config, task, t, checked)
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )


def _builds(name: str, **kwargs: Any) -> str | None:
    """The registry's error building ``name`` for a 10-step run, or None."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    try:
        build_scheduler(name, optimizer, epochs=1, steps_per_epoch=10, **kwargs)
    except (ValueError, TypeError, ImportError) as err:
        return str(err)
    return None


def scheduler_params_problems(config: dict[str, Any]) -> list[str]:
    """Every ``scheduler_params`` entry builds its scheduler."""
    problems = []
    for name, params in config.get("scheduler_params", {}).items():
        err = _builds(name, interval=SCHEDULERS[name].interval or "epoch", **params)
        if err:
            problems.append(f"  - scheduler_params/{name}: {err}")
    return problems


def sensitivity_problems(config: dict[str, Any]) -> list[str]:
    """The sweep's task exists, its points name distinct run folders, and each point
    builds its scheduler."""
    sens = config.get("sensitivity")
    if not sens:
        return []
    if sens["task"] not in config["tasks"]:
        return [
            f"  - sensitivity/task: {sens['task']!r} is not a task of this config "
            f"(tasks: {', '.join(config['tasks'])})"
        ]
    problems = []
    labels: dict[tuple[str, str], float] = {}
    for sweep in sens["sweeps"]:
        for value in sweep["values"]:
            key = (sweep["scheduler"], sweep_label(sweep, value))
            if key in labels and labels[key] != value:
                problems.append(
                    f"  - sensitivity/{sweep['scheduler']}/{key[1]}: the values "
                    f"{labels[key]!r} and {value!r} name the same run folder; give "
                    "values that differ in their first 6 significant digits"
                )
            labels.setdefault(key, value)
    for sweep in sens["sweeps"]:
        for value in sweep["values"]:
            err = _builds(sweep["scheduler"], **{**sweep.get("fixed", {}), sweep["param"]: value})
            if err:
                label = sweep_label(sweep, value)
                problems.append(f"  - sensitivity/{sweep['scheduler']}/{label}: {err}")
    return problems


def pairing_problems(config: dict[str, Any]) -> list[str]:
    """Peers and controls run on seeds of the task's own; a control's source runs in
    the same task, on another seed for a cross-seed control."""
    problems = []
    for task in config["tasks"]:
        names = task_schedulers(config, task)
        extra = sorted(set(task_seeds(config, task, "warmup-linear")) - set(task_seeds(config, task)))
        if extra:
            problems.append(
                f"  - tasks/{task}/peer_seeds: {extra} are not among the task's seeds; peers "
                "and controls are paired by seed with the study's schedules"
            )
        for name in names:
            source = SCHEDULERS[name].source
            if source is not None and source not in names:
                problems.append(
                    f"  - tasks/{task}/schedulers: control {name!r} replays or shuffles the "
                    f"runs of {source!r}; add {source!r} to the task's schedulers"
                )
            elif SCHEDULERS[name].cross_seed:
                try:
                    for seed in task_seeds(config, task, name):
                        cross_seed_source(config, task, name, seed)
                except ConfigError as err:
                    problems.append(f"  - tasks/{task}/seeds: {err}")
    return problems


def package_problems(config: dict[str, Any]) -> list[str]:
    """Every schedule the config runs has the package it needs."""
    used = {s for task in config["tasks"] for s in task_schedulers(config, task)}
    return [
        f"  - schedulers: {name!r} needs the `{SCHEDULERS[name].requires}` package "
        '(pip install "uncertainty-lr[peers]")'
        for name in sorted(used)
        if SCHEDULERS[name].requires and importlib.util.find_spec(SCHEDULERS[name].requires) is None
    ]


def task_problems(config: dict[str, Any], task: str, t: dict[str, Any], checked: set[str]) -> list[str]:
    """The checks of one task (:func:`preflight`'s list); ``checked``: the data sets
    whose files were already checked (each once)."""
    problems = target_problems(task, t)
    allowed = MODEL_KINDS[t["model"]].data_sets
    if t["dataset"] not in allowed:
        problems.append(
            f"  - tasks/{task}/model: {t['model']!r} cannot read dataset "
            f"{t['dataset']!r} (it reads: {', '.join(allowed)})"
        )
    if t["model"] in HF_MODELS:
        problems += transformer_problems(config, task, t)
    else:
        problems += [
            f"  - tasks/{task}/{key}: applies to model 'transformer' only; remove it"
            for key in TRANSFORMER_ONLY if key in t
        ]
    if t["model"] in ("lenet5", "lstm"):
        problems += _model_problems(task, t)
    problems += [
        f"  - tasks/{task}/{key}: applies to dataset(s) {', '.join(datasets)} only; remove it"
        for key, datasets in TEXT_ONLY.items()
        if key in t and t["dataset"] not in datasets
    ]
    if t["dataset"] == "squad":
        problems += squad_window_problems(task, t)
    return problems + subset_problems(task, t) + data_problems(task, t, checked)


def target_problems(task: str, t: dict[str, Any]) -> list[str]:
    """The target metric is measured on the data set; a fraction lies in (0, 1]."""
    target = t["target"]
    allowed = target_metrics(t["dataset"])
    if target["metric"] not in allowed:
        return [
            f"  - tasks/{task}/target/metric: {target['metric']!r} is not measured on "
            f"{t['dataset']!r} (use one of {', '.join(allowed)})"
        ]
    if target["metric"] != "val_loss" and not 0 < target["value"] <= 1:
        return [
            f"  - tasks/{task}/target/value: a {target['metric']} target is a fraction "
            f"in (0, 1] (e.g. 0.85 for 85%), got {target['value']}"
        ]
    return []


def transformer_problems(config: dict[str, Any], task: str, t: dict[str, Any]) -> list[str]:
    """A transformer task: a batch split evenly over the processes, a checkpoint
    that resolves offline with room for ``max_length``, a warmup shorter than the
    run, no LSTM keys."""
    problems = []
    if t["batch_size"] % config["processes_per_run"]:
        problems.append(
            f"  - tasks/{task}/batch_size: {t['batch_size']} is not divisible by "
            f"processes_per_run {config['processes_per_run']} (the global batch is "
            "split evenly across the processes)"
        )
    if not t.get("pretrained"):
        problems.append(
            f"  - tasks/{task}/pretrained: model 'transformer' needs a pretrained "
            "checkpoint (a hub id such as 'bert-base-uncased' or a local folder)"
        )
    elif importlib.util.find_spec("transformers") is None:
        problems.append(
            f"  - tasks/{task}/model: 'transformer' needs the `transformers` package "
            '(pip install "uncertainty-lr[hf]")'
        )
    else:
        problems += _checkpoint_problems(config, task, t)
    problems += _warmup_problems(task, t, DATA_SETS[t["dataset"]].train_size)
    problems += [
        f"  - tasks/{task}/{key}: applies to model 'lstm' only (the transformer uses its "
        "checkpoint's tokenizer and architecture); remove it"
        for key in LSTM_ONLY if key in t
    ]
    return problems


def _checkpoint_problems(config: dict[str, Any], task: str, t: dict[str, Any]) -> list[str]:
    """The checkpoint resolves (offline: a local folder or package) and has at least
    ``max_length`` positions."""
    try:
        path = resolve_pretrained(t["pretrained"], offline=config["offline"])
    except PretrainedError as err:
        return [f"  - tasks/{task}/pretrained: {err}"]
    try:
        positions = _max_positions(path)
    except ValueError as err:
        return [f"  - tasks/{task}/pretrained: {err}"]
    if positions and t.get("max_length", 0) > positions:
        return [
            f"  - tasks/{task}/max_length: {t['max_length']} exceeds the "
            f"{positions} positions of {t['pretrained']}"
        ]
    return []


def squad_window_problems(task: str, t: dict[str, Any]) -> list[str]:
    """A SQuAD window leaves room for context after the question, and the stride
    adds new context per window."""
    length = t.get("max_length", DEFAULT_MAX_LENGTH)
    stride = t.get("doc_stride", 128)
    room = context_room(length)
    if room < 1:
        return [
            f"  - tasks/{task}/max_length: {length} tokens leave no room for the "
            f"context after the question; use at least {MIN_MAX_LENGTH} (e.g. 256 or 384)"
        ]
    if stride >= room:
        return [
            f"  - tasks/{task}/doc_stride: {stride} leaves no new context per "
            f"{length}-token window (questions take up to {length // 4} tokens); "
            f"use a doc_stride below {room}, e.g. {max(room // 2, 0)}"
        ]
    return []


def subset_problems(task: str, t: dict[str, Any]) -> list[str]:
    """Each subset is at most its split."""
    problems = []
    data = DATA_SETS[t["dataset"]]
    for key, size, split in (
        ("val_subset", data.val_size, "validation"),
        ("test_subset", data.test_size, "test"),
        ("train_subset", data.train_size, "training"),
    ):
        if t.get(key, 0) > size:
            problems.append(
                f"  - tasks/{task}/{key}: {t[key]} exceeds the {size:,} {split} examples "
                f"of {t['dataset']}; use 0 for all"
            )
    return problems


def data_problems(task: str, t: dict[str, Any], checked: set[str]) -> list[str]:
    """Local files: checksums and the loaders' content checks (once per data set);
    a hub source: the ``datasets`` package."""
    source = t.get("data_source", "local")
    if source == "hub" and importlib.util.find_spec("datasets") is None:
        return [
            f"  - tasks/{task}/data_source: 'hub' needs the `datasets` package "
            "(pip install datasets) and network access; use 'local' offline"
        ]
    if source != "local" or t["dataset"] in checked:
        return []
    checked.add(t["dataset"])
    return [f"  - tasks/{task}/dataset: {p}" for p in check_data_content(t["dataset"])]


MAX_MODEL_PARAMETERS = 2_000_000_000
"""Most parameters a plain-backend model may have (8 GB of float32 weights)."""

def _model_problems(task: str, t: dict[str, Any]) -> list[str]:
    """A plain-backend model (LeNet-5, LSTM) is built from the task's ``model_params``
    on PyTorch's meta device (shapes only, no memory), so an argument the model does
    not take, a value it refuses, or a size no machine holds is named before any
    data is loaded."""
    params = t.get("model_params", {})
    reserved = sorted({"vocab_size", "num_classes", "pad_id"} & set(params))
    if reserved:
        return [
            f"  - tasks/{task}/model_params: {reserved} come from the data (the "
            "learnt vocabulary, the classes); set vocab_size at the task level"
        ]
    extra = {"vocab_size": t.get("vocab_size", 20_000)} if t["model"] == "lstm" else {}
    try:
        with torch.device("meta"):
            model = build_model(t["model"], 2, **extra, **params)
    except (ValueError, TypeError) as err:  # the model's own check of its arguments
        return [f"  - tasks/{task}/model_params: {str(err)[:200]}"]
    except (RuntimeError, OverflowError) as err:  # sizes beyond what torch can index
        return [
            f"  - tasks/{task}/model_params: the {t['model']} cannot be built with "
            f"{short_repr(params)} ({str(err)[:200]}); use smaller sizes"
        ]
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_MODEL_PARAMETERS:
        return [
            f"  - tasks/{task}/model_params: the {t['model']} would have {size:,} "
            f"parameters (at most {MAX_MODEL_PARAMETERS:,}); use smaller sizes"
        ]
    return []

def _max_positions(path: str) -> int | None:
    """``max_position_embeddings`` of a local checkpoint folder (None if unknown)."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return None
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(
            f"{config_file} cannot be read as JSON ({type(err).__name__}); restore the "
            "checkpoint (make prepare) or point pretrained at another folder"
        ) from None
    value = data.get("max_position_embeddings") if isinstance(data, dict) else None
    return int(value) if isinstance(value, int) else None

def _warmup_problems(task: str, t: dict[str, Any], train_size: int) -> list[str]:
    """The warmup must end before the run does (in optimizer steps)."""
    examples = t.get("train_subset", 0) or train_size
    total = t["epochs"] * math.ceil(examples / t["batch_size"])
    warmup = t.get("warmup_steps", 0) or math.ceil(t.get("warmup_ratio", 0.0) * total)
    if warmup >= total:
        return [
            f"  - tasks/{task}/warmup: {warmup} warmup steps, but the run has only {total} "
            "optimizer steps; lower warmup_steps or warmup_ratio"
        ]
    return []
