"""Sphinx configuration for splitdyn."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "splitdyn"
author = "the splitdyn developers"
copyright = "2026, the splitdyn developers"
release = "0.1.0"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.doctest", "sphinx.ext.viewcode"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "none"
html_theme = "alabaster"
html_static_path = ["_static"]
exclude_patterns = ["_build"]
doctest_global_setup = "import torch\ntorch.manual_seed(0)"
