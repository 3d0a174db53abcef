"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), adapted to 28x28 MNIST images."""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeNet-5 with the original layer sizes, for 1x28x28 inputs.

    The original network reads 32x32 images; padding the first convolution by 2
    gives the same 28x28 feature map on MNIST's 28x28 images. Layers:
    conv 6@5x5 (pad 2) -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU -> max-pool 2
    -> FC 120 -> ReLU -> FC 84 -> ReLU -> FC ``num_classes``. ReLU and max pooling
    replace the original's scaled tanh and trainable subsampling, as in common
    modern re-implementations. 61,706 parameters for 10 classes.

    Args:
        num_classes: number of output classes (10 for MNIST).

    Shapes:
        input ``(B, 1, 28, 28)`` float; output logits ``(B, num_classes)``.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),  # (B, 6, 28, 28)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 6, 14, 14)
            nn.Conv2d(6, 16, kernel_size=5),  # (B, 16, 10, 10)
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 16, 5, 5)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, 400)
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),  # (B, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``(B, 1, 28, 28)`` to logits ``(B, num_classes)``."""
        return self.classifier(self.features(x))
