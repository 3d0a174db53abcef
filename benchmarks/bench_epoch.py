"""Speed of the training engine, side by side with an older engine and a plain loop
(not a test).

Three arms time one training epoch each, one thread, on the CPU (as the pipeline
runs jobs), for ``--task mnist`` (LeNet-5, all 55,000 training images) or ``--task
lstm`` (the IMDB LSTM of the default config on ``--train-subset`` reviews):

- ``engine``: this checkout's :func:`uncertainty_lr_study.engine.train_classifier` with the
  ``uncertainty-variance`` schedule (both signals, history rows, divergence checks),
  from the end of its step-0 validation to the end of the validation after the epoch
  (its history's ``seconds``): one epoch and one validation pass;
- ``old``: the same run of the engine of ``--old-commit`` (default 073a0b7), from a
  temporary git worktree (or ``--old-src``, a ``src`` folder);
- ``plain``: the loop of pytorch/examples' ``mnist/main.py``: a ``DataLoader`` with
  shuffle and batch 32, ``model.train()``, then per batch zero_grad, forward,
  cross-entropy, backward, ``optimizer.step()`` (``loss.item()`` every 10 batches,
  where the example prints it), and its test pass over the validation set (batch
  1000, ``no_grad``, summed loss and correct count). Same model, Adam, data.

Each arm is a worker process that loads the data once and then times one epoch per
request; the rounds alternate the arms' order (ABC, CBA, ...), so that the machine's
drift hits all alike. Reported: every round's seconds, the medians, the two ratios
``engine / old`` and ``engine / plain`` (of the medians, and the median of the
per-round ratios), a torch.profiler table of each arm's training steps on a shorter
epoch (validation and test passes left out), and the per-step cost of Adam's three
CPU implementations (``foreach=False``, the CPU default; ``foreach=True``;
``fused=True``) with whether each trains bit for bit as the default. Set
``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` to emulate a plain AVX2 CPU.

Usage: python benchmarks/bench_epoch.py [--task mnist|lstm] [--repeats 5] [--threads 1]
       [--clock wall|cpu]  (cpu: each worker's CPU time, steadier on a shared machine)
       [--papermill]  (also: the papermill overhead of one pipeline run)
Writes benchmarks/out/bench_epoch_<task>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = ("engine", "old", "plain")
LSTM = {
    "task": "imdb-lstm",
    "dataset": "imdb",
    "model": "lstm",
    "max_length": 256,
    "truncation": "head",
    "vocab_size": 20000,
    "min_frequency": 2,
    "model_params": {"embedding_dim": 128, "hidden_size": 128, "dropout": 0.3},
    "target_value": 0.8,
    "sample_every_steps": 20,
    "val_subset": 1000,
    "test_subset": 200,
}


def settings(task: str, train_subset: int, **kw):
    RunSettings = study("config").RunSettings

    base = {
        "task": "mnist",
        "dataset": "mnist",
        "model": "lenet5",
        "scheduler": "uncertainty-variance",
        "seed": 0,
        "epochs": 1,
        "lr": 1e-3,
        "batch_size": 32,
        "target_metric": "val_accuracy",
        "target_value": 0.99,
        "device": "cpu",
        "sample_every_steps": 50,
        "eval_every_steps": 0,
        "train_subset": train_subset,
    }
    if task == "lstm":
        base.update(LSTM)
    return RunSettings(**{**base, **kw})


def study(name: str):
    """The study's module ``name`` (``"config"``, ``"engine.torch_loop"``, ...) of the
    checkout whose ``uncertainty_lr`` is imported (``PYTHONPATH``): its
    ``uncertainty_lr_study`` since the library and the study were split,
    ``uncertainty_lr`` itself before (``--old-commit`` 073a0b7, whose engine module
    was ``training``). Decided by the files of that checkout, not by what else is on
    the path (this project's environment also puts its own ``src`` there)."""
    import importlib

    import uncertainty_lr

    src = Path(uncertainty_lr.__file__).resolve().parents[1]
    if (src / "uncertainty_lr_study").is_dir():
        module = importlib.import_module(f"uncertainty_lr_study.{name}")
        assert Path(module.__file__).resolve().is_relative_to(src), (module.__file__, src)
        return module
    old = {"engine.torch_loop": "training"}.get(name, name)
    return importlib.import_module(f"uncertainty_lr.{old}")


# ---------------------------------------------------------------- worker process


def engine_epoch(s, out: Path) -> float:
    """Seconds from the end of the step-0 validation to the end of the last one."""
    import pandas as pd

    train_classifier = study("engine.torch_loop").train_classifier

    train_classifier(s, out)
    evals = pd.read_csv(out / "history.csv").query("kind == 'eval'")
    return float(evals["seconds"].iloc[-1] - evals["seconds"].iloc[0])


def plain_epoch(s, data, test: bool = True) -> float:
    """One epoch and the test pass of pytorch/examples' mnist/main.py (its Adadelta
    and StepLR aside: Adam, as the engine), on the engine's tensors."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    build_model = study("models").build_model

    n_train, n_val = s.train_subset or len(data.x_train), s.val_subset or len(data.x_val)
    train = TensorDataset(data.x_train[:n_train], data.y_train[:n_train])
    val = TensorDataset(data.x_val[:n_val], data.y_val[:n_val])
    train_loader = DataLoader(train, batch_size=s.batch_size, shuffle=True)
    test_loader = DataLoader(val, batch_size=1000)
    torch.manual_seed(s.seed)
    kwargs = {**getattr(data, "model_kwargs", {}), **s.model_params}
    model = build_model(s.model, data.num_classes, **kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    t = time.perf_counter()
    model.train()
    logged = []
    for batch_idx, (x, target) in enumerate(train_loader):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:
            logged.append(loss.item())
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for x, target in test_loader if test else ():
            output = model(x)
            test_loss += F.cross_entropy(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    return time.perf_counter() - t


def profile_table(arm: str, run, rows: int, classes: int) -> str:
    """torch.profiler's top ``rows`` operations by self CPU time of ``run()``, with
    the validation and test passes left out: an engine's ``evaluate`` returns zeros
    at once, the plain loop skips its test pass."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    training = study("engine.torch_loop")

    real = training.evaluate
    if arm != "plain":
        training.evaluate = lambda model, x, y, *a, **k: (0.0, torch.zeros(len(y), classes))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
    finally:
        training.evaluate = real
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def worker(a: argparse.Namespace) -> None:
    """Serve requests on stdin ('run', 'profile'), one JSON line each on stdout."""
    arm, task, threads = a.worker, a.task, a.threads
    if a.clock == "cpu":  # every clock of this process, the engine's history too
        time.perf_counter = time.process_time
    import torch

    import uncertainty_lr
    tasks = study("tasks")

    reply, sys.stdout = sys.stdout, sys.stderr  # the engine's output stays off the pipe
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    s = settings(task, a.train_subset)
    loaded = {}

    def load_once(name, real):  # every epoch reads the same data: load it once
        def load(run_settings):
            if name not in loaded:
                loaded[name] = real(run_settings)
            return loaded[name]

        return load

    if hasattr(tasks, "DATA_SETS"):  # one record per data set (after the redesign)
        for name, record in list(tasks.DATA_SETS.items()):
            if record.load is not None:
                tasks.DATA_SETS[name] = dataclasses.replace(record, load=load_once(name, record.load))
        data = tasks.DATA_SETS[s.dataset].load(s)
    else:  # 073a0b7's parallel dicts
        for name, real in list(tasks.DATASETS.items()):
            tasks.DATASETS[name] = load_once(name, real)
        data = tasks.DATASETS[s.dataset](s)
    tmp = Path(tempfile.mkdtemp())

    def run(run_settings, test: bool = True) -> float:
        torch.set_num_threads(threads)
        if arm == "plain":
            return plain_epoch(run_settings, data, test)
        return engine_epoch(run_settings, Path(tempfile.mkdtemp(dir=tmp)))

    ready = {"capability": torch.backends.cpu.get_cpu_capability(), "src": uncertainty_lr.__file__}
    print(json.dumps(ready), file=reply, flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            print(json.dumps({"seconds": run(s)}), file=reply, flush=True)
        elif line.strip() == "profile":
            short = settings(task, a.profile_subset)
            table = profile_table(arm, lambda s=short: run(s, test=False), 12, data.num_classes)
            print(json.dumps({"table": table}), file=reply, flush=True)


# ---------------------------------------------------------------- driver


def adam_variants(task: str, threads: int, steps: int = 20) -> dict[str, dict[str, float]]:
    """ms per Adam step of each CPU implementation on the task's model, and whether
    ``steps`` steps on the same gradients give the default's weights bit for bit."""
    import torch

    models = study("models")
    LeNet5, LSTMClassifier = models.LeNet5, models.LSTMClassifier

    torch.set_num_threads(threads)
    make = LeNet5 if task == "mnist" else (lambda: LSTMClassifier(vocab_size=20000))
    out, reference = {}, None
    for name, kw in (
        ("foreach=False", {"foreach": False}),
        ("foreach=True", {"foreach": True}),
        ("fused=True", {"fused": True}),
    ):
        torch.manual_seed(0)
        model = make()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
        times = []
        for k in range(steps):
            for p in model.parameters():
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(k))
            t = time.perf_counter()
            optimizer.step()
            times.append(time.perf_counter() - t)
        weights = [p.detach().clone() for p in model.parameters()]
        reference = reference or weights
        same = all(torch.equal(a, b) for a, b in zip(reference, weights))
        out[name] = {"ms_per_step": 1000 * statistics.median(times), "same_as_default": same}
    return out


def cpu_description() -> dict[str, object]:
    info = {"model": platform.processor() or platform.machine(), "flags": ""}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        info = {"model": fields.get("Model name", "").strip(), "flags": fields.get("Flags", "")}
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = set(info.pop("flags").split())
    info["avx512_bf16"] = "avx512_bf16" in flags
    info["amx"] = sorted(f for f in flags if f.startswith("amx"))
    info["ONEDNN_MAX_CPU_ISA"] = os.environ.get("ONEDNN_MAX_CPU_ISA")
    info["ATEN_CPU_CAPABILITY"] = os.environ.get("ATEN_CPU_CAPABILITY")
    return info


def start_worker(arm: str, src: Path, a: argparse.Namespace) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "UNCERTAINTY_LR_ROOT": str(REPO)}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        arm,
        "--task",
        a.task,
        "--threads",
        str(a.threads),
        "--train-subset",
        str(a.train_subset),
        "--profile-subset",
        str(a.profile_subset),
        "--clock",
        a.clock,
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    ready = json.loads(proc.stdout.readline())
    if not Path(ready["src"]).is_relative_to(src):
        raise RuntimeError(f"the {arm} worker imported {ready['src']}, not the code in {src}")
    return proc, ready


def ask(proc: subprocess.Popen, request: str) -> dict:
    proc.stdin.write(request + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"a worker stopped (exit {proc.wait()}); see its error above")
    return json.loads(line)


def measure(a: argparse.Namespace, old_src: Path) -> dict:
    sources = {"engine": REPO / "src", "old": old_src, "plain": REPO / "src"}
    workers = {arm: start_worker(arm, sources[arm], a) for arm in ARMS}
    seconds = {arm: [] for arm in ARMS}
    try:
        for r in range(a.repeats):
            for arm in ARMS if r % 2 == 0 else ARMS[::-1]:
                seconds[arm].append(ask(workers[arm][0], "run")["seconds"])
                print(f"round {r + 1} {arm:6s} {seconds[arm][-1]:7.2f} s", flush=True)
        profiles = {arm: ask(workers[arm][0], "profile")["table"] for arm in ARMS}
    finally:
        for proc, _ in workers.values():
            proc.stdin.close()
            proc.wait()
    median = {arm: statistics.median(v) for arm, v in seconds.items()}
    paired = {
        other: [e / o for e, o in zip(seconds["engine"], seconds[other])]
        for other in ("old", "plain")
    }
    return {
        "cpu_capability": workers["engine"][1]["capability"],
        "seconds": seconds,
        "median_seconds": median,
        "spread_seconds": {arm: [min(v), max(v)] for arm, v in seconds.items()},
        "engine_over_old": median["engine"] / median["old"],
        "engine_over_plain": median["engine"] / median["plain"],
        "median_paired_engine_over_old": statistics.median(paired["old"]),
        "median_paired_engine_over_plain": statistics.median(paired["plain"]),
        "profiles": profiles,
    }


def papermill_overhead(tmp: Path) -> tuple[float, float]:
    """(papermill seconds, in-process seconds) of the same tiny run."""
    RunSettings = study("config").RunSettings
    train_classifier = study("engine.torch_loop").train_classifier

    tiny = settings("mnist", 320).to_dict()
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
        cwd=REPO,
        check=True,
        capture_output=True,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    return time.perf_counter() - t, direct


def report(result: dict, a: argparse.Namespace) -> None:
    cpu = result["cpu"]
    print(
        f"\nCPU {cpu['model']}; avx512_bf16 {cpu['avx512_bf16']}, amx {cpu['amx'] or 'none'}; "
        f"torch {result['torch']}, ATen capability {result['cpu_capability']}, "
        f"ONEDNN_MAX_CPU_ISA={cpu['ONEDNN_MAX_CPU_ISA']}"
    )
    n = f"{a.train_subset:,}" if a.train_subset else "55,000"
    what = f"MNIST / LeNet-5, {n} images" if a.task == "mnist" else f"IMDB / LSTM, {n} reviews"
    print(
        f"one epoch + one validation pass, {what}, {a.threads} thread(s), {a.repeats} rounds, "
        f"{a.clock} clock:"
    )
    for arm in ARMS:
        runs = " ".join(f"{x:.2f}" for x in result["seconds"][arm])
        print(f"  {arm:6s} median {result['median_seconds'][arm]:7.2f} s   rounds: {runs}")
    print(
        f"  engine / old    {result['engine_over_old']:.3f} (median of rounds' ratios "
        f"{result['median_paired_engine_over_old']:.3f})  goal <= 0.85"
    )
    print(
        f"  engine / plain  {result['engine_over_plain']:.3f} (median of rounds' ratios "
        f"{result['median_paired_engine_over_plain']:.3f})  goal <= 0.80"
    )
    print("Adam per step on the CPU (same gradients, 20 steps):")
    for name, v in result["adam"].items():
        print(
            f"  {name:14s} {v['ms_per_step']:7.3f} ms  bit for bit as the default: "
            f"{v['same_as_default']}"
        )
    for arm, table in result["profiles"].items():
        print(f"\nprofile, {arm} (a {a.profile_subset}-example epoch), top by self CPU time:")
        print(table)
    if "papermill_overhead_seconds" in result:
        print(f"papermill overhead per run {result['papermill_overhead_seconds']:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("mnist", "lstm"), default="mnist")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="training examples (default: mnist all, lstm 1600)",
    )
    parser.add_argument("--profile-subset", type=int, default=None)
    parser.add_argument("--old-commit", default="073a0b7")
    parser.add_argument("--old-src", type=Path, default=None)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the workers' CPU time, not wall time (a shared machine)",
    )
    parser.add_argument("--papermill", action="store_true")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.train_subset is None:
        a.train_subset = 0 if a.task == "mnist" else 1600
    if a.profile_subset is None:
        a.profile_subset = 3200 if a.task == "mnist" else 320
    if a.worker:
        worker(a)
        return
    import torch

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that the worktree goes
    with tempfile.TemporaryDirectory() as tmp:
        old_src = a.old_src
        if old_src is None:
            tree = Path(tmp) / "old"
            made = subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), a.old_commit],
                cwd=REPO,
                check=False,
                capture_output=True,
                text=True,
            )
            if made.returncode:
                raise SystemExit(
                    f"no worktree of {a.old_commit} ({made.stderr.strip()}); pass --old-src "
                    "with the src folder of another checkout"
                )
            old_src = tree / "src"
        try:
            result = measure(a, old_src)
        finally:
            if a.old_src is None:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)],
                    cwd=REPO,
                    check=False,
                    capture_output=True,
                )
        result["adam"] = adam_variants(a.task, a.threads)
        if a.papermill:
            pm, direct = papermill_overhead(Path(tmp))
            result["papermill_overhead_seconds"] = pm - direct
    result.update(
        task=a.task,
        threads=a.threads,
        repeats=a.repeats,
        clock=a.clock,
        torch=torch.__version__,
        old=a.old_commit if a.old_src is None else str(a.old_src),
        cpu=cpu_description(),
    )
    report(result, a)
    out = REPO / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_epoch_{a.task}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
