"""Sphinx configuration for splitdyn.

Build (warnings are errors), then run every example on the pages and in the docstrings::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

(``make docs`` runs both.) The build needs no network: MathJax is loaded by the browser when a page is
viewed, and no inventory is fetched (no intersphinx).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))

project = "splitdyn"
author = "the splitdyn developers"
copyright = "2026, the splitdyn developers"
from splitdyn import __version__ as release  # noqa: E402 - the one source of the version

version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "splitdyn_docs",  # docs/_ext: package-exports tables, links to re-exported names, docstring fixes
]

# -- sources ---------------------------------------------------------------------------------------
# _generated/ holds fragments written by benchmarks/report.py; they are pulled in with ``.. include::``
# and are not pages of their own. tutorials/*.py are scripts shown with ``literalinclude``.
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
# benchmarks/report.py writes these fragments; a checkout without them still builds (with a stub).
for _fragment in ("benchmarks.rst", "table8.rst"):
    _path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_generated", _fragment)
    if not os.path.exists(_path):
        os.makedirs(os.path.dirname(_path), exist_ok=True)
        with open(_path, "w") as _f:
            _f.write("(No results yet: run ``make bench`` and ``make table8``.)\n")
templates_path = []

# -- references ------------------------------------------------------------------------------------
# Every cross-reference must resolve (-W turns an unresolved one into an error). The build fetches no
# intersphinx inventory (no network), so references to other projects' objects cannot resolve: they are
# ignored here, by package, and only for packages outside this project (PyTorch, NumPy and the optional
# dependencies, and the Python standard library, including the ``typing`` internals that annotations expand
# to). Never add ``splitdyn`` or ``splitdyn_cld`` names: fix the reference instead (docs/_ext/splitdyn_docs.py
# already resolves re-exported names and names as the referring module sees them).
nitpicky = True  # every reference must resolve (third-party packages are listed in nitpick_ignore_regex)
_EXTERNAL = ["torch", "numpy", "tqdm", "torchsde", "torchdiffeq", "diffusers", "safetensors", "matplotlib", "scipy",
             "sklearn", "blackjax", "jax", "PIL",
             # the Python standard library
             "abc", "argparse", "collections", "contextlib", "dataclasses", "enum", "functools", "io", "itertools",
             "json", "logging", "math", "numbers", "os", "pathlib", "pickle", "random", "re", "sys", "time", "types",
             "typing", "typing_extensions", "warnings"]
nitpick_ignore_regex = [(r"py:.*", rf"{package}(\..*)?") for package in _EXTERNAL]

# -- autodoc / napoleon ----------------------------------------------------------------------------
# One page per module (docs/api/<module>.rst) with ``automodule`` + ``:members:``; autodoc documents exactly
# the names in the module's ``__all__`` (tests/test_docs.py checks that every one of them is covered and has
# a docstring or a ``#:`` comment).
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True
autoclass_content = "both"
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

# -- doctest ---------------------------------------------------------------------------------------
doctest_global_setup = """
import torch
torch.manual_seed(0)
torch.set_num_threads(1)
"""

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "alabaster"
html_static_path = ["_static"]
html_title = f"splitdyn {release}"
html_theme_options = {
    "description": "Stochastic dynamics and splitting integrators in PyTorch",
    "fixed_sidebar": True,
    "page_width": "1240px",
    "sidebar_width": "250px",
    "show_relbars": True,
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
