"""The settings of one run (:class:`RunSettings`, the parameters of the train
notebook; their defaults are the one place defaults of a run live) and how a config
resolves them for a task, schedule and seed."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from uncertainty_lr_study.config.errors import ConfigError
from uncertainty_lr_study.config.plan import sensitivity_points, task_schedulers, task_seeds
from uncertainty_lr_study.config_guard import non_finite_problems, short_repr, size_problems
from uncertainty_lr_study.registry import SCHEDULERS
from uncertainty_lr_study.tasks import DATA_SETS, HF_MODELS, MODEL_KINDS, TARGET_METRICS, target_metrics


def _value_problems(data: dict[str, Any]) -> list[str]:
    """Range and name checks of well-typed run settings (the config schema's, for
    settings given directly, e.g. as notebook parameters)."""
    models = tuple(MODEL_KINDS)
    rules = [
        ("dataset", lambda v: v in DATA_SETS, f"one of {', '.join(DATA_SETS)}"),
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
    if not problems and data.get("dataset") in DATA_SETS and "target_metric" in data:
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


TASK_FIELDS = (
    "optimizer",
    "weight_decay",
    "data_source",
    "eval_every_steps",
    "sample_every_steps",
    "train_subset",
    "test_subset",
    "val_subset",
    "max_length",
    "truncation",
    "vocab_size",
    "min_frequency",
    "model_params",
    "pretrained",
    "warmup_steps",
    "warmup_ratio",
    "max_grad_norm",
    "precision",
    "doc_stride",
    "group_by_length",
)
"""The run settings a config's task may set under the same name; where it does not,
the :class:`RunSettings` default holds (the one place a run's defaults are written),
except ``precision``: ``auto`` for the transformer tasks of a config."""

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _settings(config: dict[str, Any], task: str, scheduler: str, seed: int) -> RunSettings:
    """The run settings of a task, scheduler and seed (names already checked)."""
    t = config["tasks"][task]
    schedule = {**config["schedule"], **t.get("schedule", {})}
    types = {f.name: f.type for f in fields(RunSettings)}
    # the schema admits 3.0 as an integer: every value takes its field's type
    given = {k: _TYPES.get(types[k], dict)(t[k]) for k in TASK_FIELDS if k in t}
    if t["model"] in HF_MODELS:  # bfloat16 where native (uncertainty_lr_study.precision)
        given.setdefault("precision", "auto")
    return RunSettings(
        task=task,
        dataset=t["dataset"],
        model=t["model"],
        scheduler=scheduler,
        seed=int(seed),
        epochs=int(t["epochs"]),
        lr=float(t["lr"]),
        batch_size=int(t["batch_size"]),
        target_metric=t["target"]["metric"],
        target_value=float(t["target"]["value"]),
        scheduler_params=dict(config["scheduler_params"].get(scheduler, {})),
        scaling=schedule["scaling"],
        reference_epochs=int(schedule["reference_epochs"]),
        device=config["device"],
        num_threads=int(config["threads_per_run"]),
        offline=bool(config["offline"]),
        # data parallel in the Trainer backend only: elsewhere it changes nothing (and
        # settings are Snakemake params: a change would rerun the runs)
        num_processes=int(config["processes_per_run"]) if t["model"] in HF_MODELS else 1,
        **given,
    )
