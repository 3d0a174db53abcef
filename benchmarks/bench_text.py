"""Per-step cost of the IMDB models on the CPU (not a test): the choices behind the
default config.

Times one optimizer step (forward, backward, optimizer step; batch 32) of
  - the LSTM classifier (embedding 128, hidden 128, 256 tokens, Adam): unidirectional
    over the padded batch, as the study runs it, against bidirectional with packed
    sequences (``LSTMClassifier(bidirectional=True)``), with denormals flushed;
  - the offline MiniLM-L6 checkpoint with a new head (128 tokens, AdamW), in float32
    and under bfloat16 autocast (``precision: bf16`` in the config).
Token ids are random (the cost does not depend on them); lengths of the LSTM batch
are drawn between a third of the window and the whole of it. The median over
``--steps`` timed steps (after 2 warm-up steps) is reported.

Usage: python benchmarks/bench_text.py [--steps 5] [--threads 1]
Writes benchmarks/out/bench_text.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from uncertainty_lr_study.models import LSTMClassifier
from uncertainty_lr_study.pretrained import resolve_pretrained


def median_step_seconds(step, steps: int) -> float:
    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def lstm_step(bidirectional: bool):
    torch.manual_seed(0)
    model = LSTMClassifier(vocab_size=20_000, bidirectional=bidirectional)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(2, 20_000, (32, 256))
    for i, n in enumerate(torch.randint(85, 257, (32,)).tolist()):
        x[i, n:] = 0
    y = torch.randint(0, 2, (32,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def minilm_step(bf16: bool):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoModelForSequenceClassification  # noqa: PLC0415

    torch.manual_seed(0)
    path = resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5)
    x = torch.randint(1000, 20_000, (32, 128))
    y = torch.randint(0, 2, (32,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=x, attention_mask=torch.ones_like(x), labels=y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    results = {
        "lstm_unidirectional_padded": median_step_seconds(lstm_step(False), args.steps),
        "lstm_bidirectional_packed": median_step_seconds(lstm_step(True), args.steps),
        "minilm_fp32": median_step_seconds(minilm_step(False), args.steps),
        "minilm_bf16_autocast": median_step_seconds(minilm_step(True), args.steps),
    }
    for name, seconds in results.items():
        print(f"{name:30s} {1000 * seconds:8.1f} ms per optimizer step (batch 32)")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_text.json").write_text(
        json.dumps({"threads": args.threads, "seconds_per_step": results}, indent=2)
    )


if __name__ == "__main__":
    main()
