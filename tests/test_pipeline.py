"""End to end: the smoke config through the whole Snakemake pipeline (run once per
session by the ``smoke_repo`` fixture), and the workflow's own hygiene."""

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from uncertainty_lr_study.analysis.figures import FIGURES
from uncertainty_lr_study.config import load_config, planned_runs
from uncertainty_lr_study.paths import repo_root
from uncertainty_lr_study.registry import SCHEDULERS

pytestmark = pytest.mark.pipeline

SMOKE_RUNS = planned_runs(load_config(repo_root() / "config" / "smoke.yaml"))


def test_the_smoke_config_covers_every_task_and_backend():
    tasks = {task for task, _, _ in SMOKE_RUNS}
    assert tasks == {"mnist", "imdb-lstm", "imdb-minilm", "squad-minilm"}
    assert {s for t, s, _ in SMOKE_RUNS if t == "mnist"} == set(SCHEDULERS)
    study = {n for n, spec in SCHEDULERS.items() if spec.family in ("baseline", "uncertainty")}
    assert {s for t, s, _ in SMOKE_RUNS if t == "imdb-lstm"} == study


@pytest.mark.parametrize(("task", "name", "seed"), SMOKE_RUNS)
def test_every_run_wrote_its_outputs(smoke_repo, task, name, seed):
    run = smoke_repo / "results" / "smoke" / "runs" / task / name / f"seed{seed}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["scheduler"] == name and metrics["status"] == "completed"
    assert metrics["task"] == task and metrics["seed"] == seed
    if task == "squad-minilm":  # extractive QA: exact match and F1 on dev questions
        assert set(metrics["test"]) == {"loss", "exact_match", "f1"}
        assert 0 <= metrics["test"]["exact_match"] <= metrics["test"]["f1"] <= 1
        assert metrics["test_questions"] == 32 and metrics["train_questions"] == 48
    elif task == "mnist":
        assert 0.5 < metrics["test"]["accuracy"] <= 1.0
        assert metrics["settings"]["train_subset"] == 5000
    else:  # binary: precision, recall and F1 of the positive class too
        assert 0.3 < metrics["test"]["accuracy"] <= 1.0
        assert {"precision", "recall", "f1", "f1_macro"} <= set(metrics["test"])
    history = pd.read_csv(run / "history.csv")
    assert len(history) == metrics["history_rows"] > 5
    trace = pd.read_csv(run / "lr_trace.csv")  # rates after each scheduler call
    assert trace["lr_group0"].iloc[-1] == pytest.approx(metrics["final_lr"][0])
    evals = history[history["kind"] == "eval"]
    assert evals["step"].iloc[0] == 0 and evals["step"].iloc[-1] == metrics["steps"]
    executed = nbformat.read(run / "train.ipynb", as_version=4)
    assert any(c.get("outputs") for c in executed.cells if c.cell_type == "code")
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert not (run / "checkpoint").exists()


def test_aggregate_table_has_one_row_per_run(smoke_repo):
    runs = pd.read_csv(smoke_repo / "results" / "smoke" / "aggregate" / "runs.csv")
    assert sorted(zip(runs["task"], runs["scheduler"], runs["seed"])) == sorted(SMOKE_RUNS)
    # config order
    assert list(runs["task"].unique()) == ["mnist", "imdb-lstm", "imdb-minilm", "squad-minilm"]
    classification = runs[runs["task"] != "squad-minilm"]
    assert classification["test_accuracy"].between(0.3, 1.0).all()
    assert (classification["test_score"] == classification["test_accuracy"]).all()
    qa = runs[runs["task"] == "squad-minilm"]
    assert qa["test_accuracy"].isna().all() and (qa["test_score"] == qa["test_f1"]).all()
    assert qa["test_exact_match"].between(0, 1).all()
    history = pd.read_csv(smoke_repo / "results" / "smoke" / "aggregate" / "history.csv")
    assert set(zip(history["task"], history["scheduler"])) == {(t, s) for t, s, _ in SMOKE_RUNS}


def test_tables_and_numbers_come_from_the_runs(smoke_repo):
    runs = pd.read_csv(smoke_repo / "results" / "smoke" / "aggregate" / "runs.csv")
    table = (smoke_repo / "paper" / "generated" / "results_table.tex").read_text()
    assert r"\toprule" in table and r"\bottomrule" in table

    def cell(values):  # one seed: the value; several: mean +- sample standard deviation
        if len(values) == 1:
            return f"${100 * values.iloc[0]:.2f}$"
        return f"${100 * values.mean():.2f} \\pm {100 * values.std(ddof=1):.2f}$"

    for task, name in {(t, s) for t, s, _ in SMOKE_RUNS}:
        rows = runs[(runs["task"] == task) & (runs["scheduler"] == name)]
        f1 = rows["test_f1_macro"] if task == "mnist" else rows["test_f1"]
        first = rows["test_exact_match"] if task == "squad-minilm" else rows["test_accuracy"]
        assert f"\\texttt{{{name}}} & {cell(first)} & " in table
        assert f"{cell(f1)} &" in table
    numbers = (smoke_repo / "paper" / "generated" / "numbers.tex").read_text()
    assert r"\newcommand{\MnistEpochs}{3}" in numbers
    assert r"\newcommand{\UncertaintyGradnormThreshold}{0.1}" in numbers
    findings = (smoke_repo / "paper" / "generated" / "findings.tex").read_text()
    assert "uncertainty-gradnorm" in findings and "uncertainty-variance" in findings
    assert "On squad-minilm, the highest mean test F1" in findings
    setup = (smoke_repo / "paper" / "generated" / "setup.tex").read_text()
    assert "windows of 48 questions" in setup and "stride 32" in setup


def test_figures_and_pdf_exist_and_are_not_trivial(smoke_repo):
    for name in FIGURES:
        assert (smoke_repo / "figures" / f"{name}.pdf").stat().st_size > 5_000
        assert (smoke_repo / "figures" / f"{name}.png").stat().st_size > 10_000
    pdf = (smoke_repo / "paper" / "main.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
    log = (smoke_repo / "paper" / "main.log").read_text(errors="replace")
    pages = re.search(r"Output written on main.pdf \((\d+) pages", log)
    assert pages and int(pages.group(1)) >= 3
    assert "There were undefined references" not in log
    assert "Citation" not in log  # every citation resolved in the final pass


def test_comparison_controls_and_sensitivity_come_from_the_runs(smoke_repo):
    aggregate = smoke_repo / "results" / "smoke" / "aggregate"
    runs = pd.read_csv(aggregate / "runs.csv")
    table = pd.read_csv(aggregate / "comparison.csv")
    assert len(table) == runs.groupby(["task", "scheduler"]).ngroups
    mnist = table[table["task"] == "mnist"].set_index("scheduler")
    assert mnist["time_baseline"].nunique() == 1 and mnist["family"]["prodigy"] == "peer"
    tex = (smoke_repo / "paper" / "generated" / "comparison_table.tex").read_text()
    for name in SCHEDULERS:
        assert f"\\texttt{{{name}}}" in tex
    sens = pd.read_csv(aggregate / "sensitivity.csv")
    assert sorted(sens["label"]) == ["rel-threshold_1.1", "threshold_0.1", "threshold_1"]
    assert (sens["epochs"] == 2).all()
    text = (smoke_repo / "paper" / "generated" / "sensitivity.tex").read_text()
    assert "\\paragraph{Controls.}" in text and "\\paragraph{Sensitivity.}" in text
    assert "shuffled-variance" in text and "Do the thresholds transfer?" in text
    levels = pd.read_csv(aggregate / "signal_levels.csv")
    assert set(levels["task"]) == set(runs["task"]) and levels["fraction_above"].between(0, 1).all()
    for name in ("performance_profile", "sensitivity"):
        assert (smoke_repo / "figures" / f"{name}.png").stat().st_size > 10_000


def test_explore_notebook_runs_top_to_bottom_on_the_results(smoke_repo):
    import subprocess
    import sys

    out = smoke_repo / "explore-executed.ipynb"
    subprocess.run(
        [
            sys.executable, "-m", "papermill", "notebooks/explore.ipynb", str(out),
            "-p", "results_dir", "results/smoke", "-p", "tasks", "mnist",
            "-p", "schedulers", "cosine,uncertainty-gradnorm,shuffled-gradnorm",
            "-k", "python3", "--no-progress-bar",
        ],
        cwd=smoke_repo, check=True, capture_output=True, timeout=600,
    )
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    picked = {"cosine", "uncertainty-gradnorm", "shuffled-gradnorm"}
    n = len([r for r in SMOKE_RUNS if r[0] == "mnist" and r[1] in picked])
    assert f"{n} runs in the slice" in text
    assert (smoke_repo / "figures" / "explore" / "performance_profile.png").is_file()


def _lab_api(port: int, token: str, path: str, method: str = "GET") -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=b'{"name": "uncertainty-lr"}' if method == "POST" else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else {}


def test_make_lab_serves_the_notebooks_in_the_projects_kernel(smoke_repo, tmp_path):
    """`make lab`'s script registers the environment's kernel and starts JupyterLab at
    the repository root; the server lists both notebooks and starts that kernel, and
    both notebooks execute top to bottom in it."""
    import os
    import secrets
    import socket
    import subprocess
    import sys
    import time
    import urllib.error

    from jupyter_client import BlockingKernelClient

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = secrets.token_hex(16)
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [
            "scripts/lab.sh", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
            f"--IdentityProvider.token={token}",
            *(["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        ],
        cwd=smoke_repo, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                _lab_api(port, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "lab.log").read_text()) from None
                time.sleep(0.5)
        spec = _lab_api(port, token, "/api/kernelspecs")["kernelspecs"]["uncertainty-lr"]["spec"]
        assert spec["argv"][0] == sys.executable  # this environment's interpreter
        listed = {f["name"] for f in _lab_api(port, token, "/api/contents/notebooks")["content"]}
        assert {"train.ipynb", "explore.ipynb"} <= listed
        kernel = _lab_api(port, token, "/api/kernels", "POST")
        assert kernel["name"] == "uncertainty-lr"
        # a client on the kernel the server started (its connection file in the
        # runtime folder): it answers, and runs this environment's interpreter
        client = BlockingKernelClient()
        client.load_connection_file(str(tmp_path / "runtime" / f"kernel-{kernel['id']}.json"))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=180)
            said = []
            reply = client.execute_interactive(
                "import sys; print(sys.executable)", timeout=60,
                output_hook=lambda m: said.append(m["content"].get("text", "")),
            )
            assert reply["content"]["status"] == "ok"
            assert "".join(said).strip() == sys.executable
        finally:
            client.stop_channels()
        _lab_api(port, token, f"/api/kernels/{kernel['id']}", "DELETE")
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()

    runs = {
        "explore.ipynb": [
            "-p", "results_dir", "results/smoke", "-p", "tasks", "mnist",
            "-p", "schedulers", "cosine", "-p", "figures_dir", str(tmp_path / "figures"),
        ],
        "train.ipynb": ["-p", "scheduler", "constant", "-p", "out_dir", str(tmp_path / "run")],
    }
    for name, parameters in runs.items():
        out = tmp_path / name
        subprocess.run(
            [
                sys.executable, "-m", "papermill", f"notebooks/{name}", str(out), *parameters,
                "--no-progress-bar",  # no -k: the notebook's own kernelspec
            ],
            cwd=smoke_repo, env=env, check=True, capture_output=True, timeout=900,
        )
        assert nbformat.read(out, as_version=4).metadata.kernelspec.name == "uncertainty-lr"
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "completed"
    assert (tmp_path / "figures" / "performance_profile.png").is_file()


def test_second_dry_run_has_nothing_to_do(smoke_repo, run_snakemake):
    proc = run_snakemake(smoke_repo, "-n", "--configfile", "config/smoke.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_lint_is_clean(smoke_repo, run_snakemake):
    proc = run_snakemake(smoke_repo, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition" in out


def test_the_tables_rule_declares_what_write_tables_writes_and_the_paper_inputs():
    from uncertainty_lr_study.analysis.latex import GENERATED

    tex = (repo_root() / "paper" / "main.tex").read_text()
    inputs = set(re.findall(r"\\input\{generated/([^}]+)\}", tex))
    assert inputs == set(GENERATED)
    smk = (repo_root() / "workflow" / "rules" / "analysis.smk").read_text()
    assert "for name in GENERATED" in smk and "generated/comparison_table" not in smk


def test_paper_has_no_hand_typed_results():
    """The results section of the paper takes every number from generated files."""
    tex = (repo_root() / "paper" / "main.tex").read_text()
    results = tex.split(r"\section{Results}")[1].split(r"\section{Limitations}")[0]
    # labels, references, inputs, graphics, captions' first group and citation keys
    prose = re.sub(
        r"\\(ref|label|input|includegraphics|caption|citep|citet)(\[[^]]*\])?\{[^}]*\}",
        "",
        results,
    )
    prose = re.sub(r"\bF1\b", "", prose)  # the metric's name, not a number
    prose = re.sub(r"width=[0-9.]+\\textwidth", "", prose)
    prose = re.sub(r"\\begin\{minipage\}\[t\]\{[0-9.]+\\textwidth\}", "", prose)
    assert not re.findall(r"\d", prose), re.findall(r".{20}\d.{20}", prose)


@pytest.mark.parametrize("name", ["train.ipynb", "explore.ipynb"])
def test_committed_notebooks_are_stripped_and_parameterised(name):
    nb = nbformat.read(repo_root() / "notebooks" / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert any("parameters" in c.metadata.get("tags", []) for c in code)


def test_a_changed_config_reruns_the_runs_it_changes(smoke_repo, run_snakemake):
    # the first `lr: 0.001` is the mnist task's: its runs and the sweep's (on mnist)
    # change, no other
    text = (smoke_repo / "config" / "smoke.yaml").read_text().replace("lr: 0.001", "lr: 0.002", 1)
    (smoke_repo / "changed.yaml").write_text(text)
    proc = run_snakemake(smoke_repo, "-n", "--configfile", "changed.yaml")
    out = proc.stdout + proc.stderr
    n_mnist = len([r for r in SMOKE_RUNS if r[0] == "mnist"])
    assert re.search(rf"^train\s+{n_mnist}$", out, re.MULTILINE), out
    assert re.search(r"^train_sensitivity\s+3$", out, re.MULTILINE), out


def test_two_builds_of_the_same_results_are_byte_identical(smoke_repo, tmp_path):
    """Figures and PDF depend only on the results (SOURCE_DATE_EPOCH, no PDF dates)."""
    import hashlib
    import shutil
    import subprocess

    from uncertainty_lr_study.analysis.__main__ import main as analysis_main

    aggregate = smoke_repo / "results" / "smoke" / "aggregate"
    for i in (1, 2):
        assert (
            analysis_main(
                ["figures", "--aggregate", str(aggregate), "--out", str(tmp_path / f"f{i}")]
            )
            == 0
        )
    for name in ("val_accuracy.pdf", "lr.pdf", "signals.pdf"):
        assert (tmp_path / "f1" / name).read_bytes() == (tmp_path / "f2" / name).read_bytes()

    shutil.copytree(smoke_repo / "paper", tmp_path / "paper")
    shutil.copytree(smoke_repo / "figures", tmp_path / "figures")
    shutil.copytree(smoke_repo / "scripts", tmp_path / "scripts")
    digests = []
    for _ in range(2):
        subprocess.run(
            ["scripts/build-paper.sh", "-g"],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            timeout=300,
        )
        digests.append(hashlib.sha256((tmp_path / "paper" / "main.pdf").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert (
        digests[0] == hashlib.sha256((smoke_repo / "paper" / "main.pdf").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize("config", ["config/config.yaml", "config/paper.yaml"])
def test_slurm_profile_plans_without_slurm(smoke_repo, run_snakemake, config):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = run_snakemake(smoke_repo, "-n", "--profile", "profiles/slurm", "--configfile", config)
    out = proc.stdout + proc.stderr
    assert re.search(r"^train\s+\d+$", out, re.MULTILINE), out
    assert "gpu=1" in out and "runtime=120" in out


def test_killed_driver_resumes_with_the_readme_recipe(repo_copy, run_snakemake):
    """SIGKILL the Snakemake driver mid-pipeline, then run what `make smoke` runs:
    the stale lock is cleared, finished runs are kept, the rest completes."""
    import base64
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    # the smoke config's MNIST task alone with four schedules, no sweep: the same
    # mechanism in a fraction of the time
    config = yaml.safe_load((repo_copy / "config" / "smoke.yaml").read_text())
    mnist = {
        **config["tasks"]["mnist"], "schedulers": ["constant", "step", "cosine", "uncertainty-gradnorm"],
        "seeds": [0],
    }
    mnist.pop("peer_seeds")
    config["tasks"] = {"mnist": mnist}
    config.pop("sensitivity", None)
    (repo_copy / "mnist-smoke.yaml").write_text(yaml.safe_dump(config))
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = [os.path.join(bin_dir, "snakemake"), "--cores", "2", "--configfile", "mnist-smoke.yaml"]
    log_path = repo_copy / "driver.log"
    with log_path.open("w") as log:
        driver = subprocess.Popen(
            cmd, cwd=repo_copy, env=env, start_new_session=True, stdout=log, stderr=log
        )
        deadline = time.time() + 300
        # a training run, not a quick bookkeeping job (aggregate_sensitivity can
        # finish first: the scheduler's order among ready jobs is not fixed)
        while time.time() < deadline and "(Rule: train)" not in log_path.read_text():
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    # finished runs: outputs present and not marked incomplete by Snakemake
    incomplete = {p.name for p in (repo_copy / ".snakemake" / "incomplete").iterdir()}
    runs = repo_copy / "results" / "smoke" / "runs" / "mnist"
    finished = {
        p: p.stat().st_mtime_ns
        for p in runs.glob("*/seed*/metrics.json")
        if base64.b64encode(str(p.relative_to(repo_copy)).encode()).decode() not in incomplete
    }
    assert finished, "no run finished before the kill"
    assert list((repo_copy / ".snakemake" / "locks").iterdir()), "the killed driver left no lock"
    assert not (repo_copy / "paper" / "main.pdf").exists()

    unlock = subprocess.run(
        ["scripts/unlock-if-stale.sh"],
        cwd=repo_copy,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Removing the stale lock" in unlock.stdout
    run_snakemake(repo_copy, "--cores", "2", "--configfile", "mnist-smoke.yaml")
    assert (repo_copy / "paper" / "main.pdf").exists()
    for path, mtime in finished.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was rerun"


def test_a_diverging_run_is_counted_and_the_pipeline_completes(repo_copy, run_snakemake):
    """Fault injection: a learning rate of 1e12 makes the loss non-finite within a few
    steps. The run is recorded as diverged (its metrics.json holds no NaN), the rest
    of the pipeline runs, and the paper counts it (not reached, diverged) instead of
    dropping it, with no ``nan`` in any table."""
    import yaml

    config = yaml.safe_load((repo_copy / "config" / "smoke.yaml").read_text())
    mnist = {
        **config["tasks"]["mnist"], "epochs": 1, "train_subset": 640, "eval_every_steps": 10,
        "seeds": [0],
    }
    mnist.pop("schedulers")  # the two of the config's list below
    mnist.pop("peer_seeds")
    config.pop("sensitivity")
    config.update(
        results_dir="results/diverge",
        schedulers=["constant", "uncertainty-gradnorm"],
        # an evaluation every step: the one after the first update sees a non-finite
        # validation loss, which must be recorded (as null), not crash the job
        tasks={"mnist": mnist, "mnist-diverge": {**mnist, "lr": 1e12, "eval_every_steps": 1}},
    )
    (repo_copy / "diverge.yaml").write_text(yaml.safe_dump(config))
    run_snakemake(repo_copy, "--cores", "2", "--configfile", "diverge.yaml")
    runs = pd.read_csv(repo_copy / "results" / "diverge" / "aggregate" / "runs.csv")
    bad = runs[runs["task"] == "mnist-diverge"]
    assert len(bad) == 2 and (bad["status"] == "diverged").all()
    for metrics in (repo_copy / "results" / "diverge" / "runs" / "mnist-diverge").rglob("metrics.json"):
        text = metrics.read_text()
        assert "NaN" not in text and "Infinity" not in text
    assert not bad["target_reached"].any() and bad["test_accuracy"].isna().all()
    assert (runs.loc[runs["task"] == "mnist", "status"] == "completed").all()
    table = (repo_copy / "paper" / "generated" / "results_table.tex").read_text()
    assert table.count("0/1 (diverged on 1 of 1)") == 2
    findings = (repo_copy / "paper" / "generated" / "findings.tex").read_text()
    assert "On mnist-diverge, no run completed." in findings
    assert "2 run(s) on mnist-diverge diverged" in findings
    for tex in (repo_copy / "paper" / "generated").glob("*.tex"):
        assert not re.search(r"\bnan\b", tex.read_text(), re.IGNORECASE), tex.name
    assert (repo_copy / "paper" / "main.pdf").stat().st_size > 50_000
