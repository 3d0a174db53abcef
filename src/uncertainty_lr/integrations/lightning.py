"""PyTorch Lightning integration: feed :class:`~uncertainty_lr.UncertaintyLR` from a
``lightning.Trainer`` fit and log the signals through the module's logger.

Install with ``pip install "uncertainty-lr[lightning]"``. Usage::

    class Classifier(lightning.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)        # self(x): (B, C) logits

        def configure_optimizers(self):
            optimizer = torch.optim.Adam(self.parameters(), lr=1e-3)
            scheduler = UncertaintyLR(optimizer, threshold=0.5, decision_interval=100)
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    trainer = lightning.Trainer(callbacks=[UncertaintyCallback("predictive_variance")])
    trainer.fit(Classifier(), train_loader)

Where the signals come from (Lightning 2.x, automatic optimization): the optimizer
step runs the closure (``training_step``, ``backward``), unscales the gradients under
mixed precision, calls ``on_before_optimizer_step``, clips the gradients
(``gradient_clip_val``) and steps the optimizer; after the batch the scheduler is
stepped as its ``lr_scheduler_config`` says. So:

- the **gradient norm** is measured in ``on_before_optimizer_step``: the global L2
  norm (:func:`~uncertainty_lr.signals.gradient_norm`) after AMP unscaling and
  before Lightning's gradient clipping (the raw norm), once per optimizer step
  (after all ``accumulate_grad_batches`` micro-batches);
- the **predictive variance** comes from the training forward passes: a forward
  hook on ``logits_module`` (default: the LightningModule itself, whose ``forward``
  must then return the logits, as ``self(x)`` in ``training_step`` above) keeps each
  training batch's ``variance_fn(output)``; their mean is the step's value. A
  LightningModule whose logits come out of a submodule names it
  (``logits_module="model"``, a name of ``named_modules()``); one whose forward
  returns a structure passes ``variance_fn`` (e.g.
  ``lambda out: predictive_variance(out.logits.detach())``). Evaluation passes
  (``eval()`` mode or no gradient) are ignored.

Both are observed as tensors on their device: the scheduler reads them back once
per decision, the logger when it writes.

Decisions: ``UncertaintyLR`` decides at every ``decision_interval``-th call of its
``step()``, and Lightning calls ``step()`` after every ``frequency``-th training batch
of an epoch (``interval: "step"``, counting batches that step the optimizer) or after
every ``frequency``-th epoch (``interval: "epoch"``). A decision therefore comes every
``frequency * decision_interval`` optimizer steps, or epochs. Lightning saves and
restores the scheduler's state (pending observations included) in its checkpoints,
so ``trainer.fit(..., ckpt_path=...)`` continues it exactly.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

try:
    from lightning.pytorch import Callback
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "uncertainty_lr.integrations.lightning needs Lightning (lightning.pytorch): "
        'pip install "uncertainty-lr[lightning]"'
    ) from err

from uncertainty_lr import UncertaintyLR, uncertainty_part
from uncertainty_lr.integrations import decisions_ahead
from uncertainty_lr.signals import gradient_norm, predictive_variance

log = logging.getLogger(__name__)

SIGNALS = ("grad_norm", "predictive_variance")


def logits_variance(output: torch.Tensor) -> torch.Tensor:
    """The default ``variance_fn``: predictive variance of a logits output.

    Args:
        output: ``(B, C)`` (or ``(..., C)``) logits, as the hooked module returns them.

    Returns:
        0-d tensor, :func:`~uncertainty_lr.signals.predictive_variance` (mean over
        the batch of ``sum_c p_c (1 - p_c)``).

    Raises:
        TypeError: the output is not a tensor (pass a ``variance_fn``).
        ValueError: a tensor without a class dimension of at least 2.

    Example::

        UncertaintyCallback("predictive_variance", variance_fn=logits_variance)
    """
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the hooked module returned {type(output).__name__}, not a logits tensor: pass "
            "UncertaintyCallback(variance_fn=...) (e.g. lambda out: "
            "predictive_variance(out.logits.detach())) or logits_module= naming the module "
            "that returns the logits"
        )
    return predictive_variance(output.detach())


class UncertaintyCallback(Callback):
    """Measure the signals in a Lightning fit, feed an :class:`UncertaintyLR` and log.

    **Logged** through the LightningModule's ``log`` (so to ``trainer.logger``), once
    per optimizer step (``on_step=True, on_epoch=False``), the values of that step:

    - ``lr``: the learning rate of parameter group 0 that this optimizer step uses
      (``lr/group<i>`` for the further groups); a decision after the step shows at
      the next one;
    - ``signal/grad_norm``: the global L2 gradient norm (unitless, per optimizer
      step; after AMP unscaling, before gradient clipping);
    - ``signal/predictive_variance``: mean ``sum_c p_c (1 - p_c)`` over the step's
      training examples (probability units, per optimizer step), when measured.

    Args:
        signal: ``"grad_norm"`` or ``"predictive_variance"``: what the scheduler
            observes; a tuple of both for a several-signal scheduler (observed as a
            mapping with these names).
        scheduler: the :class:`UncertaintyLR` to feed. Default: the one
            ``configure_optimizers`` returned (directly or inside a
            ``SequentialLR``), found when training starts; without one the callback
            only logs (so every arm of a comparison logs the same).
        logits_module: name of the submodule (in ``named_modules()``) whose forward
            output gives the logits; ``""`` is the LightningModule itself. Setting it
            also turns on the predictive variance when only ``"grad_norm"`` is
            observed. Default None: ``""`` where the variance is observed, no hook
            otherwise.
        variance_fn: ``output -> 0-d tensor`` applied to each training forward
            output of ``logits_module``; default :func:`logits_variance`.

    Raises:
        ValueError: an unknown signal name, or a ``scheduler`` that is not an
            :class:`UncertaintyLR`.
        AttributeError: at the start of training, a ``logits_module`` the
            LightningModule does not have (from ``get_submodule``).
        TypeError: at the first training forward pass, an output that
            :func:`logits_variance` cannot reduce (pass ``variance_fn``).

    Warns:
        UserWarning: at the start of training when the fit will take no decision
            (fewer scheduler steps ahead than ``decision_interval``); at the first
            optimizer step where the predictive variance is wanted but no training
            forward pass of ``logits_module`` was seen.

    Example::

        from lightning.pytorch.loggers import CSVLogger
        trainer = lightning.Trainer(max_epochs=3, logger=CSVLogger("logs"),
                                    callbacks=[UncertaintyCallback("grad_norm")])
        trainer.fit(module, train_loader)  # metrics.csv: lr, signal/grad_norm per step
    """

    def __init__(
        self,
        signal: str | tuple[str, ...] = "grad_norm",
        scheduler: UncertaintyLR | None = None,
        logits_module: str | None = None,
        variance_fn: Callable[[Any], torch.Tensor] = logits_variance,
    ) -> None:
        names = (signal,) if isinstance(signal, str) else tuple(signal)
        unknown = set(names) - set(SIGNALS)
        if unknown or not names:
            raise ValueError(f"unknown signal(s) {sorted(unknown)}; valid: {', '.join(SIGNALS)}")
        if scheduler is not None and not isinstance(scheduler, UncertaintyLR):
            raise ValueError(
                f"scheduler must be an UncertaintyLR (or None: found in configure_optimizers), "
                f"got {type(scheduler).__name__}"
            )
        self.signals = names
        self.scheduler = scheduler
        self._given = scheduler
        self.with_variance = "predictive_variance" in names or logits_module is not None
        self.logits_module = logits_module or ""
        self.variance_fn = variance_fn
        self._variances: list[torch.Tensor] = []
        self._handle = None
        self._warned_no_forward = False

    def _forward_hook(self, module, args, output) -> None:
        if module.training and torch.is_grad_enabled():  # training passes only
            self._variances.append(self.variance_fn(output).detach())

    def on_train_start(self, trainer, pl_module) -> None:
        """Find the scheduler, hook the logits module, warn on a fit without decisions."""
        if self.with_variance and self._handle is None:
            module = pl_module.get_submodule(self.logits_module)
            self._handle = module.register_forward_hook(self._forward_hook)
        self.scheduler, config = self._find_scheduler(trainer)
        if self.scheduler is None:
            log.info("UncertaintyCallback: no UncertaintyLR in this fit; only logging signals")
            return
        if config is None:
            return  # stepped by the user: nothing to predict
        if config.interval == "step":
            left = (trainer.estimated_stepping_batches - trainer.global_step) // config.frequency
        elif trainer.max_epochs is not None and trainer.max_epochs >= 0:
            left = (trainer.max_epochs - trainer.current_epoch) // config.frequency
        else:
            return
        if math.isfinite(left) and decisions_ahead(self.scheduler, left) == 0:
            warnings.warn(
                f"UncertaintyLR will take no decision in this fit: {int(left)} scheduler "
                f"steps ahead (interval={config.interval!r}, frequency={config.frequency}), "
                f"decision_interval={self.scheduler.decision_interval}. Lower "
                "decision_interval or the lr_scheduler_config's frequency.",
                UserWarning,
                stacklevel=2,
            )

    def _find_scheduler(self, trainer) -> tuple[UncertaintyLR | None, Any]:
        """The scheduler to feed and the ``lr_scheduler_config`` that steps it."""
        for config in trainer.lr_scheduler_configs:
            found = uncertainty_part(config.scheduler)
            if found is not None and (self._given is None or found is self._given):
                return found, config
        return self._given, None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        """Measure this step's signals, log them with the rate it uses, observe."""
        values = {"grad_norm": gradient_norm(pl_module.parameters()).detach()}
        if self._variances:
            values["predictive_variance"] = torch.stack(self._variances).float().mean()
            self._variances.clear()
        elif self.with_variance and not self._warned_no_forward:
            self._warned_no_forward = True
            warnings.warn(
                f"UncertaintyCallback saw no training forward pass of "
                f"{self.logits_module or type(pl_module).__name__!r}: no predictive variance. "
                "Name the module that returns the logits with logits_module=.",
                UserWarning,
                stacklevel=2,
            )
        # float64: Lightning would log a Python float as float32, not the rate used
        dtype = torch.float32 if pl_module.device.type == "mps" else torch.float64
        rates = [torch.tensor(float(g["lr"]), dtype=dtype) for g in optimizer.param_groups]
        logged: dict[str, Any] = {"lr": rates[0]}
        logged.update({f"lr/group{i}": lr for i, lr in enumerate(rates) if i > 0})
        logged.update({f"signal/{name}": v for name, v in values.items()})
        pl_module.log_dict(logged, on_step=True, on_epoch=False)
        if self.scheduler is not None:
            wanted = {n: values[n] for n in self.signals if n in values}
            if wanted:
                single = len(self.signals) == 1
                self.scheduler.observe(next(iter(wanted.values())) if single else wanted)

    def on_train_end(self, trainer, pl_module) -> None:
        """Remove the forward hook."""
        self._remove_hook()

    def on_exception(self, trainer, pl_module, exception) -> None:
        """Remove the forward hook."""
        self._remove_hook()

    def _remove_hook(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._variances.clear()
