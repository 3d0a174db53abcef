"""Precision chosen by the hardware (``precision: auto``) and the progress lines of a
training job: the rule on mocked CPUID flags, ISA caps and CUDA, under a real ISA
cap in a subprocess, and in real runs of both backends and of the pipeline's
papermill command, whose log file shows the progress while the job runs."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from uncertainty_lr_study import precision
from uncertainty_lr_study.config import ConfigError, RunSettings, load_config, resolve_run
from uncertainty_lr_study.precision import choose_precision, resolve_precision
from uncertainty_lr_study.engine import ProgressLog, progress_interval, train_classifier

from helpers import mnist_settings, transformer_settings

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
PROGRESS = re.compile(
    r"progress: step (\d+)/(\d+) \((\d+)%\), ([0-9.e+]+) steps/s, ETA (\S+), "
    r"last (val_\w+) (none yet|[0-9.]+)"
)
NATIVE_HERE = bool(set(precision.cpu_flags() or ()) & set(precision.NATIVE_BF16_FLAGS))


@pytest.fixture
def no_caps(monkeypatch):
    """No ISA cap in the environment, and ATen's vector kernels on: the flags decide."""
    for name in (*precision.ISA_CAP_VARIABLES, "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


def flags(monkeypatch, *names, bf16_pays=True):
    """Mocked CPUID flags; ``bf16_pays``: what the timed probe finds (AVX512-BF16
    without AMX asks it)."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", *names}))
    monkeypatch.setattr(precision, "bf16_probe", lambda: (1.0, 0.5 if bf16_pays else 2.0))


# --- the rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_flags", "pays", "expected"),
    [((), True, "fp32"), (("avx512_bf16",), True, "bf16"), (("avx512_bf16",), False, "fp32"),
     (("amx_bf16", "amx_tile"), False, "bf16")],
)
def test_auto_follows_the_cpuid_flags(monkeypatch, no_caps, cpu_flags, pays, expected):
    """AMX: bfloat16; AVX512-BF16 alone: bfloat16 only where the probe finds it not
    slower; neither: float32."""
    flags(monkeypatch, *cpu_flags, bf16_pays=pays)
    used, why = choose_precision("auto", CPU)
    assert used == expected == resolve_precision("auto", CPU)
    if not cpu_flags:
        assert why == "auto: CPU without native bfloat16 (flags: no avx512_bf16/amx_bf16)"
    elif "amx_bf16" in cpu_flags:
        assert why.startswith("auto: CPU with native bfloat16 (flags: ")
    else:
        assert "but no AMX" in why and ("not slower" in why) == pays


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX2", "fp32"),
        ("ONEDNN_MAX_CPU_ISA", "avx512_core", "fp32"),  # oneDNN reads it in any case
        ("DNNL_MAX_CPU_ISA", "AVX512_CORE_VNNI", "fp32"),  # the older name
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", "bf16"),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", "bf16"),
        ("ONEDNN_MAX_CPU_ISA", "ALL", "bf16"),
    ],
)
def test_an_isa_cap_below_avx512_core_bf16_makes_auto_fp32(
    monkeypatch, no_caps, variable, value, expected
):
    flags(monkeypatch, "avx512_bf16")
    monkeypatch.setenv(variable, value)
    used, why = choose_precision("auto", CPU)
    assert used == expected
    if expected == "fp32":
        assert f"{variable}={value.upper()} caps oneDNN below AVX512_CORE_BF16" in why


def test_an_unknown_isa_cap_is_named(monkeypatch, no_caps, caplog):
    flags(monkeypatch, "avx512_bf16")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX3")
    with caplog.at_level(logging.WARNING, logger="uncertainty_lr_study.precision"):
        assert resolve_precision("auto", CPU) == "bf16"
    assert "ONEDNN_MAX_CPU_ISA=AVX3 is not an ISA this project knows" in caplog.text


def test_aten_without_vector_kernels_makes_auto_fp32(monkeypatch, no_caps):
    flags(monkeypatch, "avx512_bf16")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert choose_precision("auto", CPU) == (
        "fp32",
        "auto: ATen's CPU capability is DEFAULT (ATEN_CPU_CAPABILITY): no vector kernels",
    )


@pytest.mark.parametrize(("seconds", "expected"), [((1.0, 2.0), "fp32"), ((1.0, 1.0), "bf16")])
def test_without_flags_a_timed_probe_decides(monkeypatch, no_caps, seconds, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)  # e.g. macOS
    monkeypatch.setattr(precision, "bf16_probe", lambda: seconds)
    used, why = choose_precision("auto", CPU)
    assert used == expected and why.startswith("auto: no CPU flags to read; a bfloat16 matrix")


def test_the_real_probe_times_both_products():
    fp32, bf16 = precision.bf16_probe(size=64, repeats=2)
    assert 0 < fp32 < 1 and 0 < bf16 < 1


def test_the_flags_come_from_proc_cpuinfo(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    assert precision.cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # Linux on ARM
    assert precision.cpu_flags() is None
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "absent")  # not Linux
    assert precision.cpu_flags() is None


@pytest.mark.parametrize(("major", "expected"), [(8, "bf16"), (7, "fp32")])
def test_cuda_needs_native_bf16_not_emulation(monkeypatch, major, expected):
    def is_bf16_supported(including_emulation=True):  # torch's answer for a `major`.x GPU
        return major >= 8 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    used, why = choose_precision("auto", torch.device("cuda"))
    assert used == expected and why.startswith("auto: CUDA device with")


def test_fp32_and_bf16_are_forced(monkeypatch, no_caps, caplog):
    flags(monkeypatch)  # no native bfloat16
    assert choose_precision("fp32", CPU) == ("fp32", "fp32: set in the config")
    with caplog.at_level(logging.WARNING, logger="uncertainty_lr_study.precision"):
        assert choose_precision("bf16", CPU) == ("bf16", "bf16: set in the config")
    assert "precision bf16 set in the config, but CPU without native bfloat16" in caplog.text
    flags(monkeypatch, "avx512_bf16")
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", CPU)


def _resolve_in_subprocess(**env: str) -> tuple[str, str]:
    caps = (*precision.ISA_CAP_VARIABLES, "ATEN_CPU_CAPABILITY")
    clean = {k: v for k, v in os.environ.items() if k not in caps}
    code = (
        "import torch; from uncertainty_lr_study.precision import choose_precision; "
        "print('|'.join(choose_precision('auto', torch.device('cpu'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    used, why = out.stdout.strip().splitlines()[-1].split("|")
    return used, why


def test_a_real_isa_cap_makes_auto_fp32_on_a_cpu_with_native_bf16():
    used, why = _resolve_in_subprocess(ONEDNN_MAX_CPU_ISA="AVX2")
    assert used == "fp32"
    if not NATIVE_HERE:
        pytest.skip(f"this CPU has no native bfloat16 ({why}): the cap is not what decides")
    assert why == "auto: ONEDNN_MAX_CPU_ISA=AVX2 caps oneDNN below AVX512_CORE_BF16"
    used, why = _resolve_in_subprocess()  # the same CPU, no cap: the flags decide
    assert "caps oneDNN" not in why and (used == "bf16") == ("not slower" in why or "amx" in why)
    assert _resolve_in_subprocess(ATEN_CPU_CAPABILITY="default")[0] == "fp32"


def test_the_config_defaults_transformer_tasks_to_auto():
    config = load_config(REPO / "config" / "config.yaml")
    assert resolve_run(config, "imdb-minilm", "cosine", 0).precision == "auto"
    assert resolve_run(config, "mnist", "constant", 0).precision == "fp32"  # the plain loop
    for name in ("smoke.yaml", "paper.yaml"):
        config = load_config(REPO / "config" / name)
        assert resolve_run(config, "squad-minilm", "cosine", 0).precision == "auto"
    with pytest.raises(ConfigError, match="precision: .*auto, fp32 or bf16"):
        RunSettings.from_dict({**mnist_settings().to_dict(), "precision": "fp16"})


# --- progress lines ---------------------------------------------------------------


def progress_lines(text: str) -> list[re.Match]:
    return [m for m in map(PROGRESS.search, text.splitlines()) if m]


def test_progress_interval_comes_from_the_environment(monkeypatch, caplog):
    monkeypatch.delenv("UNCERTAINTY_LR_PROGRESS_SECONDS", raising=False)
    assert progress_interval() == 30
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("UNCERTAINTY_LR_PROGRESS_SECONDS", bad)
        with pytest.raises(ConfigError, match="UNCERTAINTY_LR_PROGRESS_SECONDS must be"):
            progress_interval()
    with caplog.at_level(logging.INFO, logger="uncertainty_lr_study.engine"):
        quiet = ProgressLog(100, "val_accuracy", interval=math.inf)
        for step in range(1, 101):
            quiet.update(step)
        assert not caplog.records


def test_a_progress_line_has_every_field(caplog):
    progress = ProgressLog(5160, "val_accuracy", done=1000, interval=0)
    progress.t0 -= 200.0  # 200 s for the 200 steps of this process: 1 step/s
    with caplog.at_level(logging.INFO, logger="uncertainty_lr_study.engine"):
        progress.update(1200, {"val_accuracy": 0.98123, "val_loss": 0.1})
    (line,) = caplog.messages
    assert re.fullmatch(
        r"progress: step 1200/5160 \(23%\), 1 steps/s, ETA 1h06m, last val_accuracy 0\.9812",
        line,
    )


def test_a_line_comes_at_least_every_interval_while_no_step_does(caplog):
    """A long evaluation or the test pass sends no update: the timer writes the line,
    at most ``interval`` apart; close() stops it."""
    interval = 0.25
    with caplog.at_level(logging.INFO, logger="uncertainty_lr_study.engine"):
        progress = ProgressLog(100, "val_accuracy", interval=interval)
        progress.update(0, {"val_accuracy": 0.5})  # the step-0 evaluation starts the timer
        progress.update(7)
        time.sleep(6 * interval)  # no update: e.g. a long evaluation
        progress.close()
        stamps = [r.created for r in caplog.records]
        time.sleep(3 * interval)
    assert len(caplog.records) == len(stamps) >= 4  # none after close()
    assert all(m.startswith("progress: step 7/100 (7%)") for m in caplog.messages)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert max(gaps) < interval * 1.6, gaps  # scheduling noise aside, one per interval


def test_plain_run_logs_progress_and_records_fp32(monkeypatch, caplog, tmp_path):
    monkeypatch.setenv("UNCERTAINTY_LR_PROGRESS_SECONDS", "0")
    with caplog.at_level(logging.INFO, logger="uncertainty_lr_study.engine"):
        metrics = train_classifier(
            mnist_settings(train_subset=320, epochs=1, val_subset=200), tmp_path
        )
    lines = progress_lines(caplog.text)
    assert len(lines) >= metrics["steps"]  # one per step at interval 0
    step, total, pct, rate, eta, metric, value = lines[-1].groups()
    assert (int(step), int(total), int(pct), metric) == (10, 10, 100, "val_accuracy")
    assert float(rate) > 0 and eta == "0s" and 0 <= float(value) <= 1
    assert lines[0].group(7) != "none yet"  # the step-0 evaluation comes first
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["precision"] == "fp32" and saved["precision_requested"] == "fp32"


def test_trainer_run_records_the_precision_it_used_and_logs_progress(
    tiny_checkpoint, monkeypatch, no_caps, caplog, tmp_path
):
    from uncertainty_lr_study.analysis.aggregate import aggregate
    from uncertainty_lr_study.analysis.latex import setup_tex
    from uncertainty_lr_study.engine.trainer import train_transformer

    monkeypatch.setenv("UNCERTAINTY_LR_PROGRESS_SECONDS", "0")
    settings = transformer_settings(tiny_checkpoint, precision="auto")
    results = {}
    for name, cpu_flags in (("without", ()), ("with", ("avx512_bf16",))):
        flags(monkeypatch, *cpu_flags)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="uncertainty_lr_study"):
            train_transformer(settings, tmp_path / name)
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        lines = progress_lines(caplog.text)
        assert len(lines) >= 6 and lines[-1].group(1, 2, 3) == ("6", "6", "100")
        assert lines[-1].group(6) == "val_accuracy" and lines[-1].group(7) != "none yet"
    without, with_ = results["without"], results["with"]
    assert (without["precision"], without["precision_requested"]) == ("fp32", "auto")
    assert without["precision_reason"] == (
        "auto: CPU without native bfloat16 (flags: no avx512_bf16/amx_bf16)"
    )
    assert (with_["precision"], with_["precision_requested"]) == ("bf16", "auto")
    # bfloat16 autocast reached the Trainer: the same run computes other numbers
    assert with_["final_val"]["loss"] != without["final_val"]["loss"]
    runs, _ = aggregate([tmp_path / "without" / "metrics.json"])
    assert runs["precision"].tolist() == ["fp32"]
    table, _ = setup_tex(runs)
    assert "precision & float32, chosen by the hardware (auto) \\\\" in table


def test_papermill_job_log_shows_progress_while_the_job_runs(tmp_path):
    """The train rule's command (papermill's stdout and stderr appended to the job's
    log file) on a tiny MNIST run: progress lines are in the file before papermill
    ends, as `tail -f` would show them."""
    settings = mnist_settings(train_subset=1600, epochs=1, val_subset=500, eval_every_steps=10)
    parameters = yaml.safe_dump(
        {"settings": settings.to_dict(), "out_dir": str(tmp_path / "run"), "progress": False},
        default_flow_style=True,
        width=math.inf,
    ).strip()
    log_file = tmp_path / "seed0.log"
    command = (
        f"papermill {shlex.quote(str(REPO / 'notebooks' / 'train.ipynb'))} "
        f"{shlex.quote(str(tmp_path / 'train.ipynb'))} -k python3 --no-progress-bar "
        f"-y {shlex.quote(parameters)} >> {shlex.quote(str(log_file))} 2>&1"
    )
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "UNCERTAINTY_LR_PROGRESS_SECONDS": "0.2",
    }
    job = subprocess.Popen(command, shell=True, cwd=REPO, env=env)
    seen_while_running = []
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        if log_file.exists():
            lines = progress_lines(log_file.read_text(errors="replace"))
            if lines and job.poll() is None:
                seen_while_running = lines
        time.sleep(0.1)
    assert job.wait(timeout=60) == 0, log_file.read_text(errors="replace")
    assert seen_while_running, "no progress line reached the log before papermill ended"
    final = progress_lines(log_file.read_text())
    assert len(final) >= 2 and int(final[-1].group(1)) > int(final[0].group(1))
    assert {m.group(2) for m in final} == {"50"}
