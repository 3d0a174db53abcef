"""Helpers shared by test modules (importable as ``helpers``: pytest puts tests/ on
sys.path)."""

from uncertainty_lr.config import RunSettings


def mnist_settings(**overrides) -> RunSettings:
    """Settings of a small, fast, real MNIST / LeNet-5 run on the CPU: 640 training
    images, 2 epochs, validation every 10 steps; any field can be overridden."""
    base = dict(
        task="mnist",
        dataset="mnist",
        model="lenet5",
        scheduler="constant",
        seed=0,
        epochs=2,
        lr=1e-3,
        batch_size=32,
        target_metric="val_accuracy",
        target_value=0.8,
        eval_every_steps=10,
        sample_every_steps=5,
        train_subset=640,
        device="cpu",
    )
    base.update(overrides)
    return RunSettings(**base)
