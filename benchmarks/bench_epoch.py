"""Speed of the training engine and of the pipeline's per-run overhead (not a test).

Measures, in one process, on the CPU with one thread (as the pipeline runs jobs):

1. one MNIST epoch (55,000 images, batch 32, LeNet-5, Adam) of the engine
   (`uncertainty_lr.training.train_classifier`, signals and logging included,
   validation passes excluded), against
2. one epoch of a plain PyTorch loop over a `DataLoader` of the same tensors
   (shuffle, batch 32), same model and optimizer, no signals;
3. the papermill overhead of one pipeline run: `papermill notebooks/train.ipynb`
   on a tiny run, minus the same run called in-process.

Usage: python benchmarks/bench_epoch.py [--repeats 2] [--threads 1]
Prints a table; writes benchmarks/out/bench_epoch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from uncertainty_lr.config import RunSettings
from uncertainty_lr.data import load_mnist
from uncertainty_lr.models import LeNet5
from uncertainty_lr.paths import repo_root
from uncertainty_lr.training import evaluate, train_classifier


def settings(**kw) -> RunSettings:
    base = dict(
        task="mnist",
        dataset="mnist",
        model="lenet5",
        scheduler="uncertainty-variance",
        seed=0,
        epochs=1,
        lr=1e-3,
        batch_size=32,
        target_metric="val_accuracy",
        target_value=0.99,
        device="cpu",
        sample_every_steps=50,
    )
    base.update(kw)
    return RunSettings(**base)


def engine_epoch(data, tmp: Path) -> float:
    """Seconds of one engine epoch, without its two validation passes."""
    train_classifier(settings(), tmp)
    hist = pd.read_csv(tmp / "history.csv")
    evals = hist[hist["kind"] == "eval"]
    model = LeNet5()
    t = time.perf_counter()
    evaluate(model, data.x_val, data.y_val)
    t_eval = time.perf_counter() - t
    # 'seconds' is stamped after each validation pass: remove the final one
    return float(evals["seconds"].iloc[-1] - evals["seconds"].iloc[0]) - t_eval


def plain_epoch(data) -> float:
    torch.manual_seed(0)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=32, shuffle=True)
    t = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t


def papermill_overhead(tmp: Path) -> tuple[float, float]:
    """(papermill seconds, in-process seconds) of the same tiny run."""
    tiny = settings(train_subset=320, epochs=1).to_dict()
    t = time.perf_counter()
    train_classifier(RunSettings(**tiny), tmp / "direct")
    direct = time.perf_counter() - t
    params = json.dumps({"settings": tiny, "out_dir": str(tmp / "pm"), "progress": False})
    bin_dir = Path(sys.executable).parent
    t = time.perf_counter()
    subprocess.run(
        [
            str(bin_dir / "papermill"),
            "notebooks/train.ipynb",
            str(tmp / "pm.ipynb"),
            "-k",
            "python3",
            "--no-progress-bar",
            "-y",
            params,
        ],
        cwd=repo_root(),
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    return time.perf_counter() - t, direct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    data = load_mnist()
    engine, plain = [], []
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.repeats):  # alternate, so drift hits both alike
            engine.append(engine_epoch(data, Path(d) / f"e{i}"))
            torch.set_num_threads(args.threads)
            plain.append(plain_epoch(data))
        pm, direct = papermill_overhead(Path(d))
    result = {
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "engine_epoch_seconds": engine,
        "plain_epoch_seconds": plain,
        "engine_median": statistics.median(engine),
        "plain_median": statistics.median(plain),
        "papermill_run_seconds": pm,
        "in_process_run_seconds": direct,
        "papermill_overhead_seconds": pm - direct,
    }
    out = repo_root() / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_epoch.json").write_text(json.dumps(result, indent=2))
    print(f"one MNIST epoch, {args.threads} thread(s), median of {args.repeats}:")
    print(f"  engine (signals + logging)  {result['engine_median']:7.2f} s")
    print(f"  plain DataLoader loop       {result['plain_median']:7.2f} s")
    print(f"  ratio engine / plain        {result['engine_median'] / result['plain_median']:7.2f}")
    print(
        f"papermill overhead per run    {result['papermill_overhead_seconds']:7.2f} s "
        f"({pm:.2f} s via papermill vs {direct:.2f} s in process)"
    )


if __name__ == "__main__":
    main()
