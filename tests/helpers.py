"""Helpers shared by test modules (importable as ``helpers``: pytest puts tests/ on
sys.path)."""

from uncertainty_lr_study.config import RunSettings


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


def transformer_settings(checkpoint, **overrides) -> RunSettings:
    """Settings of a tiny Trainer run on IMDB (96 reviews, 32 tokens, 6 optimizer
    steps, evaluation every 2) with the model folder ``checkpoint``; any field can be
    overridden (e.g. ``dataset="squad"`` with its own sizes)."""
    base = dict(
        task="imdb-bert",
        dataset="imdb",
        model="transformer",
        pretrained=str(checkpoint),
        scheduler="cosine",
        seed=0,
        epochs=1,
        lr=1e-3,
        batch_size=16,
        optimizer="adamw",
        weight_decay=0.01,
        target_metric="val_accuracy",
        target_value=0.5,
        train_subset=96,
        val_subset=32,
        test_subset=40,
        max_length=32,
        truncation="head_tail",
        eval_every_steps=2,
        sample_every_steps=1,
        warmup_steps=2,
        max_grad_norm=1.0,
        device="cpu",
    )
    base.update(overrides)
    return RunSettings(**base)
