"""Training throughput of the Trainer backend's schedule against Trainer's own (not a
test): what the uncertainty schedule and its callback cost per optimizer step.

Two arms on the same model (the offline MiniLM-L6 checkpoint with a new
classification head), the same real IMDB reviews (128 tokens, head + tail) and the
same batch size, in one process:

- ``plain``: ``Trainer`` with its built-in linear schedule (``lr_scheduler_type=
  "linear"``, linear warmup) and its own gradient clipping at norm 1;
- ``uncertainty``: the study's path, ``Trainer(optimizers=(AdamW, schedule))`` with
  the registry's ``uncertainty-variance`` schedule after a linear warmup, the
  :class:`~uncertainty_lr.integrations.hf.UncertaintyCallback` measuring the pre-clip
  gradient norm (and clipping at 1) and the predictive variance of every step.

The arms run back to back in ``--repeats`` rounds (ABBA order) of ``--steps``
optimizer steps each, from the same initial weights; the throughput of an arm is
the median over rounds of ``train_samples_per_second`` reported by
``Trainer.train``, and the cost is reported both from those medians and as the
median over rounds of the paired cost ``1 - uncertainty / plain``. No evaluation and
no checkpoints in either arm.

The evaluation part (``--part eval``) times ``Trainer.evaluate`` over ``--eval-reviews``
validation reviews (``--eval-length`` tokens, head + tail) in the backend's
deterministic mode, with its collator (``DataCollatorWithPadding``: each batch padded
to its longest review), at several evaluation batch sizes, the backend's
(``engine.trainer.TRAINER_EVAL_BATCH_SIZE``) among them, and three variants of its batches:
sorted by length (less padding), padded to ``--eval-length`` (no dynamic padding),
and with 073a0b7's NaN fill of every new tensor (``--reuse-freed-memory``: glibc
keeps freed memory, as the plain engine has it). Rounds alternate the variants'
order; each variant's median seconds, its ratio to 073a0b7's pass, and the
validation loss and accuracy it gives (to the last digit: a batch's shape can
change the rounding) are printed, with a torch.profiler table of one pass.

Usage: python benchmarks/bench_trainer.py [--part train|eval|both] [--steps 12]
       [--repeats 3] [--threads 1] [--eval-reviews 256] [--eval-length 128]
       [--clock wall|cpu] [--reuse-freed-memory]
Writes benchmarks/out/bench_trainer.json (train) and bench_trainer_eval.json (eval).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from uncertainty_lr_study.data.imdb import load_imdb_reviews
from uncertainty_lr_study.pretrained import resolve_pretrained

BATCH = 32


def run_arm(arm: str, path: str, tokenizer, data: list, steps: int, out: str) -> float:
    """Train ``steps`` optimizer steps in one arm; returns samples per second."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from uncertainty_lr.integrations.hf import UncertaintyCallback
    from uncertainty_lr_study.registry import build_scheduler, uncertainty_part

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    common = dict(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=1e-4,
        weight_decay=0.01,
        warmup_steps=2,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    tokenizer_collator = DataCollatorWithPadding(tokenizer)
    if arm == "plain":
        args = TrainingArguments(lr_scheduler_type="linear", max_grad_norm=1.0, **common)
        trainer = Trainer(
            model=model, args=args, train_dataset=data, data_collator=tokenizer_collator
        )
    else:
        args = TrainingArguments(max_grad_norm=0.0, **common)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        scheduler, spec = build_scheduler(
            "uncertainty-variance",
            optimizer,
            epochs=1,
            steps_per_epoch=steps,
            interval="step",
            warmup_steps=2,
            decision_interval=4,
        )
        callback = UncertaintyCallback(
            uncertainty_part(scheduler), signal=spec.signal, clip_grad_norm=1.0
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=tokenizer_collator,
            optimizers=(optimizer, scheduler),
            callbacks=[callback],
        )
    result = trainer.train()
    return float(result.metrics["train_samples_per_second"])


def eval_pass(
    path: str,
    tokenizer,
    data: list,
    batch_size: int,
    pad_to: int,
    out: str,
    profile: bool = False,
    cpu_clock: bool = False,
):
    """One ``Trainer.evaluate`` over ``data``, batches padded to their longest review
    (``pad_to`` 0) or to ``pad_to`` tokens: (seconds, wall or with ``cpu_clock`` this
    process's CPU time; validation loss; accuracy), or the torch.profiler table of
    the pass with ``profile``."""
    import numpy as np
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    torch.manual_seed(0)  # the same new head in every variant
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    args = TrainingArguments(
        output_dir=out,
        per_device_eval_batch_size=batch_size,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    fixed = {"padding": "max_length", "max_length": pad_to} if pad_to else {}
    collator = DataCollatorWithPadding(tokenizer, **fixed)
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=data,
        data_collator=collator,
        compute_metrics=lambda p: {
            "accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())
        },
    )
    trainer.remove_callback(PrinterCallback)  # no metrics printed by Trainer
    if profile:
        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            trainer.evaluate()
        return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    t = time.process_time() if cpu_clock else time.perf_counter()
    metrics = trainer.evaluate()
    seconds = (time.process_time() if cpu_clock else time.perf_counter()) - t
    return seconds, metrics["eval_loss"], metrics["eval_accuracy"]


OLD_EVAL_BATCH_SIZE = 64
"""``engine.trainer.TRAINER_EVAL_BATCH_SIZE`` at 073a0b7, the baseline of the ratios."""


def evaluation(a: argparse.Namespace, path: str, tokenizer) -> dict:
    """Seconds of the validation pass at each evaluation batch size / padding, in the
    backend's deterministic mode (:func:`~uncertainty_lr_study.engine.use_deterministic_kernels`)."""
    from uncertainty_lr_study.engine.hf_tasks import classifier_inputs as encode_reviews
    from uncertainty_lr_study.engine.trainer import TRAINER_EVAL_BATCH_SIZE as EVAL_BATCH_SIZE
    from uncertainty_lr_study.engine import reuse_freed_memory, use_deterministic_kernels

    use_deterministic_kernels()
    if a.reuse_freed_memory:
        reuse_freed_memory()

    reviews = load_imdb_reviews(train_subset=32)
    n = a.eval_reviews
    data = encode_reviews(tokenizer, reviews.val.select(range(n)), a.eval_length, "head_tail")
    by_length = sorted(data, key=lambda r: len(r["input_ids"]))
    lengths = sorted(len(r["input_ids"]) for r in data)
    sizes = sorted({16, 32, OLD_EVAL_BATCH_SIZE, 128, 256, EVAL_BATCH_SIZE})
    variants = {f"batch {b}": (data, b, 0) for b in sizes}  # (reviews, batch, pad_to)
    b = EVAL_BATCH_SIZE
    old = f"batch {OLD_EVAL_BATCH_SIZE}, NaN fill (073a0b7)"
    variants[old] = (data, OLD_EVAL_BATCH_SIZE, 0)
    variants[f"batch {b}, sorted by length"] = (by_length, b, 0)
    variants[f"batch {b}, padded to {a.eval_length}"] = (data, b, a.eval_length)
    seconds = {name: [] for name in variants}
    scores = {}
    with tempfile.TemporaryDirectory() as out:
        names = list(variants)
        for r in range(a.repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                # 073a0b7's deterministic mode filled every new tensor with NaN
                torch.utils.deterministic.fill_uninitialized_memory = "NaN fill" in name
                t, loss, acc = eval_pass(
                    path, tokenizer, *variants[name], out, cpu_clock=a.clock == "cpu"
                )
                seconds[name].append(t)
                scores[name] = {"loss": loss, "accuracy": acc}
                print(f"round {r + 1} {name:28s} {t:7.2f} s", flush=True)
        table = eval_pass(path, tokenizer, data, b, 0, out, profile=True)
    base = statistics.median(seconds[old])
    print(
        f"\nvalidation pass, {n} IMDB reviews at most {a.eval_length} tokens (median "
        f"{lengths[n // 2]}, {sum(x < a.eval_length for x in lengths)} shorter), "
        f"{a.threads} thread(s), {a.repeats} rounds, {a.clock} clock, glibc keeping freed "
        f"memory: {a.reuse_freed_memory}; the backend's batch: {b} "
        f"(before: {OLD_EVAL_BATCH_SIZE}); ratio to 073a0b7's:"
    )
    for name, v in seconds.items():
        mid = statistics.median(v)
        runs = " ".join(f"{x:.2f}" for x in v)
        print(
            f"  {name:28s} {mid:6.2f} s  x{mid / base:.3f}  rounds {runs}  "
            f"loss {scores[name]['loss']!r} accuracy {scores[name]['accuracy']!r}"
        )
    print(f"\nprofile of one pass at batch {b}, top by self CPU time:\n{table}")
    return {
        "seconds": seconds,
        "scores": scores,
        "eval_batch_size": b,
        "reviews": n,
        "max_length": a.eval_length,
        "profile": table,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("train", "eval", "both"), default="both")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per round")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per arm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-reviews", type=int, default=256)
    parser.add_argument("--eval-length", type=int, default=128)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="eval part: wall or CPU time"
    )
    parser.add_argument(
        "--reuse-freed-memory",
        action="store_true",
        help="eval part: call training.reuse_freed_memory() first, as the plain engine does",
    )
    a = parser.parse_args()
    torch.set_num_threads(a.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    from uncertainty_lr_study.engine.hf_tasks import classifier_inputs as encode_reviews

    path = resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    if a.part in ("eval", "both"):
        result = evaluation(a, path, tokenizer)
        (out_dir / "bench_trainer_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    if a.part == "eval":
        return
    reviews = load_imdb_reviews(train_subset=BATCH * a.steps)
    data = encode_reviews(tokenizer, reviews.train, 128, "head_tail")
    rates: dict[str, list[float]] = {"plain": [], "uncertainty": []}
    with tempfile.TemporaryDirectory() as out:
        for r in range(a.repeats):
            # ABBA order: neither arm always runs first in a round
            for arm in ("plain", "uncertainty") if r % 2 == 0 else ("uncertainty", "plain"):
                rates[arm].append(run_arm(arm, path, tokenizer, data, a.steps, out))
                print(f"{arm}: {rates[arm][-1]:.2f} samples/s", flush=True)
    median = {arm: statistics.median(r) for arm, r in rates.items()}
    cost = 1.0 - median["uncertainty"] / median["plain"]
    # the two arms of a round ran back to back: their ratio cancels slow drifts
    paired = [1.0 - u / p for u, p in zip(rates["uncertainty"], rates["plain"])]
    result = {
        "samples_per_second": rates,
        "median_samples_per_second": median,
        "cost_of_uncertainty_schedule": cost,
        "cost_per_round": paired,
        "median_cost_per_round": statistics.median(paired),
        "steps": a.steps,
        "repeats": a.repeats,
        "batch_size": BATCH,
        "threads": a.threads,
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    (out_dir / "bench_trainer.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
