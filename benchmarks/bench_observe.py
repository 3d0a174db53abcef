"""Per-step cost of ``UncertaintyLR.observe()`` + ``step()``, this version against an
earlier commit's, side by side in one process (not a test).

One "step" here is what a training loop adds for the scheduler: ``observe`` of a
gradient norm (a 0-d tensor, as ``gradient_norm`` returns it, or a Python float)
then ``step()``, deciding every ``--interval`` steps. The earlier version is read
with ``git show <rev>:src/uncertainty_lr/schedulers.py`` (where it lived before the
library moved to ``scheduler.py``) and imported from a
temporary file. Variants alternate within each round; the median over rounds of
the mean microseconds per step is printed. On CUDA (when available) the tensor
lives on the GPU, where the earlier version's per-observe ``.item()`` waits for
the GPU each step.

Usage: python benchmarks/bench_observe.py [--rev 073a0b7] [--steps 2000] [--rounds 7]
Writes benchmarks/out/bench_observe.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from uncertainty_lr import UncertaintyLR
from uncertainty_lr_study.paths import repo_root


def old_class(rev: str):
    """``UncertaintyLR`` of commit ``rev``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:src/uncertainty_lr/schedulers.py"],
        cwd=repo_root(), capture_output=True, text=True, check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_schedulers.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_schedulers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_schedulers"] = module
    spec.loader.exec_module(module)
    return module.UncertaintyLR


def per_step_us(cls, device: str, kind: str, steps: int, interval: int) -> float:
    """Mean microseconds of observe + step over ``steps`` steps."""
    param = torch.nn.Parameter(torch.zeros(1, device=device))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = cls(optimizer, threshold=0.1, decision_interval=interval, max_lr=1.0)
    values = torch.rand(steps, device=device) * 0.2  # around the threshold
    signals = list(values.cpu().tolist()) if kind == "float" else list(values.unbind())
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for value in signals:
        scheduler.observe(value)
        scheduler.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="073a0b7")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interval", type=int, default=100, help="steps per decision")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")  # torch's warning on step() before optimizer.step()
    classes = {"before": old_class(args.rev), "now": UncertaintyLR}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    times: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(args.rounds):
        for device in devices:
            for kind in ("tensor", "float"):
                for name, cls in classes.items():
                    t = per_step_us(cls, device, kind, args.steps, args.interval)
                    times.setdefault((device, kind, name), []).append(t)
    rows = []
    print(f"observe + step, decision every {args.interval} steps; median of {args.rounds} "
          f"rounds of {args.steps} steps ({platform.processor() or platform.machine()}, "
          f"torch {torch.__version__})")
    print(f"{'device':6} {'signal':7} {'before us':>10} {'now us':>8} {'ratio':>6}")
    for device in devices:
        for kind in ("tensor", "float"):
            before = statistics.median(times[(device, kind, "before")])
            now = statistics.median(times[(device, kind, "now")])
            rows.append({"device": device, "signal": kind, "before_us": before, "now_us": now})
            print(f"{device:6} {kind:7} {before:10.2f} {now:8.2f} {now / before:6.2f}")
    out = repo_root() / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_observe.json").write_text(json.dumps({"rev": args.rev, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
