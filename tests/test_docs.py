"""The documentation covers the whole public API, and its tutorial scripts run.

The Sphinx build itself (warnings as errors, then every example on the pages and in the docstrings through the
doctest builder) runs in CI through ``make docs``; these tests are the fast part (a few seconds):

- every public module of ``splitdyn`` and ``splitdyn_cld`` has a page ``docs/api/<module>.rst``, except the
  internal modules listed in ``docs/_ext/splitdyn_docs.py`` (``INTERNAL_MODULES``), which have none;
- every name in every ``__all__`` is rendered by a directive on some page (except ``INTERNAL_NAMES``), and
  every one, internal ones included, has the docstring (or ``#:`` comment) that documents it in the source
  and without which autodoc would silently leave it out;
- the tutorial scripts in ``docs/tutorials/`` run, with small settings, and show what the pages say they show;
- the examples of ``docs/tutorials/examples_api.rst`` (``>>>``) give the outputs shown.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import inspect
import math
import pkgutil
import re
import sys
from functools import lru_cache
from pathlib import Path

import pytest
import torch

import splitdyn
import splitdyn_cld

DOCS = Path(__file__).resolve().parents[1] / "docs"
API = DOCS / "api"
TUTORIALS = DOCS / "tutorials"
PACKAGES = (splitdyn, splitdyn_cld)


sys.path.insert(0, str(DOCS / "_ext"))
try:
    from splitdyn_docs import INTERNAL_MODULES, INTERNAL_NAMES, defining_module, is_internal
finally:
    sys.path.remove(str(DOCS / "_ext"))


def load_docs_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def public_modules() -> list:
    """Both top-level packages and every module below them without a ``_private`` part in its name."""
    modules = list(PACKAGES)
    for package in PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                modules.append(importlib.import_module(info.name))
    return modules


def is_package(module) -> bool:
    return hasattr(module, "__path__")


@lru_cache(maxsize=None)
def directives() -> dict[str, list[tuple[str, str, dict[str, str]]]]:
    """Per page: ``(directive, argument, options)`` for every autodoc-style directive."""
    pattern = re.compile(r"^\.\. ([\w-]+):: *(\S+)[^\n]*\n((?:[ \t]+:[\w-]+:[^\n]*\n)*)", re.MULTILINE)
    pages = {}
    for page in sorted(API.glob("*.rst")):
        found = []
        for name, argument, block in pattern.findall(page.read_text() + "\n"):
            options = dict(re.findall(r":([\w-]+):[ \t]*([^\n]*)", block))
            found.append((name, argument, options))
        pages[page.name] = found
    return pages


def automodules() -> dict[str, dict[str, str]]:
    return {arg: opts for found in directives().values() for name, arg, opts in found if name == "automodule"}


def members_rendered_by(module_name: str) -> set[str] | None:
    """Names an ``automodule`` renders (``None``: all of ``__all__``), from its ``:members:`` option."""
    options = automodules()[module_name]
    if "no-members" in options:
        return set()
    members = options.get("members", "").strip()
    rendered = None if not members else {m.strip() for m in members.split(",")}
    excluded = {m.strip() for m in options.get("exclude-members", "").split(",") if m.strip()}
    if rendered is None:
        return None if not excluded else set(importlib.import_module(module_name).__all__) - excluded
    return rendered - excluded


def explicitly_documented() -> set[str]:
    return {arg for found in directives().values() for name, arg, _ in found
            if name in ("autofunction", "autoclass", "autodata", "autoexception", "autoattribute")}


def exports_tables() -> set[str]:
    return {arg for found in directives().values() for name, arg, _ in found if name == "package-exports"}


def page_text(module_name: str) -> str:
    return (
        f"``{module_name}``\n{'=' * (len(module_name) + 4)}\n\n.. automodule:: {module_name}\n"
        + ("   :no-members:\n\nNames exported by the package\n-----------------------------\n\n"
           f".. package-exports:: {module_name}\n" if is_package(importlib.import_module(module_name))
           else "   :members:\n")
    )


def test_every_public_module_has_an_api_page():
    missing = []
    for module in public_modules():
        if is_internal(module.__name__):
            continue
        page = API / f"{module.__name__}.rst"
        if not page.exists() or f".. automodule:: {module.__name__}" not in page.read_text():
            missing.append(module.__name__)
    message = "\n\n".join(f"create docs/api/{name}.rst with\n\n{page_text(name)}" for name in missing)
    assert not missing, f"modules without an API page: {missing}\n\n{message}"


def test_internal_modules_and_names_exist_are_documented_in_the_source_and_have_no_page():
    """The lists of internals in docs/_ext/splitdyn_docs.py name existing modules and names (a renamed or removed
    internal must leave the list); internals have no API page, and their module docstring says what they are."""
    modules = {m.__name__: m for m in public_modules()}
    for name in sorted(INTERNAL_MODULES):
        assert name in modules, f"INTERNAL_MODULES names {name}, which is not a module (remove it from the list)"
        assert not (API / f"{name}.rst").exists(), f"docs/api/{name}.rst documents an internal module: remove it"
        assert (modules[name].__doc__ or "").strip(), f"internal module {name} needs a module docstring"
    for full in sorted(INTERNAL_NAMES):
        module_name, _, name = full.rpartition(".")
        assert module_name in modules and name in getattr(modules[module_name], "__all__", ()), (
            f"INTERNAL_NAMES names {full}, which is not in the __all__ of {module_name} (remove it from the list)")
    rendered = {arg for found in directives().values() for _, arg, _ in found}
    assert not rendered & INTERNAL_NAMES, f"API pages render internal names: {sorted(rendered & INTERNAL_NAMES)}"


def test_every_api_page_documents_an_existing_module():
    names = {m.__name__ for m in public_modules()}
    stale = [page.stem for page in API.glob("*.rst") if page.stem != "index" and page.stem not in names]
    assert not stale, f"docs/api pages for modules that no longer exist: {stale}"


def test_every_public_name_is_rendered_by_an_api_directive():
    explicit = explicitly_documented()
    missing = []
    for module in public_modules():
        if is_internal(module.__name__):
            continue
        for name in getattr(module, "__all__", ()):
            full = f"{module.__name__}.{name}"
            if full in explicit or full in INTERNAL_NAMES:
                continue
            if is_package(module):
                # a package re-exports: the name must be documented on its defining module's page, and the
                # package page lists it (the package-exports table)
                if module.__name__ not in exports_tables():
                    missing.append(f"{full} (no '.. package-exports:: {module.__name__}' on its page)")
                    continue
                try:
                    owner = defining_module(module, name)
                except ValueError as exc:
                    missing.append(str(exc))
                    continue
                if f"{owner}.{name}" in INTERNAL_NAMES:
                    continue  # an internal re-exported for the library's own modules: left out of the table
                if is_internal(owner):
                    missing.append(f"{full} (defined in the internal module {owner}: document it on the package's "
                                   f"page with '.. autofunction:: {full}' or similar)")
                    continue
                if owner.rsplit(".", 1)[-1].startswith("_") or owner not in automodules():
                    missing.append(f"{full} (defined in {owner}, which has no API page)")
                elif is_package(importlib.import_module(owner)) or name not in importlib.import_module(owner).__all__:
                    missing.append(f"{full} (not in the __all__ of its defining module {owner})")
                continue
            rendered = members_rendered_by(module.__name__) if module.__name__ in automodules() else set()
            if rendered is not None and name not in rendered:
                missing.append(full)
    assert not missing, "public names that no API page renders:\n" + "\n".join(missing)


def test_every_public_name_has_a_docstring_autodoc_can_render():
    """autodoc skips members without documentation: a missing docstring is a name missing from the reference."""
    from sphinx.pycode import ModuleAnalyzer

    undocumented = []
    for module in public_modules():
        if is_package(module):
            continue  # re-exports are checked where they are defined
        attribute_docs = None
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isroutine(obj):
                own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
                if not (own and own.strip()):
                    undocumented.append(f"{module.__name__}.{name}: add a docstring")
            else:
                if attribute_docs is None:
                    attribute_docs = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
                if ("", name) not in attribute_docs:
                    undocumented.append(f"{module.__name__}.{name}: add a '#: ...' comment above its assignment")
    assert not undocumented, "undocumented public names (autodoc would leave them out):\n" + "\n".join(undocumented)


# -- the docs extension's reference resolution (docs/_ext/splitdyn_docs.py) ---------------------------------
def test_references_resolve_to_where_the_object_is_documented():
    import types

    from splitdyn_cld.score import MixedScore

    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from splitdyn_docs import _documented_name, _lists_attribute
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    integrate_module = importlib.import_module("splitdyn.integrate")
    # re-exported by a package: the defining module's entry
    assert _documented_name(splitdyn, "mcmc.MALA") == "splitdyn.mcmc.metropolis.MALA"
    assert _documented_name(splitdyn, "oracles.diamond_mixture") == "splitdyn.oracles.mixture.diamond_mixture"
    # a name as the referring module sees it (imported there), and an attribute of a class
    importer = types.ModuleType("splitdyn_cld.some_module")
    importer.MixedScore = MixedScore  # ``from .score import MixedScore`` in some module
    assert _documented_name(importer, "MixedScore") == "splitdyn_cld.score.MixedScore"
    assert _documented_name(integrate_module, "Solution.trajectory") == "splitdyn.integrate.Solution.trajectory"
    assert _documented_name(integrate_module, "Solution.no_such_attribute") is None
    assert _documented_name(integrate_module, "torch.Tensor") is None  # not this project's: left to Sphinx
    # an attribute listed in the class's Attributes section (an :ivar: field) links to the class
    assert _lists_attribute("splitdyn.integrate.Solution", "saved_times")
    assert not _lists_attribute("splitdyn.integrate.Solution", "components")


def test_attribute_docstrings_stay_prose_and_private_bases_show_their_public_ancestor():
    sys.path.insert(0, str(DOCS / "_ext"))
    try:
        from splitdyn_docs import keep_attribute_prose, public_bases
    finally:
        sys.path.remove(str(DOCS / "_ext"))
    from splitdyn.steps.base import Step
    from splitdyn.steps.runge_kutta import ProbabilityFlowHeun

    lines = ["the only rank that writes.", "", ":type: Rank 0"]  # napoleon's reading of "Rank 0: the only..."
    keep_attribute_prose(None, "property", "is_main", None, {}, lines)
    assert lines == ["Rank 0: the only rank that writes."]
    typed = ["the count", "", ":type: int"]
    keep_attribute_prose(None, "attribute", "n", None, {}, typed)
    assert typed == ["the count", "", ":type: int"]  # a real type is kept
    bases = list(ProbabilityFlowHeun.__bases__)
    assert bases[0].__name__.startswith("_")
    public_bases(None, "ProbabilityFlowHeun", ProbabilityFlowHeun, {}, bases)
    assert bases == [Step]


# -- the examples ------------------------------------------------------------------------------------------
def test_the_api_examples_page_gives_the_outputs_shown():
    """The doctest builder runs these too (``make docs``); here they run in the fast suite (about a second)."""
    page = TUTORIALS / "examples_api.rst"
    with torch.random.fork_rng():
        torch.manual_seed(0)  # as the doctest builder's global setup (docs/conf.py)
        result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False,
                                  report=True)
    assert result.attempted >= 20 and result.failed == 0, f"{result.failed} failing example(s) in {page.name}"


# -- the tutorial scripts ------------------------------------------------------------------------------------
def test_obabo_tutorial_beats_first_order_against_torchsde():
    """Smoke-sized version of the page's measurement (seeded, so deterministic); the noise-free order tests
    are in tests/test_splitting_orders.py."""
    tutorial = load_docs_module(TUTORIALS / "langevin_obabo.py")
    assert tutorial.make_sampler("OBABO").nfe == 2  # two half kicks per step
    rows = tutorial.weak_errors(sequences=("OBABO",), steps=(2, 8), n_paths=50_000, dt=0.05)["OBABO"]
    (_, coarse, coarse_se), (_, fine, fine_se) = rows
    assert math.isfinite(coarse) and math.isfinite(fine)
    assert abs(coarse) > 5 * coarse_se  # a real discretisation error at h = 1/2, not Monte Carlo noise
    # 4x smaller steps: a first-order scheme would divide the error by about 4, a second-order one by 16
    assert abs(fine) < abs(coarse) / 4


def test_cld_splitting_tutorial_orders_from_exact_moments():
    tutorial = load_docs_module(TUTORIALS / "cld_splitting.py")
    cld, reverse = tutorial.setup()
    samplers = tutorial.samplers(cld, reverse)
    assert samplers["Strang, midpoint S"].nfe == 2 and samplers["SSCS (Euler S)"].nfe == 1
    orders = {}
    for name in ("SSCS (Euler S)", "Strang, midpoint S"):
        rows = [(n, tutorial.weak_error(samplers[name], cld, n)) for n in (10, 20)]
        orders[name] = tutorial.observed_orders(rows)[0]
    assert 0.8 < orders["SSCS (Euler S)"] < 1.2
    assert 1.8 < orders["Strang, midpoint S"] < 2.4
    results = tutorial.monte_carlo(n_samples=200, n_steps=5, reference_steps=10)
    assert all(math.isfinite(m) and math.isfinite(v) for m, v in results.values())


def test_training_tutorial_runs():
    tutorial = load_docs_module(TUTORIALS / "toy_training_loop.py")
    with torch.random.fork_rng():  # train() seeds the global generator
        cld, model, losses = tutorial.train(steps=2, batch_size=32)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(tutorial.evaluate(cld, model, n_samples=100, n_steps=3))


@pytest.mark.parametrize("script", sorted(p.name for p in TUTORIALS.glob("*.py")))
def test_every_tutorial_script_is_shown_on_a_page(script):
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.rst") if "_build" not in p.parts)
    assert f"literalinclude:: {script}" in pages, f"docs/tutorials/{script} is not included by any page"


def test_readme_example_runs_and_samples_near_the_data():
    readme = (DOCS.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    x = namespace["x"]
    assert x.shape == (10_000, 2) and bool(torch.isfinite(x).all())
    # the 9-mode diamond mixture lives in [-1, 1]^2 (means at distance 2^-1/2 * {0, 1, 2}, std 0.04)
    assert float(x.abs().max()) < 1.5 and abs(float(x.mean())) < 0.1


def test_the_ode_method_lists_written_in_docstrings_are_the_accepted_ones():
    """flow_maps.flow and likelihood.log_likelihood list the torchdiffeq methods (the module defining the lists
    is internal, so its names cannot be linked): every accepted method is named there."""
    from splitdyn.checks import ODE_ADAPTIVE_METHODS, ODE_FIXED_METHODS
    from splitdyn.flow_maps import flow
    from splitdyn.likelihood import log_likelihood

    for method in ODE_ADAPTIVE_METHODS + ODE_FIXED_METHODS:
        assert f'``"{method}"``' in flow.__doc__, f"flow's docstring does not list {method}"
    for method in ODE_ADAPTIVE_METHODS:
        assert f'``"{method}"``' in log_likelihood.__doc__, f"log_likelihood's docstring does not list {method}"
