"""A linear warmup, then UncertaintyLR: both inside ``torch.optim.lr_scheduler.SequentialLR``.

The schedulers are stepped after every optimizer step. During the first
``--warmup`` steps LinearLR ramps the rate up to the base rate; from then on
UncertaintyLR decides every ``--every`` steps on the mean gradient norm of those
steps. The signal is observed on the inner UncertaintyLR (SequentialLR has no
``observe``); values observed during the warmup are discarded at the milestone.

    python examples/warmup.py --steps 300 --warmup 50 --every 25

Needs only torch and uncertainty-lr; the data are a synthetic classification task
(labels from a fixed random linear "teacher"), so the script runs anywhere.
"""

import argparse

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LinearLR, SequentialLR

from uncertainty_lr import UncertaintyLR, gradient_norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps")
    parser.add_argument("--warmup", type=int, default=50, help="warmup steps")
    parser.add_argument("--every", type=int, default=25, help="steps between decisions")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threshold", type=float, default=0.3, help="gradient-norm threshold")
    args = parser.parse_args()

    torch.manual_seed(0)
    teacher = torch.randn(20, 4)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    warmup = LinearLR(optimizer, start_factor=0.01, total_iters=args.warmup)
    adaptive = UncertaintyLR(
        optimizer, threshold=args.threshold, max_lr=2 * args.lr, decision_interval=args.every
    )
    scheduler = SequentialLR(optimizer, [warmup, adaptive], milestones=[args.warmup])

    print(f"{'step':>5} {'phase':>8} {'grad norm':>9} {'lr':>9}")
    for step in range(1, args.steps + 1):
        x = torch.randn(128, 20)  # (B, 20)
        y = (x @ teacher).argmax(1)  # (B,)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        adaptive.observe(gradient_norm(model.parameters()))  # the inner scheduler
        optimizer.step()
        decisions = adaptive.num_decisions
        scheduler.step()
        lr = scheduler.get_last_lr()[0]
        if step < args.warmup and step % max(args.warmup // 5, 1) == 0:
            print(f"{step:>5} {'warmup':>8} {'':>9} {lr:>9.5f}")
        elif adaptive.num_decisions > decisions:  # UncertaintyLR took a decision
            print(f"{step:>5} {'decision':>8} {adaptive.last_signal['signal']:>9.4f} {lr:>9.5f}")
    print(
        f"decisions: {adaptive.num_decisions} ({adaptive.num_decreases} decreases, "
        f"{adaptive.num_increases} increases), final loss {loss.item():.4f}"
    )


if __name__ == "__main__":
    main()
