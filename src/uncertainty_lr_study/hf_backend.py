"""The Hugging Face ``Trainer`` backend: BERT-family models on IMDB (sequence
classification) and SQuAD v1.1 (extractive question answering).

Read it top to bottom: :func:`train_transformer` resolves the pretrained checkpoint
(offline first, :mod:`uncertainty_lr_study.pretrained`), builds the task's data with the
checkpoint's own tokenizer (:func:`classification_task`: reviews with head or
head+tail truncation, :func:`encode_reviews`; :func:`question_answering_task`:
question + context windows, :func:`uncertainty_lr_study.data.squad.tokenize_windows`, scored
by exact match and F1 after post-processing),
builds ``AdamW`` and the run's schedule for the run's length in optimizer steps
(with a linear warmup, then the registry's schedule: the design's "time units" rule), and
trains with ``Trainer(optimizers=(optimizer, scheduler))``, so that no other schedule
runs beside it. :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback` measures
the gradient norm (before clipping) and the predictive variance of every optimizer
step and feeds an uncertainty schedule, which decides once per evaluation interval.
The run writes the same ``metrics.json`` and ``history.csv`` as the plain-PyTorch
backend (:func:`uncertainty_lr_study.training.summarise_run`).

Needs the ``hf`` extra (``transformers``, ``accelerate``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from uncertainty_lr_study.config import ConfigError, RunSettings
from uncertainty_lr_study.controls import TraceRecorder, load_control_input
from uncertainty_lr_study.data import squad
from uncertainty_lr_study.data.imdb import NUM_CLASSES, load_imdb_reviews, truncate_ids
from uncertainty_lr_study.distributed import is_main_process
from uncertainty_lr_study.io import atomic_write_csv, atomic_write_json
from uncertainty_lr_study.metrics import classification_metrics
from uncertainty_lr_study.precision import choose_precision
from uncertainty_lr_study.pretrained import resolve_pretrained
from uncertainty_lr import uncertainty_part
from uncertainty_lr_study.registry import SCHEDULERS, build_scheduler, effective_lrs
from uncertainty_lr_study.tasks import PRIMARY_METRIC, VAL_METRICS
from uncertainty_lr_study.training import (
    ProgressLog,
    build_optimizer,
    finite_evaluation,
    finite_lrs,
    keep_checkpoints_requested,
    resolve_device,
    seed_everything,
    summarise_run,
    use_deterministic_kernels,
)

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 64
HISTORY_COLUMNS = (
    "kind",
    "step",
    "epoch",
    "seconds",
    "lr",
    "train_loss",
    "grad_norm",
    "predictive_variance",
    "val_loss",
    "val_accuracy",
    "val_exact_match",
    "val_f1",
)
"""Column order of ``history.csv``, as the plain backend writes it."""
HISTORY_FILE = "run_history.json"
"""Written into each Trainer checkpoint folder: the history rows so far, so that a
resumed run's ``history.csv`` and time-to-target cover the whole run."""


def encode_reviews(
    tokenizer: Any,
    texts: Sequence[str],
    labels: Sequence[int],
    max_length: int,
    truncation: str = "head",
) -> list[dict[str, Any]]:
    """Model inputs of a sequence classifier: ``[CLS] review [SEP]``, at most
    ``max_length`` tokens, unpadded (the collator pads each batch).

    The review's tokens are cut with :func:`uncertainty_lr_study.data.imdb.truncate_ids`
    (``"head"``: the first tokens; ``"head_tail"``: the first quarter and the last
    three quarters, Sun et al. 2019) before the special tokens are added.

    Args:
        tokenizer: a fast ``transformers`` tokenizer.
        texts: ``N`` reviews.
        labels: ``N`` class indices.
        max_length: tokens per input, special tokens included.
        truncation: ``"head"`` or ``"head_tail"``.

    Returns:
        ``N`` dicts with ``input_ids``, ``attention_mask`` (lists of ints) and
        ``labels`` (int).

    Raises:
        ValueError: ``max_length`` leaves no room for the review's tokens.
    """
    prefix, suffix = special_tokens_around(tokenizer)
    room = max_length - len(prefix) - len(suffix)
    if room < 1:
        raise ValueError(f"max_length {max_length} leaves no room besides the special tokens")
    ids = tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)
    out = []
    for seq, label in zip(ids["input_ids"], labels):
        full = prefix + truncate_ids(seq, room, truncation) + suffix
        out.append({"input_ids": full, "attention_mask": [1] * len(full), "labels": int(label)})
    return out


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special-token ids a tokenizer puts before and after one sequence (BERT:
    ``[CLS]`` and ``[SEP]``), read off its own encoding of a one-word text.

    Raises:
        ValueError: the tokenizer does not keep the word's ids in one piece.
    """
    plain = tokenizer("movie", add_special_tokens=False)["input_ids"]
    full = tokenizer("movie")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    raise ValueError("cannot locate the text between the tokenizer's special tokens")


def _row_from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A history row read back from JSON: None (how
    :func:`~uncertainty_lr_study.io.atomic_write_json` writes NaN) back to NaN."""
    return {k: (math.nan if v is None else v) for k, v in row.items()}


def _make_recorder(
    signals: Any,
    steps_per_epoch: int,
    rows: list[dict],
    seconds_before: float,
    metric_names: Sequence[str] = ("accuracy",),
    trace: TraceRecorder | None = None,
    scheduler: Any = None,
    progress_log: ProgressLog | None = None,
):
    """A ``TrainerCallback`` that writes the run's history rows (see module docs),
    given a ``trace``, records the schedule's learning rates after every optimizer
    step (:class:`~uncertainty_lr_study.controls.TraceRecorder`), and given a
    ``progress_log``, logs the run's progress (:class:`~uncertainty_lr_study.training.ProgressLog`)."""
    from transformers import TrainerCallback  # noqa: PLC0415

    class RunRecorder(TrainerCallback):
        """History rows of a Trainer run, in the plain backend's format; stops the
        run on a non-finite training loss, gradient norm or learning rate, or a
        non-finite validation loss or metric (status ``diverged``)."""

        def __init__(self) -> None:
            self.t0 = time.perf_counter()
            self.window: list[dict[str, float]] = []
            self.diverged_epoch: float | None = None
            self.lr_used: dict[str, float] = {}

        def seconds(self) -> float:
            return seconds_before + time.perf_counter() - self.t0

        def _lr(self, optimizer: Any) -> dict[str, float]:
            return {"lr": effective_lrs(optimizer)[0]} if optimizer else {}

        def _diverge(self, state: Any, control: Any, what: str) -> None:
            if self.diverged_epoch is None:
                self.diverged_epoch = state.global_step / steps_per_epoch
                log.warning(
                    "non-finite %s at step %d: run stopped as diverged", what, state.global_step
                )
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False

        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            self.lr_used = self._lr(optimizer)  # the Trainer steps the schedule after

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            if trace is not None and optimizer is not None:
                trace.record(optimizer, scheduler)  # after the Trainer's scheduler.step()
            if progress_log is not None:
                progress_log.update(state.global_step)
            if not math.isfinite(signals.last_values.get("grad_norm", 0.0)):
                self._diverge(state, control, "gradient norm")
            elif optimizer is not None and not finite_lrs(optimizer):
                self._diverge(state, control, "learning rate")

        def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            entry = state.log_history[-1] if state.log_history else {}
            row = {
                "train_loss": float(logs["loss"]),
                "grad_norm": float(entry.get("signal/grad_norm", math.nan)),
                "predictive_variance": float(entry.get("signal/predictive_variance", math.nan)),
            }
            if not math.isfinite(row["train_loss"]):
                self._diverge(state, control, "training loss")
            self.window.append(row)
            rows.append(
                {
                    "kind": "step",
                    "step": state.global_step,
                    "epoch": state.global_step / steps_per_epoch,
                    "seconds": self.seconds(),
                    **self.lr_used,  # the rate this step trained at
                    **row,
                }
            )

        def on_evaluate(self, args, state, control, metrics=None, optimizer=None, **kwargs):
            means = (
                pd.DataFrame(self.window).mean().to_dict()
                if self.window
                else dict.fromkeys(("train_loss", "grad_norm", "predictive_variance"), math.nan)
            )
            self.window = []
            row = {
                "kind": "eval",
                "step": state.global_step,
                "epoch": state.global_step / steps_per_epoch,
                "seconds": self.seconds(),
                **self._lr(optimizer),
                **means,
                "val_loss": float(metrics["eval_loss"]),
                **{f"val_{m}": float(metrics[f"eval_{m}"]) for m in metric_names},
            }
            rows.append(row)
            if progress_log is not None:
                progress_log.update(state.global_step, row)
            if not finite_evaluation(row):
                self._diverge(state, control, "validation loss or metric")

        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir() and is_main_process():
                atomic_write_json(
                    folder / HISTORY_FILE,
                    {  # NaN written as null, read back by _row_from_json
                        "rows": rows,
                        "seconds": self.seconds(),
                        "trace": None if trace is None else trace.state(),
                    },
                )

    return RunRecorder()


@dataclass
class TransformerTask:
    """What :func:`train_transformer` needs to know about a task's data and model.

    Attributes:
        model_class: the ``transformers`` auto class of the model (its
            ``from_pretrained`` builds the task head).
        model_kwargs: extra ``from_pretrained`` arguments (e.g. ``num_labels``).
        train_set, val_set, test_set: model inputs, one dict per example (IMDB: per
            review; SQuAD: per window), unpadded, with labels.
        compute_metrics: ``Trainer``'s ``compute_metrics`` for the validation set.
        test_metrics: ``PredictionOutput`` of the test set -> the ``test`` dict of
            ``metrics.json``.
        variance_fn: the predictive-variance signal of a training batch (see
            :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback`).
        info: facts for ``metrics.json`` (e.g. windows and questions counted).
    """

    model_class: Any
    model_kwargs: dict[str, Any]
    train_set: list[dict[str, Any]]
    val_set: list[dict[str, Any]]
    test_set: list[dict[str, Any]]
    compute_metrics: Callable[[Any], dict[str, float]]
    test_metrics: Callable[[Any], dict[str, Any]]
    variance_fn: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)


def classification_task(s: RunSettings, tokenizer: Any, max_length: int) -> TransformerTask:
    """IMDB sentiment classification: reviews -> ``[CLS] review [SEP]`` inputs
    (:func:`encode_reviews`), scored by accuracy, precision, recall and F1.

    Raises:
        DataFileError: missing or corrupt data files.
    """
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415

    from uncertainty_lr.integrations.hf import classification_variance  # noqa: PLC0415

    reviews = load_imdb_reviews(
        source=s.data_source, train_subset=s.train_subset, test_subset=s.test_subset
    )
    n_val = s.val_subset or len(reviews.val_label)

    def encode(texts: Sequence[str], labels: Sequence[int]) -> list[dict[str, Any]]:
        return encode_reviews(tokenizer, texts, labels, max_length, s.truncation)

    def test_metrics(prediction: Any) -> dict[str, Any]:
        logits = torch.from_numpy(np.asarray(prediction.predictions, dtype=np.float32))
        labels = torch.from_numpy(np.asarray(prediction.label_ids, dtype=np.int64))
        return {
            "loss": float(F.cross_entropy(logits, labels)),
            **classification_metrics(logits, labels, NUM_CLASSES),
        }

    return TransformerTask(
        model_class=AutoModelForSequenceClassification,
        model_kwargs={"num_labels": NUM_CLASSES},
        train_set=encode(reviews.train_text, reviews.train_label),
        val_set=encode(reviews.val_text[:n_val], reviews.val_label[:n_val]),
        test_set=encode(reviews.test_text, reviews.test_label),
        compute_metrics=lambda p: {
            "accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())
        },
        test_metrics=test_metrics,
        variance_fn=classification_variance,
    )


def question_answering_task(s: RunSettings, tokenizer: Any, max_length: int) -> TransformerTask:
    """SQuAD v1.1: question + context windows (:func:`~uncertainty_lr_study.data.squad.tokenize_windows`,
    ``max_length`` tokens, ``doc_stride`` overlap), scored by exact match and F1 after
    post-processing (n-best 20, answers of at most 30 tokens; official v1.1 rules).

    The training set is every window of the training questions (windows without the
    answer labelled with ``[CLS]``); validation and test windows are labelled the
    same way, so that the Trainer also reports a loss on them.

    Raises:
        DataFileError: missing, corrupt or malformed data files.
    """
    from transformers import AutoModelForQuestionAnswering  # noqa: PLC0415

    from uncertainty_lr.integrations.hf import span_variance_fn  # noqa: PLC0415

    splits = squad.load_squad(
        source=s.data_source,
        train_subset=s.train_subset,
        val_subset=s.val_subset,
        test_subset=s.test_subset,
    )

    def windows(examples: list[squad.QAExample]) -> squad.Windows:
        return squad.tokenize_windows(tokenizer, examples, max_length, s.doc_stride)

    train, val, test = windows(splits.train), windows(splits.val), windows(splits.test)

    def scores(examples: list[squad.QAExample], w: squad.Windows, p: Any) -> dict:
        _check_window_order(w, p.label_ids)
        start_logits, end_logits = p.predictions[:2]
        answers = squad.postprocess_predictions(examples, w, start_logits, end_logits)
        return squad.squad_scores(answers, examples, strict=True)  # every question answered

    def test_metrics(prediction: Any) -> dict[str, Any]:
        loss = prediction.metrics.get("test_loss", math.nan)
        return {"loss": float(loss), **scores(splits.test, test, prediction)}

    return TransformerTask(
        model_class=AutoModelForQuestionAnswering,
        model_kwargs={},
        train_set=train.features,
        val_set=val.features,
        test_set=test.features,
        compute_metrics=lambda p: scores(splits.val, val, p),
        test_metrics=test_metrics,
        variance_fn=span_variance_fn(tokenizer.sep_token_id),
        info={
            "train_questions": len(splits.train),
            "val_questions": len(splits.val),
            "test_questions": len(splits.test),
            "train_windows_with_answer": int(sum(train.has_answer)),
            "doc_stride": s.doc_stride,
            "n_best": squad.N_BEST,
            "max_answer_length": squad.MAX_ANSWER_LENGTH,
        },
    )


def _check_window_order(windows: squad.Windows, label_ids: Any) -> None:
    """Refuse predictions that are not in window order (their labels must be the
    windows' own, in order): post-processing maps row ``i`` to window ``i``.

    Raises:
        RuntimeError: the evaluation loop reordered or dropped windows.
    """
    expected = np.array([[f["start_positions"], f["end_positions"]] for f in windows.features])
    got = np.stack([np.asarray(label_ids[0]), np.asarray(label_ids[1])], axis=1)
    if got.shape != expected.shape or not np.array_equal(got, expected):
        raise RuntimeError(
            f"the evaluation returned {len(got)} predictions not in the order of the "
            f"{len(expected)} windows; evaluation must use a sequential sampler"
        )


def _make_trainer_class() -> type:
    """``Trainer`` whose evaluation always reads the data in order.

    transformers 5.x evaluates with the length-grouped sampler too when
    ``train_sampling_strategy="group_by_length"``; question-answering
    post-processing needs the windows in order (:func:`_check_window_order`).
    """
    from torch.utils.data import SequentialSampler  # noqa: PLC0415
    from transformers import Trainer  # noqa: PLC0415

    class OrderedEvalTrainer(Trainer):
        def _get_eval_sampler(self, eval_dataset):  # noqa: ANN001, ANN202
            if eval_dataset is None or self.args.world_size > 1:
                return None  # as Trainer's: accelerate shards the data in order
            return SequentialSampler(eval_dataset)

    return OrderedEvalTrainer


TASK_BUILDERS: dict[str, Callable[[RunSettings, Any, int], TransformerTask]] = {
    "imdb": classification_task,
    "squad": question_answering_task,
}
"""The Trainer backend's data sets and how to build each task."""


def _last_checkpoint(folder: Path, settings: RunSettings) -> tuple[str | None, dict | None]:
    """The newest Trainer checkpoint under ``folder`` with our history file, if it
    belongs to these settings (else the folder is cleared)."""
    from transformers.trainer_utils import get_last_checkpoint  # noqa: PLC0415

    if not folder.is_dir():
        return None, None
    last = get_last_checkpoint(str(folder))
    saved = Path(folder / "settings.json")
    same = saved.is_file() and settings.same_run(json.loads(saved.read_text()))
    if last is None or not same or not (Path(last) / HISTORY_FILE).is_file():
        if is_main_process():  # the other ranks of a distributed run only read
            shutil.rmtree(folder, ignore_errors=True)
        return None, None
    return last, json.loads((Path(last) / HISTORY_FILE).read_text())


def train_transformer(
    settings: RunSettings | dict[str, Any],
    out_dir: str | Path,
    progress: bool = False,
    keep_checkpoint: bool | None = None,
) -> dict[str, Any]:
    """Fine-tune a pretrained model on IMDB (sequence classification) or SQuAD v1.1
    (extractive QA) through ``Trainer`` (the task's data: :data:`TASK_BUILDERS`).

    Evaluation on the validation split (or its first ``val_subset`` examples) at step
    0 and every ``eval_every_steps`` optimizer steps (0: once per epoch), with a
    Trainer checkpoint after each evaluation in ``out_dir/checkpoint/`` (outside the
    pipeline's declared outputs); a run started again with the same settings resumes
    from the newest one. The test split (or its stratified ``test_subset``) is
    evaluated once, with the final weights. SQuAD steps count windows: a question
    whose context is longer than one window gives several training examples.

    Divergence: a non-finite training loss, gradient norm or learning rate, or a
    non-finite validation loss or metric at any evaluation, stops the run with
    ``status: diverged`` (no checkpoint of that step, no test evaluation); the
    outputs are written all the same, every non-finite number in
    ``metrics.json`` as ``null``.

    Precision: the settings' ``precision`` resolved for the device
    (:func:`uncertainty_lr_study.precision.choose_precision`; ``auto``: bfloat16 autocast
    where native), recorded in ``metrics.json`` as ``precision`` (used),
    ``precision_requested`` and ``precision_reason``. Progress: a log line at most
    every :func:`~uncertainty_lr_study.training.progress_interval` seconds
    (:class:`~uncertainty_lr_study.training.ProgressLog`).

    Args:
        settings: the run's settings (``model="transformer"``, ``pretrained`` a hub id
            or folder, ``optimizer="adamw"`` as in the study plan).
        out_dir: folder for ``metrics.json`` and ``history.csv``.
        progress: show the Trainer's progress bar.
        keep_checkpoint: keep ``out_dir/checkpoint/`` after the run; default:
            :func:`~uncertainty_lr_study.training.keep_checkpoints_requested` (the config's
            ``keep_checkpoints``, passed by the pipeline; false: delete it).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        ConfigError: invalid settings (before any data is read).
        PretrainedError: offline and no local copy of the checkpoint.
        DataFileError: missing or corrupt data files.
    """
    if isinstance(settings, dict):
        settings = RunSettings.from_dict(settings)
    s = settings
    if s.dataset not in TASK_BUILDERS:
        raise ConfigError(
            f"the transformer backend reads {', '.join(TASK_BUILDERS)}, got {s.dataset!r}"
        )
    if s.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    device = resolve_device(s.device)
    use_deterministic_kernels()
    # a control reads its source run first: a missing source fails before any work
    control = (
        load_control_input(s, out_dir) if SCHEDULERS[s.scheduler].family == "control" else None
    )
    path = resolve_pretrained(s.pretrained, offline=s.offline)
    t_start = time.perf_counter()
    torch.set_num_threads(s.num_threads)
    precision, precision_reason = choose_precision(s.precision, device)  # after the threads
    log.info("precision %s (%s)", precision, precision_reason)

    import transformers  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainingArguments,
    )

    from uncertainty_lr.integrations.hf import (  # noqa: PLC0415
        MetricFedSchedule,
        UncertaintyCallback,
        ValidationLossFeed,
    )

    transformers.logging.set_verbosity_warning()
    tokenizer = AutoTokenizer.from_pretrained(path)
    default_length = squad.DEFAULT_MAX_LENGTH if s.dataset == "squad" else 512
    max_length = s.max_length or min(int(tokenizer.model_max_length), default_length)
    task = TASK_BUILDERS[s.dataset](s, tokenizer, max_length)
    train_set, val_set, test_set = task.train_set, task.val_set, task.test_set

    # Same seed, same classification-head initialisation and data order in every arm.
    seed_everything(s.seed)
    model = task.model_class.from_pretrained(path, **task.model_kwargs)
    n_train = len(train_set)
    steps_per_epoch = math.ceil(n_train / s.batch_size)
    total_steps = s.epochs * steps_per_epoch
    warmup = s.warmup_steps or math.ceil(s.warmup_ratio * total_steps)
    eval_steps = s.eval_every_steps or steps_per_epoch
    optimizer = build_optimizer(s, model, run_steps=total_steps, warmup_steps=warmup)
    try:
        scheduler, spec = build_scheduler(
            s.scheduler,
            optimizer,
            epochs=s.epochs,
            steps_per_epoch=steps_per_epoch,
            interval="step",
            scaling=s.scaling,
            reference_epochs=s.reference_epochs,
            warmup_steps=warmup,
            decision_interval=eval_steps,
            control=control,
            **s.scheduler_params,
        )
    except ValueError as err:
        raise ConfigError(f"scheduler {s.scheduler!r}: {err}") from err
    adaptive = uncertainty_part(scheduler)
    signals = UncertaintyCallback(
        adaptive,
        signal=spec.signal or "grad_norm",
        clip_grad_norm=s.max_grad_norm or None,
        variance_fn=task.variance_fn,
    )
    callbacks: list[Any] = [signals]
    if spec.metric is not None:  # ReduceLROnPlateau, GreedyLR: fed by callbacks
        scheduler = MetricFedSchedule(scheduler, spec.metric, loss_source=signals.last_loss)
        callbacks.append(ValidationLossFeed(scheduler))

    ckpt_dir = Path(out_dir) / "checkpoint"
    resume_from, saved = _last_checkpoint(ckpt_dir, s)
    rows: list[dict[str, Any]] = (
        [_row_from_json(r) for r in saved["rows"]]
        if saved
        else []
    )
    seconds_before = float(saved["seconds"]) if saved else 0.0
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        atomic_write_json(ckpt_dir / "settings.json", s.to_dict())
    trace = TraceRecorder()
    if saved and saved.get("trace"):
        trace.load({**saved["trace"], "rows": [_row_from_json(r) for r in saved["trace"]["rows"]]})
    else:
        trace.record(optimizer, scheduler)
    progress_log = ProgressLog(
        total_steps,
        f"val_{PRIMARY_METRIC[s.dataset]}",
        done=int(rows[-1]["step"]) if rows else 0,
        interval=None if is_main_process() else math.inf,  # the main process logs
    )
    recorder = _make_recorder(
        signals,
        steps_per_epoch,
        rows,
        seconds_before,
        VAL_METRICS[s.dataset],
        trace,
        scheduler,
        progress_log,
    )

    world = int(os.environ.get("WORLD_SIZE", "1"))  # > 1 in distributed.launch workers
    if s.batch_size % world:
        raise ConfigError(f"batch_size {s.batch_size} is not divisible by {world} processes")
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=s.batch_size // world,  # the global batch stays
        ddp_backend="gloo" if device.type == "cpu" and world > 1 else None,
        per_device_eval_batch_size=EVAL_BATCH_SIZE,
        num_train_epochs=s.epochs,
        learning_rate=s.lr,  # informational: the optimizer passed in is what trains
        weight_decay=s.weight_decay,
        max_grad_norm=0.0,  # clipping happens in the callback, after measuring the norm
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=1,
        logging_strategy="steps" if s.sample_every_steps else "no",
        logging_steps=s.sample_every_steps or 1,
        logging_nan_inf_filter=False,
        seed=s.seed,
        data_seed=s.seed,
        use_cpu=device.type == "cpu",
        bf16=precision == "bf16",
        train_sampling_strategy="group_by_length" if s.group_by_length else "random",
        dataloader_num_workers=0,
        report_to="none",
        disable_tqdm=not progress,
    )
    trainer = _make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=task.compute_metrics,
        optimizers=(optimizer, scheduler),
        callbacks=[*callbacks, recorder],
    )
    if resume_from is None:
        trainer.evaluate()  # the step-0 row of the learning curve
    else:
        log.info("resuming from %s", resume_from)
    if recorder.diverged_epoch is None:  # a non-finite step-0 evaluation trains no step
        trainer.train(resume_from_checkpoint=resume_from)
    status = "diverged" if recorder.diverged_epoch is not None else "completed"
    step = trainer.state.global_step
    if status == "completed" and (not rows or rows[-1]["kind"] != "eval" or rows[-1]["step"] != step):
        trainer.evaluate()  # the final weights' validation row
    train_seconds = recorder.seconds()

    test = None
    if status == "completed":
        trainer.compute_metrics = None  # the validation set's; the test set has its own
        test = task.test_metrics(trainer.predict(test_set))
    history = pd.DataFrame(rows)
    first = [c for c in HISTORY_COLUMNS if c in history.columns]
    history = history[first + [c for c in history.columns if c not in first]]
    metrics = summarise_run(
        s,
        history=history,
        status=status,
        diverged_epoch=recorder.diverged_epoch,
        resumed_from_epoch=(
            float(saved["rows"][-1]["epoch"]) if saved and saved["rows"] else None
        ),
        test=test,
        steps=step,
        steps_per_epoch=steps_per_epoch,
        train_examples=n_train,
        val_examples=len(val_set),
        test_examples=len(test_set),
        optimizer=optimizer,
        scheduler=scheduler,
        wall_seconds=time.perf_counter() - t_start,
        train_seconds=train_seconds,
        device=device,
        precision=precision,
    )
    metrics["precision_reason"] = precision_reason
    metrics["warmup_steps"] = warmup
    metrics["max_length"] = max_length
    metrics["pretrained_path"] = path
    metrics["versions"]["transformers"] = transformers.__version__
    metrics["num_processes"] = world
    metrics.update(task.info)
    if world > 1 and device.type == "cuda":
        metrics["device_hours"] *= world  # one GPU per process
    out_dir = Path(out_dir)
    if is_main_process():
        atomic_write_csv(out_dir / "history.csv", history)
        trace.write(out_dir)
        atomic_write_json(out_dir / "metrics.json", metrics)
        if not (keep_checkpoints_requested() if keep_checkpoint is None else keep_checkpoint):
            shutil.rmtree(ckpt_dir, ignore_errors=True)
    return metrics
