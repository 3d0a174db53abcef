"""UncertaintyLR in a plain PyTorch training loop, on the first images of MNIST.

One decision per epoch: the scheduler averages the predictive variance observed in
the epoch, halves the learning rate if it is above the threshold and raises it by
x1.1 if it is below (never above ``max_lr``).

    python examples/plain_loop.py --images 2000 --epochs 4

Needs only torch and uncertainty-lr. The data are the MNIST IDX files vendored in
the repository (``data/raw/mnist``); ``--data`` points at another copy.
"""

import argparse
import gzip
from pathlib import Path

import torch
import torch.nn.functional as F

from uncertainty_lr import UncertaintyLR, predictive_variance

MNIST = Path(__file__).resolve().parents[1] / "data" / "raw" / "mnist"


def read_idx(path: Path, count: int, header: int, item_bytes: int) -> torch.Tensor:
    """The first ``count`` items of a gzip IDX file as a uint8 tensor."""
    with gzip.open(path, "rb") as f:
        f.read(header)  # magic number and dimensions
        data = f.read(count * item_bytes)
    if len(data) < count * item_bytes:
        raise ValueError(f"{path} holds fewer than {count} items")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def load(folder: Path, count: int, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images of a split ("train" or "t10k"), standardised, and labels."""
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", count, 16, 28 * 28)
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", count, 8, 1)
    x = (images.view(-1, 1, 28, 28).float() / 255 - 0.1307) / 0.3081  # (N, 1, 28, 28)
    return x, labels.long()  # (N,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=MNIST, help="folder of the IDX files")
    parser.add_argument("--images", type=int, default=4000, help="training images used")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--threshold", type=float, default=0.15)
    args = parser.parse_args()

    torch.manual_seed(0)
    x_train, y_train = load(args.data, args.images, "train")
    x_test, y_test = load(args.data, 1000, "t10k")
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    # max_lr above the starting rate, so that a confident model can speed up
    scheduler = UncertaintyLR(optimizer, threshold=args.threshold, max_lr=4 * args.lr)

    print(f"{'epoch':>5} {'signal':>8} {'decision':>9} {'lr':>9} {'test acc':>8}")
    for epoch in range(1, args.epochs + 1):
        model.train()
        for batch in torch.randperm(len(x_train)).split(args.batch_size):
            optimizer.zero_grad()
            logits = model(x_train[batch])  # (B, 10)
            loss = F.cross_entropy(logits, y_train[batch])
            loss.backward()
            scheduler.observe(predictive_variance(logits.detach()))
            optimizer.step()
        lr_before = scheduler.get_last_lr()[0]
        scheduler.step()  # the decision, on this epoch's mean predictive variance
        lr = scheduler.get_last_lr()[0]
        decision = "decrease" if lr < lr_before else "increase" if lr > lr_before else "keep"
        model.eval()
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(
            f"{epoch:>5} {scheduler.last_signal['signal']:>8.4f} {decision:>9} "
            f"{lr:>9.5f} {accuracy:>8.3f}"
        )
    print(
        f"decisions: {scheduler.num_decisions} ({scheduler.num_decreases} decreases, "
        f"{scheduler.num_increases} increases)"
    )


if __name__ == "__main__":
    main()
