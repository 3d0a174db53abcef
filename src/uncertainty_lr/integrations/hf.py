"""Hugging Face ``Trainer`` integration: feed :class:`~uncertainty_lr.UncertaintyLR`
from inside the Trainer's loop and log the signals.

Install with ``pip install "uncertainty-lr[hf]"``; usage: :class:`UncertaintyCallback`.

Where the signals come from (transformers 5.x ``Trainer._inner_training_loop``): after
the backward passes of one optimizer step the Trainer unscales the gradients (mixed
precision), clips them to ``args.max_grad_norm`` when that is > 0, calls
``on_pre_optimizer_step``, ``optimizer.step()``, then ``lr_scheduler.step()`` and
``on_step_end``. Callbacks receive no logits and no gradient norm, so:

- the **gradient norm** is measured in ``on_pre_optimizer_step`` with
  :func:`~uncertainty_lr.signals.gradient_norm`: after unscaling and *after* the
  Trainer's clipping when ``max_grad_norm > 0`` (then it never exceeds
  ``max_grad_norm``). For the pre-clip norm, set ``max_grad_norm=0`` in
  ``TrainingArguments`` and pass ``clip_grad_norm=`` here: the callback measures the
  raw norm and clips at the same point. Use the same setting in every arm of a
  comparison. A warning is logged when the Trainer clips.
- the **predictive variance** comes from the training forward passes: a forward hook
  on the model keeps each training batch's logits (detached) and
  ``variance_fn(outputs, inputs)`` reduces them (default: classification logits,
  :func:`~uncertainty_lr.signals.predictive_variance`; for question answering pass
  a function of the start/end logits and the context mask).
- the **MC-dropout variance** (optional) is probed every ``mc_dropout_every``
  optimizer steps in ``on_step_end`` on a fixed probe batch
  (:func:`~uncertainty_lr.signals.mc_dropout_variance`).

The first two signals are observed once per optimizer step (mean over
gradient-accumulation micro-batches for the variance), as tensors: the scheduler
reads them back once per decision.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

try:
    from transformers import TrainerCallback
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        'uncertainty_lr.integrations.hf needs transformers: pip install "uncertainty-lr[hf]"'
    ) from err

from uncertainty_lr import UncertaintyLR
from uncertainty_lr.integrations import decisions_ahead
from uncertainty_lr.signals import (
    gradient_norm,
    mc_dropout_variance,
    predictive_variance,
    span_predictive_variance,
)

log = logging.getLogger(__name__)

SIGNALS = ("grad_norm", "predictive_variance", "mc_dropout_variance")


def classification_variance(outputs: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The default ``variance_fn`` of :class:`UncertaintyCallback`: the 0-d
    :func:`~uncertainty_lr.signals.predictive_variance` of ``outputs.logits`` ``(B, C)``
    (``inputs``, the batch, unused). Example:
    ``UncertaintyCallback(scheduler, "predictive_variance", variance_fn=classification_variance)``.
    """
    del inputs
    return predictive_variance(outputs.logits.detach())


def span_variance_fn(
    sep_token_id: int,
) -> Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]:
    """A ``variance_fn`` for extractive question answering (``start_logits`` and
    ``end_logits`` ``(B, L)``): :func:`~uncertainty_lr.signals.span_predictive_variance`
    over the context tokens only.

    The context of a ``[CLS] question [SEP] context [SEP]`` input (also
    ``<s> question </s></s> context </s>``) is every attended token after the first
    separator that is not itself a separator; question, special and padding tokens
    are masked out of the start and end distributions.

    Args:
        sep_token_id: the tokenizer's separator id (``tokenizer.sep_token_id``).

    Returns:
        ``(outputs, inputs) -> 0-d tensor``.

    Raises:
        ValueError: (when called) a row with fewer than two context tokens.

    Example::

        UncertaintyCallback(scheduler, "predictive_variance",
                            variance_fn=span_variance_fn(tokenizer.sep_token_id))
    """

    def variance(outputs: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = inputs["input_ids"]
        attended = inputs.get("attention_mask", torch.ones_like(ids)).bool()
        is_sep = ids == sep_token_id
        context = (is_sep.cumsum(dim=1) >= 1) & ~is_sep & attended
        return span_predictive_variance(
            outputs.start_logits.detach(), outputs.end_logits.detach(), context
        )

    return variance


def evaluation_interval(args: Any, state: Any, train_dataloader: Any = None) -> int | None:
    """Optimizer steps between two evaluations of a Trainer run, None without any.

    Args:
        args: the ``TrainingArguments``: ``eval_strategy="steps"`` gives ``eval_steps``
            (a ratio < 1 of the run's optimizer steps counts as in the Trainer);
            ``"epoch"`` gives the optimizer steps per epoch.
        state: the ``TrainerState`` (its ``eval_steps`` and ``max_steps``).
        train_dataloader: the Trainer's training loader, for the steps per epoch
            (``ceil(len / gradient_accumulation_steps)``); None or one without a
            length: unknown.

    Returns:
        The interval in optimizer steps, or None (``eval_strategy="no"``, or per
        epoch with a loader of unknown length).

    Example::

        every = evaluation_interval(trainer.args, trainer.state, trainer.get_train_dataloader())
    """
    strategy = getattr(args, "eval_strategy", "no")
    if strategy == "steps":
        every = getattr(state, "eval_steps", None) or args.eval_steps or args.logging_steps
        if every < 1:  # a ratio of the run
            every = math.ceil(every * state.max_steps)
        return int(every)
    if strategy == "epoch" and hasattr(train_dataloader, "__len__"):
        return max(math.ceil(len(train_dataloader) / args.gradient_accumulation_steps), 1)
    return None


class UncertaintyCallback(TrainerCallback):
    """Feed an :class:`UncertaintyLR` (or any scheduler, for logging only) from the Trainer.

    **Logged** (added to the Trainer's training log rows, i.e. ``state.log_history``,
    and kept in :attr:`history`, one row per training log of the Trainer): the values
    of the optimizer step the row is logged at, so a row is one step:

    - ``lr``: the learning rate of parameter group 0 that this optimizer step used
      (equal to the Trainer's ``learning_rate`` in the same row; the scheduler's
      update after the step shows in the next row);
    - ``signal/grad_norm``: that step's global L2 gradient norm (unitless, per
      step; pre- or post-clip, module docstring);
    - ``signal/predictive_variance``: that step's mean ``sum_c p_c (1 - p_c)`` over
      its training examples (probability units, per step);
    - ``signal/mc_dropout_variance``: where a probe ran at that step.

    Reporting integrations the Trainer calls before this callback (TensorBoard,
    W&B, ...) do not see these keys; :attr:`history` and ``state.log_history`` do.

    **Decisions.** The Trainer steps the scheduler after every optimizer step, so
    ``UncertaintyLR(decision_interval=N)`` decides every ``N`` optimizer steps.
    With ``decision_interval="auto"`` (default) and a scheduler left at its default
    ``decision_interval=1``, the callback sets it to the Trainer's evaluation
    interval at the start of training: ``eval_steps`` (``eval_strategy="steps"``)
    or the optimizer steps per epoch (``eval_strategy="epoch"``); without
    evaluation it keeps 1. Pass ``decision_interval=1`` to decide every step
    anyway. A warning is issued when the run will take no decision (fewer optimizer
    steps left than the interval) or when decisions do not line up with evaluations
    (neither interval a multiple of the other).

    Args:
        scheduler: the scheduler passed to the Trainer as ``optimizers=(opt, scheduler)``;
            when it is an :class:`UncertaintyLR`, the chosen ``signal`` is observed
            every optimizer step. Other schedulers are left alone (the signals are
            still logged, so every arm of a comparison logs the same).
        signal: ``"grad_norm"``, ``"predictive_variance"`` or
            ``"mc_dropout_variance"``: what the scheduler observes; or a tuple of
            several for a several-signal scheduler (observed as a mapping with these
            names).
        clip_grad_norm: when set, clip the gradients to this global norm in
            ``on_pre_optimizer_step`` after measuring the raw (pre-clip) norm; use
            with ``max_grad_norm=0`` in ``TrainingArguments``.
        variance_fn: ``(outputs, inputs) -> 0-d tensor``; default
            :func:`classification_variance`.
        mc_dropout_probe: a fixed batch of model inputs (dict of tensors) for
            :func:`~uncertainty_lr.signals.mc_dropout_variance`, computed every
            ``mc_dropout_every`` optimizer steps (in ``on_step_end``, so it counts
            towards the next decision) with ``mc_dropout_passes`` passes.
        mc_dropout_every: optimizer steps between two MC-dropout probes (0: never).
        mc_dropout_passes: stochastic passes ``T`` per probe.
        decision_interval: ``"auto"`` (above) or an integer >= 1 of optimizer steps
            that replaces the scheduler's ``decision_interval`` at the start of
            training.

    Raises:
        ValueError: an unknown signal name, ``clip_grad_norm <= 0``,
            ``"mc_dropout_variance"`` requested without a probe and an interval, or
            a ``decision_interval`` that is neither ``"auto"`` nor an integer >= 1.

    Example::

        args = TrainingArguments(..., eval_strategy="steps", eval_steps=200, max_grad_norm=0.0)
        scheduler = UncertaintyLR(optimizer, threshold=0.01)  # decides every 200 steps
        callback = UncertaintyCallback(scheduler, "predictive_variance", clip_grad_norm=1.0)
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                          optimizers=(optimizer, scheduler),  # the only schedule
                          callbacks=[callback])
        trainer.train()
        callback.history[-1]  # {"step": 600.0, "lr": 7.5e-06, "signal/grad_norm": ...}
    """

    def __init__(
        self,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        signal: str | tuple[str, ...] = "grad_norm",
        clip_grad_norm: float | None = None,
        variance_fn: Callable[
            [Any, dict[str, torch.Tensor]], torch.Tensor
        ] = classification_variance,
        mc_dropout_probe: dict[str, torch.Tensor] | None = None,
        mc_dropout_every: int = 0,
        mc_dropout_passes: int = 10,
        decision_interval: int | str = "auto",
    ) -> None:
        names = (signal,) if isinstance(signal, str) else tuple(signal)
        unknown = set(names) - set(SIGNALS)
        if unknown:
            raise ValueError(f"unknown signal(s) {sorted(unknown)}; valid: {', '.join(SIGNALS)}")
        if clip_grad_norm is not None and not clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 or None, got {clip_grad_norm!r}")
        if "mc_dropout_variance" in names and not (mc_dropout_probe and mc_dropout_every > 0):
            raise ValueError(
                "signal 'mc_dropout_variance' needs mc_dropout_probe (a batch of inputs) and "
                "mc_dropout_every > 0 (optimizer steps between probes)"
            )
        if mc_dropout_every < 0 or mc_dropout_passes < 2:
            raise ValueError(
                f"mc_dropout_every must be >= 0 and mc_dropout_passes >= 2, got "
                f"{mc_dropout_every} and {mc_dropout_passes}"
            )
        if decision_interval != "auto" and (
            isinstance(decision_interval, bool)
            or not isinstance(decision_interval, int)
            or decision_interval < 1
        ):
            raise ValueError(
                f"decision_interval must be 'auto' or an integer >= 1 (optimizer steps), got "
                f"{decision_interval!r}"
            )
        self.mc_dropout_probe = mc_dropout_probe
        self.mc_dropout_every = mc_dropout_every
        self.mc_dropout_passes = mc_dropout_passes
        self.scheduler = scheduler
        self.signals = names
        self.clip_grad_norm = clip_grad_norm
        self.variance_fn = variance_fn
        self.decision_interval = decision_interval
        self.history: list[dict[str, float]] = []
        self._handle = None
        self._variances: list[torch.Tensor] = []
        self._losses: list[torch.Tensor] = []
        self._last_loss: float | None = None
        self._latest: dict[str, torch.Tensor] = {}  # each signal's latest value
        self._step: dict[str, Any] = {}  # the values of the latest optimizer step

    @property
    def last_values(self) -> dict[str, float]:
        """Each signal's latest value (the latest optimizer step's; an MC-dropout
        probe's from the latest probe), as floats (reading it synchronises)."""
        return {name: float(v) for name, v in self._latest.items()}

    # -- hooks -----------------------------------------------------------------------

    def _forward_hook(self, module, args, kwargs, outputs) -> None:
        # training forward passes only: not evaluation, not MC-dropout probes (no grad)
        if module.training and torch.is_grad_enabled():
            self._variances.append(self.variance_fn(outputs, kwargs).detach())
            loss = getattr(outputs, "loss", None)
            if loss is not None:
                self._losses.append(loss.detach())

    def last_loss(self) -> float | None:
        """The training loss of the latest optimizer step (mean over its micro-batches,
        from the model's own ``outputs.loss``), or None before the first step."""
        return self._last_loss

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        if args.max_grad_norm and args.max_grad_norm > 0 and "grad_norm" in self.signals:
            log.warning(
                "Trainer clips gradients (max_grad_norm=%s): the gradient-norm signal is the "
                "post-clip norm. Set max_grad_norm=0 and UncertaintyCallback(clip_grad_norm=...) "
                "for the pre-clip norm.",
                args.max_grad_norm,
            )
        if model is not None and self._handle is None:
            self._handle = model.register_forward_hook(self._forward_hook, with_kwargs=True)
        if model is not None and self.mc_dropout_probe is not None:
            device = next(model.parameters()).device
            self.mc_dropout_probe = {k: v.to(device) for k, v in self.mc_dropout_probe.items()}
        if isinstance(self.scheduler, UncertaintyLR):
            self._plan_decisions(args, state, evaluation_interval(args, state, train_dataloader))

    def _plan_decisions(self, args, state, every: int | None) -> None:
        """Set the scheduler's decision interval (class docstring) and warn where the
        run takes no decision or decisions miss the evaluations."""
        scheduler = self.scheduler
        if self.decision_interval != "auto":
            scheduler.decision_interval = self.decision_interval
        elif every is not None and scheduler.decision_interval == 1 and every != 1:
            scheduler.decision_interval = every
            log.info(
                "UncertaintyCallback: UncertaintyLR decides every %d optimizer steps, the "
                "evaluation interval (eval_strategy=%r); pass decision_interval= to choose",
                every,
                str(getattr(args.eval_strategy, "value", args.eval_strategy)),
            )
        interval = scheduler.decision_interval
        left = state.max_steps - state.global_step
        if decisions_ahead(scheduler, left) == 0:
            warnings.warn(
                f"UncertaintyLR will take no decision in this run: {left} optimizer steps "
                f"left, decision_interval={interval} (the learning rate stays where it is). "
                "Lower decision_interval or evaluate more often (eval_steps).",
                UserWarning,
                stacklevel=2,
            )
        elif every is not None and interval % every and every % interval:
            warnings.warn(
                f"UncertaintyLR decides every {interval} optimizer steps but the Trainer "
                f"evaluates every {every}: decisions do not line up with evaluations. Use "
                "decision_interval equal to (or a multiple of) the evaluation interval.",
                UserWarning,
                stacklevel=2,
            )

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        params = [p for p in model.parameters() if p.grad is not None]
        if self.clip_grad_norm is not None:
            g = torch.nn.utils.clip_grad_norm_(params, self.clip_grad_norm)  # pre-clip norm
        else:
            g = gradient_norm(params)
        values = {"grad_norm": g.detach()}
        if self._variances:
            values["predictive_variance"] = torch.stack(self._variances).float().mean()
            self._variances.clear()
        if self._losses:
            self._last_loss = float(torch.stack(self._losses).float().mean())
            self._losses.clear()
        self._step = {"step": state.global_step + 1}  # the Trainer counts it after the step
        if optimizer is not None:
            self._step["lr"] = float(optimizer.param_groups[0]["lr"])  # the rate this step uses
        self._record(values)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.mc_dropout_every and state.global_step % self.mc_dropout_every == 0:
            v = mc_dropout_variance(
                model,
                self.mc_dropout_probe,
                passes=self.mc_dropout_passes,
                output_to_logits=lambda out: out.logits,
            )
            self._record({"mc_dropout_variance": v})

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        """Keep the step's values and feed the scheduler the chosen ones."""
        self._latest.update(values)
        self._step.update({f"signal/{name}": v for name, v in values.items()})
        if isinstance(self.scheduler, UncertaintyLR):
            wanted = {n: values[n] for n in self.signals if n in values}
            if wanted:
                single = len(self.signals) == 1
                self.scheduler.observe(next(iter(wanted.values())) if single else wanted)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # training log rows only (they carry "loss"), not evaluations or the run summary
        if not logs or "loss" not in logs or self._step.get("step") != state.global_step:
            return
        row = {k: float(v) for k, v in self._step.items()}
        self.history.append(row)
        if state.log_history:
            state.log_history[-1].update({k: v for k, v in row.items() if k != "step"})


class MetricFedSchedule:
    """Run a metric-driven schedule (``ReduceLROnPlateau``, ``GreedyLR``) under the
    Trainer, stepped the way the plain-PyTorch backend steps it.

    The Trainer calls ``lr_scheduler.step()`` without arguments after every optimizer
    step, except for ``ReduceLROnPlateau`` and ``GreedyLR``, which it steps only
    after an evaluation, with ``metric_for_best_model``. This adapter is neither, so
    the Trainer steps it after every optimizer step, and:

    - ``metric="train_loss"`` (GreedyLR): each step passes the training loss of that
      optimizer step, from ``loss_source`` (e.g. :meth:`UncertaintyCallback.last_loss`);
      a step without a finite loss leaves the rate alone;
    - ``metric="val_loss"`` (a plateau rule with a warmup, such as the study's
      ``WarmupReduceLROnPlateau``): each step is a warmup tick; :class:`ValidationLossFeed` passes the validation
      loss after every evaluation (:meth:`on_validation_loss`).

    ``state_dict`` / ``load_state_dict`` / ``get_last_lr`` are the wrapped
    scheduler's, so Trainer checkpoints resume it.

    Args:
        scheduler: the schedule to drive (``step(metric)`` takes a float).
        metric: ``"train_loss"`` or ``"val_loss"``.
        loss_source: a function giving the latest training loss (needed for
            ``"train_loss"``).

    Logs nothing itself (the rate shows in :class:`UncertaintyCallback`'s ``lr``).

    Raises:
        ValueError: an unknown ``metric``, or ``"train_loss"`` without a source.

    Example::

        plateau = WarmupReduceLROnPlateau(optimizer, warmup_steps=100, patience=2)
        schedule = MetricFedSchedule(plateau, "val_loss")
        trainer = Trainer(..., optimizers=(optimizer, schedule),
                          callbacks=[UncertaintyCallback(None), ValidationLossFeed(schedule)])
    """

    def __init__(
        self,
        scheduler: Any,
        metric: str,
        loss_source: Callable[[], float | None] | None = None,
    ) -> None:
        if metric not in ("train_loss", "val_loss"):
            raise ValueError(f"metric must be 'train_loss' or 'val_loss', got {metric!r}")
        if metric == "train_loss" and loss_source is None:
            raise ValueError("metric='train_loss' needs a loss_source (e.g. callback.last_loss)")
        self.scheduler = scheduler
        self.metric = metric
        self.loss_source = loss_source
        self.optimizer = scheduler.optimizer

    def step(self) -> None:
        """After every optimizer step (called by the Trainer)."""
        if self.metric == "val_loss":
            self.scheduler.step()  # a warmup tick
            return
        loss = self.loss_source()
        if loss is not None and math.isfinite(loss):
            self.scheduler.step(loss)

    def on_validation_loss(self, value: float) -> None:
        """After every evaluation: a plateau decision on the validation loss."""
        if self.metric == "val_loss" and math.isfinite(value):
            self.scheduler.step(value)

    def get_last_lr(self) -> list[float]:
        """The optimizer's current learning rates (one per group)."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """The wrapped scheduler's state."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped scheduler's state."""
        self.scheduler.load_state_dict(state)


class ValidationLossFeed(TrainerCallback):
    """Pass each evaluation's ``eval_loss`` to a :class:`MetricFedSchedule` (not the
    evaluation before training: no step has been taken yet). Logs nothing.

    Args:
        schedule: the :class:`MetricFedSchedule` given to the Trainer.

    Example::

        Trainer(..., optimizers=(optimizer, schedule), callbacks=[ValidationLossFeed(schedule)])
    """

    def __init__(self, schedule: MetricFedSchedule) -> None:
        self.schedule = schedule

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if state.global_step > 0 and metrics and "eval_loss" in metrics:
            self.schedule.on_validation_loss(float(metrics["eval_loss"]))
