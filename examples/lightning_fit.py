"""UncertaintyLR in a PyTorch Lightning fit, fed by the library's Lightning callback.

``configure_optimizers`` returns the scheduler with ``interval: "step"``, so Lightning
calls its ``step()`` after every optimizer step and it decides every ``--every``
steps, on the mean predictive variance of those steps. ``UncertaintyCallback``
measures the signal (a forward hook on the module: ``forward`` returns the logits)
and finds the scheduler by itself.

    python examples/lightning_fit.py --steps 200 --every 20

Needs ``pip install "uncertainty-lr[lightning]"``; the data are a synthetic
classification task (labels from a fixed random linear "teacher").
"""

import argparse

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from uncertainty_lr import UncertaintyLR
from uncertainty_lr.integrations.lightning import UncertaintyCallback


class Classifier(pl.LightningModule):
    def __init__(self, lr: float, threshold: float, every: int) -> None:
        super().__init__()
        self.lr, self.threshold, self.every = lr, threshold, every
        self.net = torch.nn.Sequential(
            torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 4) logits: what the callback's hook reads

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        scheduler = UncertaintyLR(
            optimizer, threshold=self.threshold, max_lr=2 * self.lr, decision_interval=self.every
        )
        # interval "step": Lightning calls scheduler.step() after every optimizer step
        config = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": config}


class PrintDecisions(pl.Callback):
    """Print each decision of the scheduler (Lightning steps it before this hook)."""

    def __init__(self) -> None:
        self.seen = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        if scheduler.num_decisions > self.seen:
            self.seen = scheduler.num_decisions
            signal = scheduler.last_signal["signal"]
            lr = scheduler.get_last_lr()[0]
            print(f"step {trainer.global_step:>4}  decision  variance {signal:.4f}  lr {lr:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--every", type=int, default=20, help="steps between decisions")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.2, help="predictive variance")
    args = parser.parse_args()

    pl.seed_everything(0, verbose=False)
    teacher = torch.randn(20, 4)
    x = torch.randn(4096, 20)  # (N, 20)
    data = torch.utils.data.TensorDataset(x, (x @ teacher).argmax(1))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)

    module = Classifier(args.lr, args.threshold, args.every)
    trainer = pl.Trainer(
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[UncertaintyCallback("predictive_variance"), PrintDecisions()],
    )
    trainer.fit(module, loader)
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    print(
        f"decisions: {scheduler.num_decisions} ({scheduler.num_decreases} decreases, "
        f"{scheduler.num_increases} increases)"
    )


if __name__ == "__main__":
    main()
