"""The library's documentation: the API reference builds from the docstrings without
a warning, the package has one version number, and its README's example runs."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import uncertainty_lr

REPO = Path(__file__).resolve().parents[1]
LIBRARY_README = REPO / "src" / "uncertainty_lr" / "README.md"


def test_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(REPO / "docs" / "api"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"
    pages = {name: (tmp_path / f"{name}.html").read_text() for name in
             ("scheduler", "signals", "integrations")}
    for anchor in ("uncertainty_lr.UncertaintyLR.observe", "uncertainty_lr.UncertaintyLR.step"):
        assert f'id="{anchor}"' in pages["scheduler"]
    assert 'id="uncertainty_lr.signals.predictive_variance"' in pages["signals"]
    for module in ("hf", "lightning"):
        assert f'id="uncertainty_lr.integrations.{module}.UncertaintyCallback"' in pages[
            "integrations"
        ]


def test_one_version_number():
    assert importlib.metadata.version("uncertainty-lr") == uncertainty_lr.__version__
    cited = re.search(r"^version: (\S+)$", (REPO / "CITATION.cff").read_text(), re.MULTILINE)
    assert cited and cited.group(1) == uncertainty_lr.__version__, "CITATION.cff's version"


def test_package_description_is_the_library_readme():
    metadata = importlib.metadata.metadata("uncertainty-lr")
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert metadata.get_payload().strip() == LIBRARY_README.read_text().strip()


def test_library_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", LIBRARY_README.read_text(), re.DOTALL)
    assert len(blocks) == 1
    out, threads = io.StringIO(), torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: on a busy machine more threads only wait
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(blocks[0], str(LIBRARY_README), "exec"), {})
    finally:
        torch.set_num_threads(threads)
    assert len(out.getvalue().splitlines()) == 5  # one line per epoch
