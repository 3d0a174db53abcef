"""Shared fixtures. The smoke pipeline runs once per test session, in a copy of the
repository, and every pipeline test reads its outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def repo_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the repository."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [f for f in out.stdout.splitlines() if (REPO / f).is_file()]


def copy_repo(dest: Path) -> Path:
    """Copy the repository's source files (no results, no venv) into ``dest``."""
    for rel in repo_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def snakemake(cwd: Path, *args: str, check: bool = True, timeout: int = 1800):
    """Run the venv's snakemake in ``cwd``; returns the CompletedProcess."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> Path:
    """A copy of the repository in which the smoke config's pipeline has run."""
    root = copy_repo(tmp_path_factory.mktemp("smoke") / "repo")
    snakemake(root, "--cores", "2", "--configfile", "config/smoke.yaml")
    return root


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A fresh copy of the repository (for tests that run snakemake on their own config)."""
    return copy_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def run_snakemake():
    """The :func:`snakemake` helper, as a fixture."""
    return snakemake


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random BERT with the MiniLM package's real WordPiece tokenizer, saved
    as a local checkpoint folder (what ``pretrained:`` may name)."""
    pytest.importorskip("transformers")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from uncertainty_lr_study.pretrained import resolve_pretrained

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_pretrained("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
