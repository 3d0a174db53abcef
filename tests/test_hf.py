"""The Hugging Face Trainer integration, end to end on a real (tiny, randomly
initialised) BERT built from a config: no download."""

import logging
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerState,
    TrainingArguments,
)

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
    # a row is one step: step 4 trained at 1e-3; its decision (after the step) halved
    # the rate that steps 5-8 use, logged at step 8
    assert callback.history[0]["lr"] == pytest.approx(1e-3)
    assert callback.history[1]["lr"] == pytest.approx(5e-4)


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


# -- one log row = one step; decision_interval from the evaluation interval ----------


@pytest.fixture(scope="module")
def reviews(tiny_checkpoint):
    """64 training and 16 validation IMDB reviews, tokenized to 32 tokens by the tiny
    checkpoint's real WordPiece tokenizer."""
    from uncertainty_lr_study.data.imdb import load_imdb_reviews

    data = load_imdb_reviews(train_subset=64, test_subset=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)

    def encode(texts, labels):
        enc = tokenizer(texts, truncation=True, max_length=32, padding="max_length")
        return [
            {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
             "labels": torch.tensor(int(y))}
            for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], labels)
        ]

    val = encode(data.val_text[:16], data.val_label[:16])
    return encode(data.train_text, data.train_label), val


def review_run(checkpoint, reviews, tmp_path, scheduler_kwargs=None, **args):
    """A real Trainer run of the tiny BERT on the reviews; returns (trainer, scheduler,
    callback)."""
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(checkpoint)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = UncertaintyLR(optimizer, threshold=0.01, **(scheduler_kwargs or {}))
    callback = UncertaintyCallback(scheduler, signal="predictive_variance", clip_grad_norm=1.0)
    defaults = dict(per_device_train_batch_size=16, per_device_eval_batch_size=16,
                    logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                    max_grad_norm=0.0, disable_tqdm=True, seed=0)
    train, val = reviews
    trainer = Trainer(
        model=model,
        args=TrainingArguments(output_dir=str(tmp_path), **{**defaults, **args}),
        train_dataset=train,
        eval_dataset=val,
        optimizers=(optimizer, scheduler),
        callbacks=[callback],
    )
    trainer.train()
    return trainer, scheduler, callback


def test_a_log_row_is_one_step_lr_equals_the_trainers_learning_rate(
    tiny_checkpoint, reviews, tmp_path
):
    trainer, scheduler, callback = review_run(
        tiny_checkpoint, reviews, tmp_path, eval_strategy="steps", eval_steps=2, max_steps=6
    )
    assert scheduler.decision_interval == 2  # derived from eval_steps
    assert scheduler.num_decisions == 3
    assert scheduler.num_decreases >= 2  # variance of 2 classes starts near 0.5 > 0.01
    rows = [r for r in trainer.state.log_history if "lr" in r and "learning_rate" in r]
    assert [r["step"] for r in rows] == list(range(1, 7))  # every training row has both
    for r in rows:
        assert r["lr"] == r["learning_rate"]
        assert 0.0 < r["signal/predictive_variance"] <= 0.5 and r["signal/grad_norm"] > 0.0
    assert len({r["lr"] for r in rows}) >= 3  # the decisions changed the logged rate
    assert not any("lr" in r for r in trainer.state.log_history if "eval_loss" in r)
    # the last row holds the last step's own signal values
    assert callback.history[-1]["signal/grad_norm"] == pytest.approx(
        callback.last_values["grad_norm"]
    )


def test_decision_interval_follows_evaluation_per_epoch(tiny_checkpoint, reviews, tmp_path):
    _, scheduler, _ = review_run(
        tiny_checkpoint, reviews, tmp_path, eval_strategy="epoch", num_train_epochs=2,
        per_device_train_batch_size=32,
    )
    assert scheduler.decision_interval == 2  # 64 reviews / 32 per optimizer step
    assert scheduler.num_decisions == 2


def test_readme_example_with_64_examples_warns_that_it_takes_no_decision(
    tiny_checkpoint, reviews, tmp_path
):
    # 64 examples, batch 32, 2 epochs: 4 optimizer steps, decision_interval 200
    with pytest.warns(UserWarning, match="no decision in this run: 4 optimizer steps"):
        _, scheduler, _ = review_run(
            tiny_checkpoint, reviews, tmp_path, scheduler_kwargs={"decision_interval": 200},
            eval_strategy="steps", eval_steps=200, num_train_epochs=2,
            per_device_train_batch_size=32,
        )
    assert scheduler.num_decisions == 0


def plan(callback, max_steps=100, global_step=0, **args):
    """on_train_begin of ``callback`` for a run of ``max_steps`` optimizer steps."""
    args = TrainingArguments(output_dir="unused", report_to=[], use_cpu=True, max_grad_norm=0.0,
                             **args)
    state = TrainerState(max_steps=max_steps, global_step=global_step)
    state.compute_steps(args, max_steps)
    loader = torch.utils.data.DataLoader(list(range(80)), batch_size=8)  # 10 batches
    callback.on_train_begin(args, state, None, model=None, train_dataloader=loader)


def test_warnings_on_no_decision_and_on_decisions_that_miss_evaluations():
    sched = UncertaintyLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                          threshold=0.1, decision_interval=30)
    with pytest.warns(UserWarning, match="do not line up with evaluations"):
        plan(UncertaintyCallback(sched), eval_strategy="steps", eval_steps=20)
    with pytest.warns(UserWarning, match="no decision in this run: 20 optimizer steps"):
        plan(UncertaintyCallback(sched), max_steps=20, eval_strategy="no")
    with pytest.warns(UserWarning, match="no decision"):  # resumed at step 95 of 100
        plan(UncertaintyCallback(sched), global_step=95, eval_strategy="no")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan(UncertaintyCallback(sched), eval_strategy="steps", eval_steps=10)  # 30 = 3 x 10
        plan(UncertaintyCallback(sched), eval_strategy="steps", eval_steps=0.3)  # 30 steps
        auto = UncertaintyLR(sched.optimizer, threshold=0.1)
        plan(UncertaintyCallback(auto), eval_strategy="epoch", gradient_accumulation_steps=3)
        assert auto.decision_interval == 4  # ceil(10 batches / 3)
        no_eval = UncertaintyLR(sched.optimizer, threshold=0.1)
        plan(UncertaintyCallback(no_eval), eval_strategy="no")
        assert no_eval.decision_interval == 1  # nothing to line up with: kept
        plan(UncertaintyCallback(sched), eval_strategy="steps", eval_steps=5)  # user's: kept
        assert sched.decision_interval == 30
        every_step = UncertaintyLR(sched.optimizer, threshold=0.1)
        plan(UncertaintyCallback(every_step, decision_interval=1), eval_strategy="steps",
             eval_steps=10)
        assert every_step.decision_interval == 1  # asked for: kept
        plan(UncertaintyCallback(every_step, decision_interval=20), eval_strategy="steps",
             eval_steps=10)
        assert every_step.decision_interval == 20


def test_callback_rejects_a_bad_decision_interval():
    for bad in (0, 2.5, "eval", True):
        with pytest.raises(ValueError, match="decision_interval"):
            UncertaintyCallback(None, decision_interval=bad)
