"""A config is untrusted input: it never runs code, leaks a file into the paper,
hangs the checks, or passes a value no run could use (docs/faults.md lists each
fault and its test)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from uncertainty_lr_study.analysis.latex import check_no_missing_numbers, tex_escape, write_tables
from uncertainty_lr_study.check_config import main as check_config
from uncertainty_lr_study.config import ConfigError, RunSettings, preflight, validate_config
from uncertainty_lr_study.paths import repo_root
from helpers import mnist_settings

REPO = repo_root()
MARKER = "7777777"  # digits: never split by kerning in a PDF's text


def smoke() -> dict:
    """The smoke config as a fresh dict."""
    return yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())


def problems_of(config: dict) -> str:
    """The ConfigError message of validating (and preflighting) ``config``."""
    with pytest.raises(ConfigError) as info:
        preflight(validate_config(config))
    return str(info.value)


def yaml_value(token: str):
    """A value as YAML reads it (``.nan``, ``.inf``, ``1e30``, ...)."""
    return yaml.safe_load(f"v: {token}")["v"]


# 1. Shell injection through paths -------------------------------------------------


def _shell_blocks(text: str) -> list[str]:
    """The string literals of every ``shell:`` directive of a rules file."""
    blocks = re.findall(r"^\s+shell:\s*\n((?:\s+(?:#.*|\".*\")\n)+)", text, re.MULTILINE)
    return ["".join(re.findall(r"\"(.*)\"", b)) for b in blocks]


def test_every_placeholder_of_every_shell_command_is_quoted():
    """Snakemake's ``{x:q}`` quotes a value for the shell; a bare ``{x}`` lets a path
    with ``;`` or a space run or break a command."""
    blocks = []
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks += _shell_blocks(rules.read_text())
    assert len(blocks) >= 6  # train, 4 analysis rules, paper
    # the sweep's rule runs train's command (checked above), not a copy of its own
    assert re.search(
        r"^use rule train as train_sensitivity with:\n(?:    .*\n)+",
        (REPO / "workflow" / "rules" / "train.smk").read_text(),
        re.MULTILINE,
    ) and "shell:" not in (REPO / "workflow" / "rules" / "train.smk").read_text().split(
        "use rule train as train_sensitivity"
    )[1]
    for block in blocks:
        placeholders = re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", block)
        assert placeholders or "build-paper" in block, block
        unquoted = [p for p in placeholders if not p.endswith(":q")]
        assert not unquoted, f"unquoted {unquoted} in shell command {block!r}"


@pytest.mark.parametrize(
    "value",
    ["results/x;touch pwned;", "results/a b", "results/$(touch pwned)", "results/`id`",
     "-rf", "results/x\ny", "results/x'y", ""],
)
def test_a_results_dir_that_a_shell_would_read_is_refused(value):
    config = smoke()
    config["results_dir"] = value
    msg = problems_of(config)
    assert "results_dir" in msg
    assert any(m in msg for m in ("plain folder path", "too short", "control character"))


def test_an_injected_results_dir_runs_nothing(repo_copy, run_snakemake):
    """The probe of the issue: forcing one analysis job of a config whose
    ``results_dir`` holds a shell command. It is refused before any job, and the
    command never runs."""
    config = smoke()
    config["results_dir"] = "results/x;touch pwned;"
    (repo_copy / "evil.yaml").write_text(yaml.safe_dump(config))
    proc = run_snakemake(
        repo_copy, "results/x;touch pwned;/aggregate/sensitivity.csv",
        "--cores", "1", "--configfile", "evil.yaml", check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "results_dir" in out and "plain folder path" in out
    assert not list(repo_copy.rglob("pwned")) and not (repo_copy / "results").exists()


def test_a_results_folder_outside_the_repository_needs_consent(tmp_path):
    for value in (str(tmp_path / "out"), "../elsewhere"):
        config = {**smoke(), "results_dir": value}
        assert "results_outside_repo: true" in problems_of(config)
        validate_config({**config, "results_outside_repo": True})
    for value in ("results/../src", "results/..", "data", "paper/x"):
        assert "folder of its own files" in problems_of({**smoke(), "results_dir": value})
    validate_config({**smoke(), "results_dir": "results/run-1_a.b"})


def test_names_that_become_folders_are_plain_words():
    config = smoke()
    config["tasks"]["mnist;id"] = config["tasks"].pop("mnist")
    config["sensitivity"]["task"] = "mnist;id"
    assert "is not a task name" in problems_of(config)
    config = smoke()
    config["sensitivity"]["sweeps"][0]["fixed"] = {"threshold_mode": "rel/../../x"}
    assert "names a folder" in problems_of(config)


# 2. TeX injection -----------------------------------------------------------------

PRINTABLE = "".join(chr(c) for c in range(32, 127))


def test_escaped_text_holds_no_active_character():
    """After the escaper's own macros are taken out, nothing TeX reads as a command,
    group, math shift, alignment, parameter, superscript, subscript, comment or
    active character is left."""
    macros = re.compile(
        r"\\(?:textbackslash|textasciitilde|textasciicircum|textless|textgreater|textbar)\{\}"
        r"|\\[&%$#_{}]"
    )
    for text in (PRINTABLE, r"\input{/etc/passwd}", "^^5cinput", "a\nb\tc\x00\x7f", "é漢😀"):
        left = macros.sub("", tex_escape(text))
        assert not set(left) & set("\\{}$&#^_%~"), (text, left)
        assert left.isascii() and left.isprintable()
    assert tex_escape("é") == "e" and tex_escape("漢") == "?"


def _pdflatex(folder: Path, body: str, **env: str) -> subprocess.CompletedProcess:
    (folder / "doc.tex").write_text(
        "\\pdfcompresslevel=0\\pdfobjcompresslevel=0\n\\documentclass{article}\n"
        "\\usepackage[T1]{fontenc}\n\\usepackage{lmodern}\n"
        f"\\begin{{document}}\n{body}\n\\end{{document}}\n"
    )
    return subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=folder, capture_output=True, text=True, timeout=120,
        env={**os.environ, **env},
    )


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="LaTeX is set up by make")
def test_escaped_text_compiles_and_pulls_in_no_file(tmp_path):
    """Even where TeX may read any file (openin_any=a), an escaped ``\\input`` of a
    secret file prints as text; unescaped (the positive control) it leaks."""
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{MARKER}\n")
    attack = f"\\input{{{secret}}} \\input {secret} "
    proc = _pdflatex(tmp_path, tex_escape(attack + PRINTABLE + " é漢\x00"), openin_any="a")
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert MARKER.encode() not in (tmp_path / "doc.pdf").read_bytes()
    assert _pdflatex(tmp_path, attack, openin_any="a").returncode == 0
    assert MARKER.encode() in (tmp_path / "doc.pdf").read_bytes()


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="LaTeX is set up by make")
@pytest.mark.parametrize("target", ["absolute", "parent"])
def test_the_paper_build_reads_no_file_outside_the_paper(tmp_path, target):
    """scripts/build-paper.sh (the paper rule) runs TeX with openin_any=p: a
    generated file that tried ``\\input`` of another file of the machine fails the
    build instead of printing that file."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "build-paper.sh", tmp_path / "scripts")
    (tmp_path / "paper").mkdir()
    (tmp_path / "secret.txt").write_text(f"{MARKER}\n")
    name = str(tmp_path / "secret.txt") if target == "absolute" else "../secret.txt"
    (tmp_path / "paper" / "main.tex").write_text(
        f"\\documentclass{{article}}\\begin{{document}}x\\input{{{name}}}\\end{{document}}\n"
    )
    proc = subprocess.run(
        ["scripts/build-paper.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0
    produced = [p for p in (tmp_path / "paper").iterdir() if p.suffix in (".pdf", ".log")]
    assert all(MARKER.encode() not in p.read_bytes() for p in produced)


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="LaTeX is set up by make")
def test_the_paper_build_runs_no_command_and_writes_only_its_scratch_folder(tmp_path):
    """Text that reached a generated .tex unescaped still cannot run a command
    (``\\input|"..."``, ``\\write18``: shell_escape=f) or overwrite a file of the
    repository (``\\openout``: TeX runs in a scratch copy of paper/)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "build-paper.sh", tmp_path / "scripts")
    paper = tmp_path / "paper"
    paper.mkdir()
    (paper / "references.bib").write_text("% the tracked bibliography\n")
    (paper / "main.tex").write_text(
        "\\documentclass{article}\\begin{document}x"
        "\\immediate\\openout5=references.bib\\immediate\\write5{overwritten}"
        "\\immediate\\closeout5"
        f"\\immediate\\write18{{touch {tmp_path / 'pwned'}}}"
        "\\input|\"kpsewhich --var-value=HOME\" \\end{document}\n"
    )
    subprocess.run(
        ["scripts/build-paper.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert (paper / "references.bib").read_text() == "% the tracked bibliography\n"
    assert not (tmp_path / "pwned").exists()
    home = os.path.expanduser("~").encode()
    assert all(home not in p.read_bytes() for p in paper.iterdir() if p.suffix == ".pdf")
    log = (paper / "main.log").read_text(errors="replace")
    assert "runsystem" not in log or "disabled" in log


@pytest.mark.pipeline
def test_the_config_name_reaches_the_paper_as_text(smoke_repo, tmp_path):
    from uncertainty_lr_study.analysis.__main__ import main as analysis_main

    aggregate = smoke_repo / "results" / "smoke" / "aggregate"
    name = r"\input{/etc/hostname} $x$ 100% #1 ~a^b_c {}"
    out = tmp_path / "generated"
    assert analysis_main(
        ["tables", "--aggregate", str(aggregate), "--out", str(out), "--config-name", name]
    ) == 0
    numbers = (out / "numbers.tex").read_text()
    line = next(x for x in numbers.splitlines() if x.startswith(r"\newcommand{\ConfigName}"))
    assert r"\textbackslash{}input\{/etc/hostname\} \$x\$ 100\% \#1" in line
    assert r"\input" not in line


# 4. NaN and infinity --------------------------------------------------------------

NON_FINITE = [
    (("tasks", "mnist", "lr"), ".nan"),
    (("tasks", "mnist", "lr"), ".inf"),
    (("tasks", "mnist", "weight_decay"), ".nan"),
    (("tasks", "mnist", "max_grad_norm"), ".nan"),
    (("tasks", "imdb-minilm", "warmup_ratio"), ".nan"),
    (("tasks", "mnist", "target", "value"), ".inf"),
    (("tasks", "mnist", "target", "value"), "-.inf"),
    (("scheduler_params", "step", "gamma"), ".nan"),
    (("sensitivity", "sweeps", 0, "values", 0), ".inf"),
]


@pytest.mark.parametrize(("path", "token"), NON_FINITE)
def test_a_non_finite_number_is_refused_with_its_key(path, token):
    config = smoke()
    config.setdefault("scheduler_params", {}).setdefault("step", {})
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = yaml_value(token)
    assert math.isnan(node[path[-1]]) or math.isinf(node[path[-1]])
    msg = problems_of(config)
    assert f"{'/'.join(map(str, path))}: " in msg and "is not a finite number" in msg


def test_snakemake_refuses_a_non_finite_value_before_any_job(repo_copy, run_snakemake):
    text = (repo_copy / "config" / "smoke.yaml").read_text()
    text = text.replace("warmup_ratio: 0.1", "warmup_ratio: .nan", 1)
    assert "warmup_ratio: .nan" in text
    (repo_copy / "nan.yaml").write_text(text)
    proc = run_snakemake(repo_copy, "-n", "--configfile", "nan.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "warmup_ratio: nan is not a finite number" in out and "Traceback" not in out
    assert not (repo_copy / "results").exists()


def test_run_settings_refuse_non_finite_values():
    data = mnist_settings().to_dict()
    for key in ("lr", "target_value", "weight_decay", "max_grad_norm"):
        with pytest.raises(ConfigError, match=f"{key}: nan is not a finite number"):
            RunSettings.from_dict({**data, key: math.nan})
    with pytest.raises(ConfigError, match="scheduler_params/gamma: inf is not a finite"):
        RunSettings.from_dict({**data, "scheduler_params": {"gamma": math.inf}})


# 5. 'nan' never reaches the paper -------------------------------------------------


@pytest.mark.pipeline
def test_divergence_is_shown_as_such_never_as_nan(smoke_repo, tmp_path):
    """One of two seeds of a schedule diverged, and every run of another: the tables
    say so ("diverged on 1 of 2", "diverged", "--"), and no number is ``nan``."""
    aggregate = smoke_repo / "results" / "smoke" / "aggregate"
    runs = pd.read_csv(aggregate / "runs.csv")
    mnist = runs[runs["task"] == "mnist"]
    test_cols = [c for c in runs if c.startswith("test_")]

    def diverge(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.copy()
        rows[test_cols] = math.nan
        rows["status"], rows["target_reached"] = "diverged", False
        rows[["epochs_to_target", "seconds_to_target", "steps_to_target"]] = math.inf
        return rows

    one_of_two = mnist[mnist["scheduler"] == "step"].head(1)
    second = diverge(one_of_two).assign(seed=one_of_two["seed"] + 100)
    all_diverged = diverge(mnist[mnist["scheduler"] == "cosine"])
    runs = pd.concat(
        [runs[~((runs["task"] == "mnist") & runs["scheduler"].isin(["step", "cosine"]))],
         one_of_two, second, all_diverged],
        ignore_index=True,
    )
    write_tables(runs, tmp_path)
    for tex in tmp_path.glob("*.tex"):
        check_no_missing_numbers(tex.name, tex.read_text())
        assert not re.search(r"\bnan\b", tex.read_text(), re.IGNORECASE), tex.name
    table = (tmp_path / "results_table.tex").read_text()
    step_row = next(x for x in table.splitlines() if r"\texttt{step}" in x)
    assert "(diverged on 1 of 2)" in step_row and r"\pm" not in step_row
    cosine_row = next(x for x in table.splitlines() if r"\texttt{cosine}" in x)
    assert "diverged" in cosine_row and "--" in cosine_row
    numbers = (tmp_path / "numbers.tex").read_text()
    assert r"\newcommand{\MnistCosineAcc}{--}" in numbers


def test_a_nan_in_generated_latex_fails_the_tables_job():
    for text in (r"$8.92 \pm nan$", r"\newcommand{\A}{nan}", "a & inf & b", r"$-inf\%$"):
        with pytest.raises(ValueError, match="missing number"):
            check_no_missing_numbers("x.tex", text)
    for text in (r"\infty", "information about nan values", r"\newcommand{\N}{nan-task}"):
        check_no_missing_numbers("x.tex", text)


# 6. A config that is code -----------------------------------------------------------


def test_a_template_config_is_refused_before_snakemake_reads_it(tmp_path, capsys):
    """Snakemake evaluates a config with ``__use_yte__: true`` as a YTE template
    (Python) when it loads it; the check that ``make run`` runs first reads it as
    plain YAML and refuses it, and the expression never runs."""
    pwned = tmp_path / "pwned"
    config = tmp_path / "yte.yaml"
    config.write_text(
        "__use_yte__: true\n"
        f"results_dir: ?__import__('pathlib').Path({str(pwned)!r}).touch() or 'results'\n"
    )
    assert check_config([str(config)]) == 2
    assert "__use_yte__" in capsys.readouterr().err and not pwned.exists()
    dry = subprocess.run(
        ["make", "-n", "run", f"CONFIG={config}"], cwd=REPO, capture_output=True, text=True
    )
    lines = dry.stdout.splitlines()
    check = next(i for i, x in enumerate(lines) if "uncertainty_lr_study.check_config" in x)
    snake = next(i for i, x in enumerate(lines) if "snakemake --cores" in x)
    assert check < snake and str(config) in lines[check] and str(config) in lines[snake]


# 7. Resource exhaustion -----------------------------------------------------------

LIST_BOMB = "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"a{i + 1}: &a{i + 1} [{', '.join([f'*a{i}'] * 10)}]\n" for i in range(8)
)
DICT_BOMB = "a0: &a0 {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1}\n" + "".join(
    f"a{i + 1}: &a{i + 1} {{{', '.join(f'k{j}: *a{i}' for j in range(10))}}}\n"
    for i in range(8)
)


@pytest.mark.parametrize("bomb", [LIST_BOMB, DICT_BOMB], ids=["list", "dict"])
def test_nested_aliases_are_refused_quickly_with_a_short_message(bomb, tmp_path):
    last = bomb.strip().splitlines()[-1].split(":")[0]
    text = bomb + yaml.safe_dump(smoke()).replace(
        "results_dir:", f"bomb: *{last}\nresults_dir:", 1
    )
    (tmp_path / "bomb.yaml").write_text(text)
    config = yaml.safe_load(text)
    start = time.perf_counter()
    msg = problems_of(config)
    assert time.perf_counter() - start < 10
    assert "expands to more than 100,000 values" in msg and len(msg) < 1000
    start = time.perf_counter()
    assert check_config([str(tmp_path / "bomb.yaml")]) == 2
    assert time.perf_counter() - start < 10


def test_error_messages_quote_values_briefly(tmp_path):
    config = smoke()
    config["tasks"]["mnist"]["lr"] = "x" * 1_000_000
    config["tasks"]["mnist"]["optimizer"] = ["y" * 1000] * 1000
    msg = problems_of(config)
    assert "tasks/mnist/lr" in msg and "tasks/mnist/optimizer" in msg and len(msg) < 3000
    with pytest.raises(ConfigError, match="unknown field") as info:
        RunSettings.from_dict({**mnist_settings().to_dict(), "z" * 100_000: 1})
    assert len(str(info.value)) < 3000
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    assert check_config([str(big)]) == 2


# 10. Values no run could use --------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "token", "message"),
    [
        ("epochs", "1.0e+30", "greater than the maximum"),
        ("batch_size", "1.0e+30", "greater than the maximum"),
        ("eval_every_steps", "1.0e+30", "greater than the maximum"),
        ("model_params", "{hidden_size: 3}", "unexpected keyword argument 'hidden_size'"),
    ],
)
def test_values_no_run_could_use_are_refused_before_any_job(key, token, message):
    config = smoke()
    config["tasks"]["mnist"][key] = yaml_value(token)
    msg = problems_of(config)
    assert f"tasks/mnist/{key}" in msg and message in msg


def test_a_model_no_machine_holds_is_refused_without_building_it():
    config = smoke()
    config["tasks"]["imdb-lstm"]["model_params"] = {"hidden_size": 100_000}
    start = time.perf_counter()
    msg = problems_of(config)
    assert time.perf_counter() - start < 30
    assert "tasks/imdb-lstm/model_params" in msg and "parameters (at most" in msg
    config["tasks"]["imdb-lstm"]["model_params"] = {"hidden_size": 1.5}
    assert "hidden_size should be of type int" in problems_of(config)


def test_the_shipped_configs_pass_the_check_that_make_runs(capsys):
    names = [str(REPO / "config" / n) for n in ("config.yaml", "smoke.yaml", "paper.yaml")]
    assert check_config(names) == 0
    assert capsys.readouterr().out.count(": valid") == 3



# Found by a fresh user's probes -------------------------------------------------------


def test_a_symlink_below_the_results_folder_that_leaves_the_repository_is_refused(tmp_path):
    """A link one level down (results/x/aggregate -> /elsewhere) would let the
    aggregate job write outside the repository."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "workflow", root / "workflow")
    (root / "Snakefile").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "results" / "probe").mkdir(parents=True)
    (root / "results" / "probe" / "aggregate").symlink_to(outside)
    config = {**smoke(), "results_dir": "results/probe"}
    os.environ["UNCERTAINTY_LR_ROOT"] = str(root)
    try:
        with pytest.raises(ConfigError, match="is a symbolic link to .*outside the repository"):
            validate_config(copy_of(config))
        (root / "results" / "probe" / "aggregate").unlink()
        (root / "results" / "probe" / "aggregate").symlink_to(root / "results")  # inside
        validate_config(copy_of(config))
        (root / "figures").mkdir()
        (root / "figures" / "lr.pdf").symlink_to(outside / "lr.pdf")
        with pytest.raises(ConfigError, match="figures/lr.pdf is a symbolic link"):
            validate_config(copy_of(config))
    finally:
        del os.environ["UNCERTAINTY_LR_ROOT"]


def copy_of(config: dict) -> dict:
    return yaml.safe_load(yaml.safe_dump(config))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(results_dir="results/x\n"), "holds a control character"),
        (lambda c: c["tasks"].update({"mnist\n": c["tasks"].pop("mnist")}),
         "holds a control character"),
        (lambda c: c["tasks"].update({5: c["tasks"].pop("mnist")}), "the key 5 is a int"),
        (lambda c: c["tasks"]["mnist"].update(lr=10**400), "an integer of 401 digits"),
        (lambda c: c.update(results_dir="Makefile"), "'Makefile' is a file"),
        (lambda c: c["sensitivity"]["sweeps"][0].update(values=[0.1000001, 0.1000002]),
         "name the same run folder"),
    ],
    ids=["newline-results", "newline-task", "integer-key", "huge-int", "a-file", "same-label"],
)
def test_inputs_a_fresh_user_found_are_refused_in_one_line(edit, message):
    config = smoke()
    edit(config)
    msg = problems_of(config)
    assert message in msg and "Traceback" not in msg and len(msg) < 2000


def test_free_text_may_hold_line_breaks():
    config = smoke()
    config["tasks"]["mnist"]["target"]["reason"] = "a folded\nYAML paragraph\n"
    config.setdefault("paper", {})["note"] = "two\nlines"
    preflight(validate_config(config))


def test_deep_nesting_and_a_broken_checkpoint_config_are_named(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("x: " + "[" * 700 + "]" * 700 + "\n")
    assert check_config([str(deep)]) == 2
    assert "nests lists or mappings too deeply" in capsys.readouterr().err
    model = tmp_path / "evilmodel"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    config = smoke()
    config["tasks"]["imdb-minilm"]["pretrained"] = str(model)
    msg = problems_of(config)
    assert "config.json cannot be read as JSON" in msg


def test_an_aggregate_table_without_its_columns_is_named_in_one_line(tmp_path, capsys):
    from uncertainty_lr_study.analysis.__main__ import main as analysis_main

    (tmp_path / "agg").mkdir()
    (tmp_path / "agg" / "runs.csv").write_text("task,scheduler\nmnist,step\n")
    code = analysis_main(["tables", "--aggregate", str(tmp_path / "agg"), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "lacks the column(s)" in err and len(err.splitlines()) == 1
