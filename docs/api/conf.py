"""Sphinx configuration of the API reference (the library: scheduler, signals,
integrations). Build: ``sphinx-build -W --keep-going -b html docs/api docs/api/_build``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import uncertainty_lr  # noqa: E402

project = "uncertainty-lr"
author = "uncertainty-lr contributors"
copyright = "uncertainty-lr contributors"
release = uncertainty_lr.__version__
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]

# Google-style docstrings ("Args:", "Raises:", "Returns:").
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False

html_theme = "alabaster"
exclude_patterns = ["_build"]
