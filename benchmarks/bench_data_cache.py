"""What the ``datasets`` cache saves a run (not a test): each task's data preparation
timed in a fresh process with an empty cache (the first run of a task) and again
with the cache that first process filled (every later run).

Per task, the data preparation of one run of the default config, as the engine
does it before its first step:

- ``lstm``: IMDB reviews, the word vocabulary learnt, train/val/test token ids
  (:func:`uncertainty_lr_study.data.imdb.load_imdb`, the record's ``load``);
- ``minilm``: IMDB reviews, the MiniLM tokenizer's classifier inputs
  (:func:`uncertainty_lr_study.engine.hf_tasks.classification_task`);
- ``squad``: SQuAD questions, their windows for MiniLM
  (:func:`uncertainty_lr_study.engine.hf_tasks.question_answering_task`);
- ``mnist``: the IDX files through torchvision's reader (no tokenisation; for scale;
  its time includes importing the data package, torchvision and ``datasets``).

Each (task, cache state) is its own ``python`` process (interpreter start and
imports left out of the time except for ``mnist``: the clock starts after them), repeated
``--repeats`` times alternating cold and warm; medians of wall seconds.

Usage: python benchmarks/bench_data_cache.py [--tasks lstm,minilm,squad,mnist]
       [--repeats 3]
Writes benchmarks/out/bench_data_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys, time
task = sys.argv[1]
t0 = time.perf_counter()
if task == "mnist":
    from uncertainty_lr_study.data import load_mnist
    load_mnist()
else:
    name = {"lstm": "imdb-lstm", "minilm": "imdb-minilm", "squad": "squad-minilm"}[task]
    from uncertainty_lr_study.experiment import prepare_run
    s = prepare_run(None, "config/config.yaml", name, "constant", 0)
    t0 = time.perf_counter()
    if task == "lstm":
        from uncertainty_lr_study.tasks import DATA_SETS
        DATA_SETS["imdb"].load(s)
    else:
        from transformers import AutoTokenizer
        from uncertainty_lr_study.engine.hf_tasks import TASK_BUILDERS
        from uncertainty_lr_study.pretrained import resolve_pretrained
        tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(s.pretrained, offline=True))
        t0 = time.perf_counter()
        TASK_BUILDERS[s.dataset](s, tokenizer, s.max_length)
print(json.dumps({"seconds": time.perf_counter() - t0}))
'''


def once(task: str, cache: Path) -> float:
    env = {**os.environ, "UNCERTAINTY_LR_DATASETS_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", WORKER, task], cwd=ROOT, env=env, check=True,
        capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="lstm,minilm,squad,mnist")
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    result: dict[str, dict[str, list[float]]] = {}
    for task in a.tasks.split(","):
        result[task] = {"cold": [], "warm": []}
        for _ in range(a.repeats):
            cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
            try:
                result[task]["cold"].append(once(task, cache))
                result[task]["warm"].append(once(task, cache))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    print(f"{'task':8} {'first run (s)':>14} {'later run (s)':>14} {'saved (s)':>10}")
    for task, times in result.items():
        cold, warm = statistics.median(times["cold"]), statistics.median(times["warm"])
        print(f"{task:8} {cold:14.2f} {warm:14.2f} {cold - warm:10.2f}")
    out = ROOT / "benchmarks" / "out"
    out.mkdir(exist_ok=True)
    (out / "bench_data_cache.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
