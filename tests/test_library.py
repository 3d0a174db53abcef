"""The library apart from the study: torch only, and the only thing in its wheel."""

import shutil
import subprocess
import sys
import textwrap
import zipfile

from uncertainty_lr_study.paths import repo_root

OPTIONAL = ("uncertainty_lr.integrations.hf", "uncertainty_lr.integrations.lightning")
"""Modules of optional extras (transformers, lightning): imported only by their users."""


def test_every_library_module_loads_nothing_beyond_torch():
    """In a fresh interpreter, importing every module of ``uncertainty_lr`` (but the
    optional integrations) loads no module that a bare ``import torch`` does not."""
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import torch
        before = set(sys.modules)
        import uncertainty_lr
        names = [m.name for m in pkgutil.walk_packages(uncertainty_lr.__path__, "uncertainty_lr.")]
        assert len(names) >= 3, names
        for name in names:
            if name not in {OPTIONAL!r}:
                importlib.import_module(name)
        extra = sorted(m for m in set(sys.modules) - before if not m.startswith("uncertainty_lr"))
        print(len(names), extra)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        cwd=repo_root() / "src",  # the checkout's library, not another installed copy
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("[]"), f"the library loads more than torch: {out.stdout}"


def test_the_optional_integrations_are_the_only_modules_left_out():
    import pkgutil

    import uncertainty_lr

    names = {m.name for m in pkgutil.walk_packages(uncertainty_lr.__path__, "uncertainty_lr.")}
    assert set(OPTIONAL) <= names


def test_the_library_wheel_holds_the_library_only(tmp_path):
    """Built from a copy of the checkout (setuptools writes build/ beside the project)
    with everything the project's own files hold: the study's sources too."""
    project = tmp_path / "project"
    root = repo_root()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(root / "src", project / "src", ignore=ignore)
    for name in ("pyproject.toml", "LICENSE"):
        shutil.copy2(root / name, project / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-q", "-w", str(tmp_path), str(project)],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("uncertainty_lr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names}
    assert {p for p in packages if not p.endswith(".dist-info")} == {"uncertainty_lr"}, packages
    assert "uncertainty_lr/scheduler.py" in names and "uncertainty_lr/py.typed" in names
    assert not [n for n in names if "study" in n or n.endswith((".ipynb", ".yaml"))]
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    ).decode()
    assert "Requires-Dist: torch>=2.13\n" in metadata
