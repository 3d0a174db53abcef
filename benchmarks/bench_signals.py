"""Per-step overhead of each uncertainty signal + UncertaintyLR.observe (not a test).

Times one optimizer step (forward, backward, Adam step) of
  - LeNet-5 on a real MNIST batch of 32 (CPU, 1 thread), and
  - a small BERT-family classifier built from a config (4 layers, hidden 256,
    4 heads: the size of BERT-mini; batch 8 x 128 tokens; random init, no download),
with StepLR (nothing per step) as the baseline, and the same step plus one signal
and ``UncertaintyLR.observe`` of it. Variants are interleaved and repeated; the
median per-step time of each is reported with its overhead over the baseline. Since
whole-step times vary by several percent between repeats on a shared CPU, the cost
of each signal + observe is also timed alone (on real gradients and logits) and
given as a percentage of the baseline step.
MC-dropout variance is a probe, not a per-step cost: its time per probe (T = 10
passes of the batch) is reported separately (BERT only: LeNet-5 has no dropout).

Usage: python benchmarks/bench_signals.py [--steps 60] [--rounds 5] [--threads 1]
Writes benchmarks/out/bench_signals.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from uncertainty_lr import UncertaintyLR
from uncertainty_lr_study.data import load_mnist
from uncertainty_lr_study.models import LeNet5
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr.signals import (
    gradient_norm,
    loss_variance,
    mc_dropout_variance,
    predictive_entropy,
    predictive_variance,
)

VARIANTS = ("baseline", "grad_norm", "predictive_variance", "predictive_entropy", "loss_variance")


def make_step(model, forward, batch, variant):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if variant == "baseline":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10)
    else:
        scheduler = UncertaintyLR(optimizer, threshold=0.1)

    def step():
        logits = forward(model, batch)  # (B, C)
        per_sample = F.cross_entropy(logits, batch["labels"], reduction="none")  # (B,)
        loss = per_sample.mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if variant == "grad_norm":
            scheduler.observe(gradient_norm(model.parameters()))
        elif variant == "predictive_variance":
            scheduler.observe(predictive_variance(logits.detach()))
        elif variant == "predictive_entropy":
            scheduler.observe(predictive_entropy(logits.detach()))
        elif variant == "loss_variance":
            scheduler.observe(loss_variance(per_sample))
        optimizer.step()

    return step


def time_signals_alone(build, forward, batch, calls=300):
    """Milliseconds per call of each signal + observe, on real gradients and logits.

    Whole-step timings (above) are noisier than the signals' cost; this measures the
    added work directly, repeated ``calls`` times after one real backward pass."""
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = UncertaintyLR(optimizer, threshold=0.1)
    logits = forward(model, batch)
    per_sample = F.cross_entropy(logits, batch["labels"], reduction="none")
    per_sample.mean().backward()
    fns = {
        "grad_norm": lambda: gradient_norm(model.parameters()),
        "predictive_variance": lambda: predictive_variance(logits.detach()),
        "predictive_entropy": lambda: predictive_entropy(logits.detach()),
        "loss_variance": lambda: loss_variance(per_sample),
    }
    out = {}
    for name, fn in fns.items():
        for _ in range(10):
            scheduler.observe(fn())
        t = time.perf_counter()
        for _ in range(calls):
            scheduler.observe(fn())
        out[name] = 1e3 * (time.perf_counter() - t) / calls
    return out


def time_variants(build, forward, batch, steps, rounds):
    times = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant in VARIANTS:
            step = make_step(build(), forward, batch, variant)
            for _ in range(3):
                step()  # warm-up
            t = time.perf_counter()
            for _ in range(steps):
                step()
            times[variant].append((time.perf_counter() - t) / steps)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    alone = time_signals_alone(build, forward, batch)
    base_ms = 1e3 * med["baseline"]
    return {
        v: {
            "ms_per_step": 1e3 * med[v],
            "overhead_pct": 100 * (med[v] - med["baseline"]) / med["baseline"],
            "signal_ms": alone.get(v, 0.0),
            "signal_pct_of_step": 100 * alone.get(v, 0.0) / base_ms,
        }
        for v in VARIANTS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    result = {"threads": args.threads, "torch": torch.__version__}

    data = load_mnist()
    mnist_batch = {"x": data.x_train[:32], "labels": data.y_train[:32]}
    torch.manual_seed(0)
    result["lenet5_mnist_b32"] = time_variants(
        LeNet5, lambda m, b: m(b["x"]), mnist_batch, args.steps, args.rounds
    )

    try:
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError:
        result["bert"] = "transformers not installed"
    else:
        config = BertConfig(
            hidden_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=1024,
            num_labels=2,
        )
        g = torch.Generator().manual_seed(0)
        bert_batch = {
            "input_ids": torch.randint(1000, 30000, (8, 128), generator=g),
            "attention_mask": torch.ones(8, 128, dtype=torch.long),
            "labels": torch.randint(0, 2, (8,), generator=g),
        }

        def forward(m, b):
            return m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits

        build = lambda: BertForSequenceClassification(config)  # noqa: E731
        result["bert_mini_b8_len128"] = time_variants(
            build, forward, bert_batch, max(5, args.steps // 6), args.rounds
        )
        model = build()
        probe = {
            "input_ids": bert_batch["input_ids"],
            "attention_mask": bert_batch["attention_mask"],
        }
        t = time.perf_counter()
        mc_dropout_variance(model, probe, passes=10, output_to_logits=lambda o: o.logits)
        result["bert_mc_dropout_probe_seconds_T10"] = time.perf_counter() - t

    out = repo_root() / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_signals.json").write_text(json.dumps(result, indent=2))
    for key, table in result.items():
        if isinstance(table, dict):
            print(key)
            for v, r in table.items():
                print(
                    f"  {v:22s} {r['ms_per_step']:8.2f} ms/step  {r['overhead_pct']:+6.1f}%   "
                    f"signal+observe alone {r['signal_ms']:.3f} ms = {r['signal_pct_of_step']:.2f}% of a step"
                )
        else:
            print(f"{key}: {table}")


if __name__ == "__main__":
    main()
