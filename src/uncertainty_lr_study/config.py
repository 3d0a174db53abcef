"""Experiment config: loading, validation against the JSON Schema, and resolution
of the settings of one run (task x scheduler x seed)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from uncertainty_lr_study.config_guard import (
    input_problems,
    non_finite_problems,
    results_dir_problems,
    short_repr,
    size_problems,
    symlink_problems,
)
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.schedulers import SCHEDULERS


MAX_CONFIG_BYTES = 1_000_000
"""Largest config file read (the study's largest is about 5 kB)."""


class ConfigError(ValueError):
    """The experiment config (or a run's settings) is invalid. The message lists
    every problem with its path in the config."""


def schema_path() -> Path:
    """Path of the config's JSON Schema (``workflow/schemas/config.schema.yaml``)."""
    return repo_root() / "workflow" / "schemas" / "config.schema.yaml"


def load_schema() -> dict[str, Any]:
    """The config schema as a dict."""
    return yaml.safe_load(schema_path().read_text())


def _path(error: jsonschema.ValidationError) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error: jsonschema.ValidationError, limit: int = 300) -> str:
    """A schema error's message: the schema's own ``x-message`` after the value
    where it has one (a pattern says what is allowed), else jsonschema's; cut to
    ``limit`` characters, since it quotes the offending value."""
    if error.context:  # oneOf / anyOf: the branch that came closest says why
        error = jsonschema.exceptions.best_match(error.context)
    hint = error.schema.get("x-message") if isinstance(error.schema, dict) else None
    message = f"{short_repr(error.instance)} {hint}" if hint else error.message
    return message if len(message) <= limit else f"{message[:limit]}... (cut)"


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate an experiment config, fill in defaults, and return it.

    First the raw-input guards of :mod:`uncertainty_lr_study.config_guard` (bounded size,
    no YTE template, every number finite); then every schema violation is collected
    (type, range, enum, unknown key, empty list); then the results folder's path.
    All are reported in one :class:`ConfigError`, one line per problem with its
    path, e.g. ``tasks/mnist/lr: -0.1 is less than or equal to the minimum of 0``;
    quoted values are cut short.

    Raises:
        ConfigError: listing all problems.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"the config must be a mapping, got {type(config).__name__}")
    problems = input_problems(config)  # bounded size first: the schema walks it all
    if not problems:
        validator = jsonschema.Draft202012Validator(load_schema())
        errors = sorted(
            validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))
        )
        problems = [f"  - {_path(err)}: {_message(err)}" for err in errors]
    if not problems:
        problems = results_dir_problems(config, repo_root())
    if not problems:
        problems = symlink_problems(config, repo_root())
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )
    config.setdefault("device", "auto")
    config.setdefault("threads_per_run", 1)
    config.setdefault("offline", True)
    config.setdefault("processes_per_run", 1)
    config.setdefault("keep_checkpoints", False)
    config.setdefault("schedule", {})
    config["schedule"].setdefault("scaling", "absolute")
    config["schedule"].setdefault("reference_epochs", 50)
    config.setdefault("scheduler_params", {})
    return config


def preflight(config: dict[str, Any]) -> None:
    """Checks of a validated config that the schema cannot make, before any job.

    - every ``scheduler_params`` entry builds its scheduler (unknown keys, values out
      of range: the registry's own errors);
    - accuracy targets lie in (0, 1];
    - ``train_subset`` does not exceed the training split;
    - local data files exist, match their checksums and pass the loaders' cheap
      content checks (:func:`uncertainty_lr_study.data.check_data_content`); a ``hub``
      source has the ``datasets`` package.

    Raises:
        ConfigError: listing every problem with its path.
    """
    import importlib.util  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from uncertainty_lr_study.data import check_data_content  # noqa: PLC0415
    from uncertainty_lr_study.schedulers import build_scheduler  # noqa: PLC0415
    from uncertainty_lr_study.tasks import (  # noqa: PLC0415
        HF_MODELS,
        MODEL_DATASETS,
        TEST_SIZES,
        TRAIN_SIZES,
        VAL_SIZES,
        target_metrics,
    )

    problems = []
    for name, params in config.get("scheduler_params", {}).items():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        try:
            build_scheduler(
                name,
                optimizer,
                epochs=1,
                steps_per_epoch=10,
                interval=SCHEDULERS[name].interval or "epoch",
                **params,
            )
        except (ValueError, TypeError, ImportError) as err:
            problems.append(f"  - scheduler_params/{name}: {err}")
    sens = config.get("sensitivity")
    if sens and sens["task"] not in config["tasks"]:
        problems.append(
            f"  - sensitivity/task: {sens['task']!r} is not a task of this config "
            f"(tasks: {', '.join(config['tasks'])})"
        )
    elif sens:  # each point's own overrides (scheduler_params are checked above)
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
                params = {**sweep.get("fixed", {}), sweep["param"]: value}
                optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
                try:
                    build_scheduler(
                        sweep["scheduler"], optimizer, epochs=1, steps_per_epoch=10, **params
                    )
                except (ValueError, TypeError) as err:
                    label = sweep_label(sweep, value)
                    problems.append(f"  - sensitivity/{sweep['scheduler']}/{label}: {err}")
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
    used = {s for task in config["tasks"] for s in task_schedulers(config, task)}
    for name in sorted(used):
        package = SCHEDULERS[name].requires
        if package and importlib.util.find_spec(package) is None:
            problems.append(
                f"  - schedulers: {name!r} needs the `{package}` package "
                '(pip install "uncertainty-lr[peers]")'
            )
    checked = set()
    for task, t in config["tasks"].items():
        target = t["target"]
        allowed_targets = target_metrics(t["dataset"])
        if target["metric"] not in allowed_targets:
            problems.append(
                f"  - tasks/{task}/target/metric: {target['metric']!r} is not measured on "
                f"{t['dataset']!r} (use one of {', '.join(allowed_targets)})"
            )
        elif target["metric"] != "val_loss" and not 0 < target["value"] <= 1:
            problems.append(
                f"  - tasks/{task}/target/value: a {target['metric']} target is a fraction "
                f"in (0, 1] (e.g. 0.85 for 85%), got {target['value']}"
            )
        allowed = MODEL_DATASETS[t["model"]]
        if t["dataset"] not in allowed:
            problems.append(
                f"  - tasks/{task}/model: {t['model']!r} cannot read dataset "
                f"{t['dataset']!r} (it reads: {', '.join(allowed)})"
            )
        if t["model"] in HF_MODELS:
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
                from uncertainty_lr_study.pretrained import PretrainedError, resolve_pretrained  # noqa: PLC0415

                try:
                    path = resolve_pretrained(t["pretrained"], offline=config["offline"])
                except PretrainedError as err:
                    problems.append(f"  - tasks/{task}/pretrained: {err}")
                else:
                    try:
                        positions = _max_positions(path)
                    except ValueError as err:
                        problems.append(f"  - tasks/{task}/pretrained: {err}")
                        positions = None
                    if positions and t.get("max_length", 0) > positions:
                        problems.append(
                            f"  - tasks/{task}/max_length: {t['max_length']} exceeds the "
                            f"{positions} positions of {t['pretrained']}"
                        )
            problems += _warmup_problems(task, t, TRAIN_SIZES[t["dataset"]])
            for key in ("vocab_size", "min_frequency", "model_params"):
                if key in t:
                    problems.append(
                        f"  - tasks/{task}/{key}: applies to model 'lstm' only (the "
                        "transformer uses its checkpoint's tokenizer and architecture); remove it"
                    )
        else:
            for key in ("warmup_steps", "warmup_ratio", "pretrained", "precision", "group_by_length"):
                if key in t:
                    problems.append(
                        f"  - tasks/{task}/{key}: applies to model 'transformer' only; remove it"
                    )
        if t["model"] in ("lenet5", "lstm"):
            problems += _model_problems(task, t)
        text_only = {
            "max_length": ("imdb", "squad"),
            "test_subset": ("imdb", "squad"),
            "truncation": ("imdb",),
            "vocab_size": ("imdb",),
            "min_frequency": ("imdb",),
            "doc_stride": ("squad",),
        }
        for key, datasets in text_only.items():
            if key in t and t["dataset"] not in datasets:
                problems.append(
                    f"  - tasks/{task}/{key}: applies to dataset(s) {', '.join(datasets)} "
                    "only; remove it"
                )
        if t["dataset"] == "squad":
            from uncertainty_lr_study.data.squad import (  # noqa: PLC0415
                DEFAULT_MAX_LENGTH,
                MIN_MAX_LENGTH,
                context_room,
            )

            length = t.get("max_length", DEFAULT_MAX_LENGTH)
            stride = t.get("doc_stride", 128)
            room = context_room(length)
            if room < 1:
                problems.append(
                    f"  - tasks/{task}/max_length: {length} tokens leave no room for the "
                    f"context after the question; use at least {MIN_MAX_LENGTH} (e.g. 256 or 384)"
                )
            elif stride >= room:
                problems.append(
                    f"  - tasks/{task}/doc_stride: {stride} leaves no new context per "
                    f"{length}-token window (questions take up to {length // 4} tokens); "
                    f"use a doc_stride below {room}, e.g. {max(room // 2, 0)}"
                )
        val_size = VAL_SIZES[t["dataset"]]
        if t.get("val_subset", 0) > val_size:
            problems.append(
                f"  - tasks/{task}/val_subset: {t['val_subset']} exceeds the {val_size:,} "
                f"validation examples of {t['dataset']}; use 0 for all"
            )
        test_size = TEST_SIZES.get(t["dataset"])
        if test_size is not None and t.get("test_subset", 0) > test_size:
            problems.append(
                f"  - tasks/{task}/test_subset: {t['test_subset']} exceeds the {test_size:,} "
                f"test examples of {t['dataset']}; use 0 for all"
            )
        size = TRAIN_SIZES.get(t["dataset"])
        if size is not None and t.get("train_subset", 0) > size:
            problems.append(
                f"  - tasks/{task}/train_subset: {t['train_subset']} exceeds the {size:,} "
                f"training examples of {t['dataset']}; use 0 for all"
            )
        source = t.get("data_source", "local")
        if source == "hub" and importlib.util.find_spec("datasets") is None:
            problems.append(
                f"  - tasks/{task}/data_source: 'hub' needs the `datasets` package "
                "(pip install datasets) and network access; use 'local' offline"
            )
        elif source == "local" and t["dataset"] not in checked:
            checked.add(t["dataset"])  # checksums, then the cheap content checks
            problems += [
                f"  - tasks/{task}/dataset: {p}" for p in check_data_content(t["dataset"])
            ]
    if problems:
        raise ConfigError(
            f"the experiment config has {len(problems)} problem(s):\n" + "\n".join(problems)
        )


MAX_MODEL_PARAMETERS = 2_000_000_000
"""Most parameters a plain-backend model may have (8 GB of float32 weights)."""


def _model_problems(task: str, t: dict[str, Any]) -> list[str]:
    """A plain-backend model (LeNet-5, LSTM) is built from the task's ``model_params``
    on PyTorch's meta device (shapes only, no memory), so an argument the model does
    not take, a value it refuses, or a size no machine holds is named before any
    data is loaded."""
    import torch  # noqa: PLC0415

    from uncertainty_lr_study.models import build_model  # noqa: PLC0415

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
    import json  # noqa: PLC0415

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
    import math  # noqa: PLC0415

    examples = t.get("train_subset", 0) or train_size
    total = t["epochs"] * math.ceil(examples / t["batch_size"])
    warmup = t.get("warmup_steps", 0) or math.ceil(t.get("warmup_ratio", 0.0) * total)
    if warmup >= total:
        return [
            f"  - tasks/{task}/warmup: {warmup} warmup steps, but the run has only {total} "
            "optimizer steps; lower warmup_steps or warmup_ratio"
        ]
    return []


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file and validate it (:func:`validate_config`).

    Read as plain YAML (``yaml.safe_load``: no Python objects, no templates); a
    file over :data:`MAX_CONFIG_BYTES` is refused unread.

    Raises:
        ConfigError: the file is missing, too large, not UTF-8, not YAML, or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} has {path.stat().st_size:,} bytes; a config is at most "
            f"{MAX_CONFIG_BYTES:,} (is it the right file?)"
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason})") from None
    except RecursionError:
        raise ConfigError(
            f"config file {path} nests lists or mappings too deeply to read; a config "
            "needs a few levels"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err)[:500]}") from None
    return validate_config(config)


def _value_problems(data: dict[str, Any]) -> list[str]:
    """Range and name checks of well-typed run settings (the config schema's, for
    settings given directly, e.g. as notebook parameters)."""
    from uncertainty_lr_study.tasks import DATASET_NAMES, HF_MODELS, TARGET_METRICS  # noqa: PLC0415

    models = ("lenet5", "lstm", *HF_MODELS)
    rules = [
        ("dataset", lambda v: v in DATASET_NAMES, f"one of {', '.join(DATASET_NAMES)}"),
        ("model", lambda v: v in models, f"one of {', '.join(models)}"),
        ("seed", lambda v: v >= 0, ">= 0"),
        ("source_seed", lambda v: v >= -1, ">= 0 (or -1: none)"),
        ("epochs", lambda v: v >= 1, ">= 1"),
        ("batch_size", lambda v: v >= 1, ">= 1"),
        ("lr", lambda v: v > 0, "> 0"),
        ("weight_decay", lambda v: v >= 0, ">= 0"),
        ("optimizer", lambda v: v in ("adam", "adamw"), "adam or adamw"),
        ("target_metric", lambda v: v in TARGET_METRICS, f"one of {', '.join(TARGET_METRICS)}"),
        ("data_source", lambda v: v in ("local", "hub"), "local or hub"),
        ("device", lambda v: v in ("auto", "cpu", "cuda"), "auto, cpu or cuda"),
        ("truncation", lambda v: v in ("head", "head_tail"), "head or head_tail"),
        ("precision", lambda v: v in ("auto", "fp32", "bf16"), "auto, fp32 or bf16"),
        ("scaling", lambda v: v in ("absolute", "fraction"), "absolute or fraction"),
        ("warmup_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
        ("num_threads", lambda v: v >= 1, ">= 1"),
        ("num_processes", lambda v: v >= 1, ">= 1"),
        ("reference_epochs", lambda v: v >= 1, ">= 1"),
        *[
            (name, lambda v: v >= 0, ">= 0")
            for name in (
                "eval_every_steps",
                "sample_every_steps",
                "train_subset",
                "test_subset",
                "val_subset",
                "max_length",
                "warmup_steps",
                "max_grad_norm",
                "doc_stride",
            )
        ],
    ]
    problems = [
        f"  - {name}: {short_repr(data[name])} is not {rule}"
        for name, ok, rule in rules
        if name in data and not ok(data[name])
    ]
    if not problems and data.get("dataset") in DATASET_NAMES and "target_metric" in data:
        from uncertainty_lr_study.tasks import target_metrics  # noqa: PLC0415

        allowed = target_metrics(data["dataset"])
        if data["target_metric"] not in allowed:
            problems.append(
                f"  - target_metric: {data['target_metric']!r} is not measured on "
                f"{data['dataset']!r} (use one of {', '.join(allowed)})"
            )
        elif data["target_metric"] != "val_loss" and not 0 < data.get("target_value", 1) <= 1:
            problems.append(
                f"  - target_value: a {data['target_metric']} target is a fraction in (0, 1], "
                f"got {data['target_value']}"
            )
    return problems


@dataclass
class RunSettings:
    """Everything one training run needs; the parameters of ``notebooks/train.ipynb``.

    Times are in epochs unless the name says steps. See ``config.schema.yaml`` for
    the meaning of each field.
    """

    task: str
    dataset: str
    model: str
    scheduler: str
    seed: int
    epochs: int
    lr: float
    batch_size: int
    target_metric: str
    target_value: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    data_source: str = "local"
    eval_every_steps: int = 0
    sample_every_steps: int = 50
    train_subset: int = 0
    scheduler_params: dict[str, Any] = field(default_factory=dict)
    scaling: str = "absolute"
    reference_epochs: int = 50
    device: str = "auto"
    num_threads: int = 1
    test_subset: int = 0
    val_subset: int = 0
    max_length: int = 0
    truncation: str = "head"
    vocab_size: int = 20_000
    min_frequency: int = 2
    model_params: dict[str, Any] = field(default_factory=dict)
    pretrained: str = ""
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 0.0
    precision: str = "fp32"
    """The Trainer backend's: ``auto`` (bfloat16 autocast where the device computes it
    natively, :func:`uncertainty_lr_study.precision.resolve_precision`), ``fp32`` or
    ``bf16``. A config's transformer tasks default to ``auto``; settings made here
    default to ``fp32``, so that a run made in code repeats on any machine."""
    offline: bool = True
    num_processes: int = 1
    doc_stride: int = 128
    group_by_length: bool = False
    source_seed: int = -1
    """A cross-seed control's (``ScheduleSpec.cross_seed``): the seed of the source
    run it reads; -1 for every other run (a same-seed control reads its own seed's)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """Build from a mapping, checking names and types of every field.

        Raises:
            ConfigError: unknown or missing fields, or a value of the wrong type
                (all listed at once).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"run settings must be a mapping, got {type(data).__name__}")
        problems = size_problems(data) or non_finite_problems(data)
        if problems:
            raise ConfigError("invalid run settings:\n" + "\n".join(problems))
        known = {f.name: f for f in fields(cls)}
        problems = [
            f"  - {str(k)[:60]}: unknown field (valid: {', '.join(known)})"
            for k in data
            if k not in known
        ]
        for name, f in known.items():
            if name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    problems.append(f"  - {name}: missing")
                continue
            value, expected = data[name], f.type
            ok = {
                "int": isinstance(value, int) and not isinstance(value, bool),
                "bool": isinstance(value, bool),
                "float": isinstance(value, (int, float)) and not isinstance(value, bool),
                "str": isinstance(value, str),
                "dict[str, float]": isinstance(value, dict)
                and all(isinstance(v, (int, float)) for v in value.values()),
                "dict[str, Any]": isinstance(value, dict),
            }[expected]
            if not ok:
                problems.append(f"  - {name}: expected {expected}, got {short_repr(value)}")
        if not problems:
            problems += _value_problems(data)
        if "scheduler" in data and data["scheduler"] not in SCHEDULERS:
            problems.append(
                f"  - scheduler: unknown {short_repr(data['scheduler'])} (valid: {', '.join(SCHEDULERS)})"
            )
        elif not problems and data.get("source_seed", -1) >= 0:
            if not SCHEDULERS[data["scheduler"]].cross_seed:
                problems.append(
                    f"  - source_seed: only a cross-seed control reads another seed's run; "
                    f"{data['scheduler']!r} does not (leave source_seed out)"
                )
            elif data["source_seed"] == data["seed"]:
                problems.append(
                    "  - source_seed: equals seed; a cross-seed replay reads another seed's "
                    "run (for the same seed's, use the replay-* control)"
                )
        if problems:
            raise ConfigError("invalid run settings:\n" + "\n".join(problems))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML-serialisable). ``source_seed`` is left out where
        unset (-1): the settings are Snakemake params, and a field that only
        cross-seed controls use must not change, and so rerun, every other run."""
        data = asdict(self)
        if data["source_seed"] < 0:
            del data["source_seed"]
        return data

    def same_run(self, other: Any) -> bool:
        """Whether ``other`` (a :meth:`to_dict` of saved settings, e.g. a checkpoint's)
        describes the same training run."""
        return isinstance(other, dict) and other == self.to_dict()


def task_schedulers(config: dict[str, Any], task: str) -> list[str]:
    """The schedulers a task runs: its own ``schedulers`` list, else the config's."""
    return list(config["tasks"][task].get("schedulers", config["schedulers"]))


def task_seeds(config: dict[str, Any], task: str, scheduler: str | None = None) -> list[int]:
    """The seeds a task runs: its own ``seeds`` list, else the config's; for a peer
    or control ``scheduler``, the task's ``peer_seeds`` where it sets them."""
    t = config["tasks"][task]
    seeds = list(t.get("seeds", config["seeds"]))
    if scheduler is not None and SCHEDULERS[scheduler].family in ("peer", "control"):
        return list(t.get("peer_seeds", seeds))
    return seeds


RUN_PRIORITY = {"transformer": 2, "lstm": 1}
"""Scheduling priority of a training run by its task's model (others 0): see
:func:`run_priority`."""


def run_priority(config: dict[str, Any], task: str) -> int:
    """Snakemake priority of a task's training runs: the longest runs first.

    On the default config's 2 cores a MiniLM run takes 11-16 minutes, an LSTM run
    about 3 and a LeNet-5 run about 2. Started last, one long run leaves a core idle
    at the end of the pipeline (the first end-to-end run of the issue-6 default
    started its last SQuAD run about 100 minutes in); started first, the short runs
    fill both cores at the end (longest-processing-time-first scheduling).

    Args:
        config: a validated config.
        task: one of its tasks.

    Returns:
        2 for the transformer tasks, 1 for the LSTM, 0 otherwise.
    """
    return RUN_PRIORITY.get(config["tasks"][task]["model"], 0)


def planned_runs(config: dict[str, Any]) -> list[tuple[str, str, int]]:
    """Every ``(task, scheduler, seed)`` of a validated config, in config order."""
    return [
        (task, scheduler, seed)
        for task in config["tasks"]
        for scheduler in task_schedulers(config, task)
        for seed in task_seeds(config, task, scheduler)
    ]


def sweep_label(sweep: dict[str, Any], value: float) -> str:
    """Folder name of one point of a sensitivity sweep: the fixed overrides' values,
    the swept parameter and its value, e.g. ``threshold_0.1``,
    ``rel-threshold_1.25``, ``increase_factor_1.2``."""
    prefix = "".join(f"{v}-" for v in sweep.get("fixed", {}).values())
    return f"{prefix}{sweep['param']}_{value:g}"


def sensitivity_points(config: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Every point of the config's sensitivity sweep: ``(scheduler, label)`` -> the
    scheduler overrides of its runs (the config's ``scheduler_params`` of that
    scheduler, the sweep's ``fixed`` ones, the swept value). Empty without a sweep."""
    sens = config.get("sensitivity")
    if not sens:
        return {}
    points = {}
    for sweep in sens["sweeps"]:
        base = {
            **config["scheduler_params"].get(sweep["scheduler"], {}),
            **sweep.get("fixed", {}),
        }
        for value in sweep["values"]:
            points[(sweep["scheduler"], sweep_label(sweep, value))] = {
                **base,
                sweep["param"]: value,
            }
    return points


def sensitivity_runs(config: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    """Every ``(task, scheduler, label, seed)`` run of the sensitivity sweep."""
    sens = config.get("sensitivity")
    if not sens:
        return []
    return [
        (sens["task"], scheduler, label, seed)
        for scheduler, label in sensitivity_points(config)
        for seed in sens["seeds"]
    ]


def resolve_sensitivity_run(
    config: dict[str, Any], scheduler: str, label: str, seed: int
) -> RunSettings:
    """Settings of one run of the sensitivity sweep: the sweep task's, with the
    point's scheduler overrides and the sweep's ``epochs``.

    Raises:
        ConfigError: no sweep, or a point or seed that is not in it.
    """
    sens = config.get("sensitivity")
    points = sensitivity_points(config)
    if (scheduler, label) not in points:
        raise ConfigError(
            f"{scheduler}/{label} is not a point of the sensitivity sweep; it has: "
            f"{', '.join(f'{s}/{lab}' for s, lab in points) or 'none'}"
        )
    if seed not in sens["seeds"]:
        raise ConfigError(f"seed {seed!r} is not among the sweep's seeds {sens['seeds']}")
    settings = _settings(config, sens["task"], scheduler, seed)
    settings.scheduler_params = dict(points[(scheduler, label)])
    if "epochs" in sens:
        settings.epochs = int(sens["epochs"])
    if "train_subset" in sens:
        settings.train_subset = int(sens["train_subset"])
    return settings


def resolve_run(config: dict[str, Any], task: str, scheduler: str, seed: int) -> RunSettings:
    """Settings of one run of a validated config.

    A task's ``schedule`` entries override the config's top-level ``schedule``.

    Raises:
        ConfigError: the task, scheduler or seed is not in the config.
    """
    if task not in config["tasks"]:
        raise ConfigError(f"unknown task {task!r}; the config has: {', '.join(config['tasks'])}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {scheduler!r}; valid: {', '.join(SCHEDULERS)}")
    if scheduler not in task_schedulers(config, task):
        raise ConfigError(
            f"scheduler {scheduler!r} is not in task {task!r}'s list: "
            f"{', '.join(task_schedulers(config, task))}"
        )
    if seed not in task_seeds(config, task, scheduler):
        raise ConfigError(
            f"seed {seed!r} is not among task {task!r}'s seeds for {scheduler!r}: "
            f"{', '.join(map(str, task_seeds(config, task, scheduler)))}"
        )
    settings = _settings(config, task, scheduler, seed)
    if SCHEDULERS[scheduler].cross_seed:
        settings = replace(settings, source_seed=cross_seed_source(config, task, scheduler, seed))
    return settings


def cross_seed_source(config: dict[str, Any], task: str, scheduler: str, seed: int) -> int:
    """The seed whose source run a cross-seed control on ``seed`` reads: the next
    seed, cyclically, of those the task runs the source schedule on (seeds 0, 1, 2:
    0 reads 1, 1 reads 2, 2 reads 0).

    Raises:
        ConfigError: ``seed`` is not among the source's seeds, or it is the only one.
    """
    source = str(SCHEDULERS[scheduler].source)
    seeds = sorted(task_seeds(config, task, source))
    if seed not in seeds or len(seeds) < 2:
        raise ConfigError(
            f"control {scheduler!r} on seed {seed} of task {task!r} replays {source!r} "
            f"from another seed, but the task runs {source!r} on seeds {seeds}: it needs "
            "this seed and at least one other (give the task two seeds or more, or drop "
            "the control)"
        )
    return seeds[(seeds.index(seed) + 1) % len(seeds)]


def _settings(config: dict[str, Any], task: str, scheduler: str, seed: int) -> RunSettings:
    """The run settings of a task, scheduler and seed (names already checked)."""
    from uncertainty_lr_study.tasks import HF_MODELS  # noqa: PLC0415

    t = config["tasks"][task]
    schedule = {**config["schedule"], **t.get("schedule", {})}
    return RunSettings(
        task=task,
        dataset=t["dataset"],
        model=t["model"],
        scheduler=scheduler,
        seed=int(seed),
        epochs=int(t["epochs"]),  # the schema admits 3.0 as an integer
        lr=float(t["lr"]),
        batch_size=int(t["batch_size"]),
        target_metric=t["target"]["metric"],
        target_value=float(t["target"]["value"]),
        optimizer=t.get("optimizer", "adam"),
        weight_decay=float(t.get("weight_decay", 0.0)),
        data_source=t.get("data_source", "local"),
        eval_every_steps=int(t.get("eval_every_steps", 0)),
        sample_every_steps=int(t.get("sample_every_steps", 50)),
        train_subset=int(t.get("train_subset", 0)),
        scheduler_params=dict(config["scheduler_params"].get(scheduler, {})),
        scaling=schedule["scaling"],
        reference_epochs=int(schedule["reference_epochs"]),
        device=config["device"],
        num_threads=int(config["threads_per_run"]),
        test_subset=int(t.get("test_subset", 0)),
        val_subset=int(t.get("val_subset", 0)),
        max_length=int(t.get("max_length", 0)),
        truncation=t.get("truncation", "head"),
        vocab_size=int(t.get("vocab_size", 20_000)),
        min_frequency=int(t.get("min_frequency", 2)),
        model_params=dict(t.get("model_params", {})),
        pretrained=t.get("pretrained", ""),
        warmup_steps=int(t.get("warmup_steps", 0)),
        warmup_ratio=float(t.get("warmup_ratio", 0.0)),
        max_grad_norm=float(t.get("max_grad_norm", 0.0)),
        # transformer tasks: bfloat16 where native (uncertainty_lr_study.precision); others fp32
        precision=t.get("precision", "auto" if t["model"] in HF_MODELS else "fp32"),
        offline=bool(config["offline"]),
        # data parallel in the Trainer backend only: elsewhere it changes nothing (and
        # settings are Snakemake params: a change would rerun the runs)
        num_processes=int(config["processes_per_run"]) if t["model"] in HF_MODELS else 1,
        doc_stride=int(t.get("doc_stride", 128)),
        group_by_length=bool(t.get("group_by_length", False)),
    )
