"""The Hugging Face Trainer integration, end to end on a real (tiny, randomly
initialised) BERT built from a config: no download."""

import logging

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from uncertainty_lr import UncertaintyLR  # noqa: E402
from uncertainty_lr.integrations.hf import UncertaintyCallback  # noqa: E402


class Pairs(torch.utils.data.Dataset):
    """Token sequences whose label is whether token 5 occurs: learnable."""

    def __init__(self, n=64, length=12, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(6, 60, (n, length), generator=g)
        self.labels = (torch.rand(n, generator=g) < 0.5).long()
        self.ids[self.labels == 1, 3] = 5

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def tiny_bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def trainer_for(model, scheduler, callback, tmp_path, max_grad_norm=0.0):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=16,
        learning_rate=1e-3,
        logging_steps=4,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        max_grad_norm=max_grad_norm,
        disable_tqdm=True,
        seed=0,
    )
    optimizer = scheduler.optimizer
    return Trainer(
        model=model,
        args=args,
        train_dataset=Pairs(),
        optimizers=(optimizer, scheduler),
        callbacks=[callback],
    )


def test_callback_feeds_the_scheduler_and_logs(tmp_path):
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # predictive variance of a 2-class model starts near its maximum 0.5: above 0.01
    scheduler = UncertaintyLR(optimizer, threshold=0.01, decision_interval=4)
    callback = UncertaintyCallback(scheduler, signal="predictive_variance", clip_grad_norm=1.0)
    trainer = trainer_for(model, scheduler, callback, tmp_path)
    trainer.train()
    assert scheduler.num_decreases >= 1
    assert scheduler.get_last_lr()[0] < 1e-3
    assert scheduler.last_epoch == 16  # the Trainer stepped it once per optimizer step
    assert len(callback.history) >= 4
    for row in callback.history[:4]:
        assert 0.0 < row["signal/predictive_variance"] <= 0.5
        assert row["signal/grad_norm"] > 0.0
    logged = [r for r in trainer.state.log_history if "signal/grad_norm" in r]
    assert logged and all("lr" in r for r in logged)
    # the first decision is at step 4 (decision_interval), logged at step 4
    assert callback.history[0]["lr"] == pytest.approx(5e-4)


def test_grad_norm_is_pre_clip_with_own_clipping_and_post_clip_with_trainers(tmp_path, caplog):
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = UncertaintyLR(optimizer, threshold=1e-9)  # always above: only observing matters
    own = UncertaintyCallback(scheduler, signal="grad_norm", clip_grad_norm=1e-4)
    trainer_for(model, scheduler, own, tmp_path / "own").train()
    assert max(r.get("signal/grad_norm", 0) for r in own.history) > 1e-4  # raw norm, pre-clip

    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = UncertaintyLR(optimizer, threshold=1e-9)
    theirs = UncertaintyCallback(scheduler, signal="grad_norm")
    with caplog.at_level(logging.WARNING):
        trainer_for(model, scheduler, theirs, tmp_path / "theirs", max_grad_norm=1e-4).train()
    assert "post-clip" in caplog.text
    assert 0 < max(r.get("signal/grad_norm", 0) for r in theirs.history) <= 1e-4 * 1.01


def test_callback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown signal"):
        UncertaintyCallback(None, signal="entropy")
    with pytest.raises(ValueError, match="clip_grad_norm"):
        UncertaintyCallback(None, clip_grad_norm=0.0)


def test_mc_dropout_probe_every_n_steps(tmp_path):
    model = tiny_bert()  # BertConfig's default dropout 0.1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = UncertaintyLR(optimizer, threshold=1e-12)  # any variance > 0 lowers the LR
    data = Pairs(n=8, seed=1)
    probe = {"input_ids": data.ids, "attention_mask": torch.ones_like(data.ids)}
    callback = UncertaintyCallback(
        scheduler,
        signal="mc_dropout_variance",
        mc_dropout_probe=probe,
        mc_dropout_every=4,
        mc_dropout_passes=4,
    )
    trainer_for(model, scheduler, callback, tmp_path).train()
    probes = [
        r["signal/mc_dropout_variance"]
        for r in callback.history
        if "signal/mc_dropout_variance" in r
    ]
    assert len(probes) == 4 and all(v > 0 for v in probes)  # steps 4, 8, 12, 16: one per log
    assert scheduler.num_decreases >= 3
    with pytest.raises(ValueError, match="mc_dropout_probe"):
        UncertaintyCallback(None, signal="mc_dropout_variance")
