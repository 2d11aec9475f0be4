"""Local Sphinx helpers for the splitdyn docs.

- ``.. package-exports:: PACKAGE`` renders a summary table of every name in ``PACKAGE.__all__``, each
  linked to its documentation on the page of the module that defines it. Package pages use it instead of
  documenting the re-exported objects a second time, so a name exported later appears without editing
  any page.
- References to re-exported names (``splitdyn.LinearSDE``) resolve to the defining module's entry.
- ``:ivar a, b:`` fields from numpydoc ``a, b:`` attribute entries keep both names (napoleon limitation).
- Methods without a docstring of their own are left out instead of showing an inherited one (PyTorch's
  ``forward`` text in particular).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective


def _submodules(package):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield importlib.import_module(info.name)


def defining_module(package, name: str) -> str:
    """Full name of the public module of ``package`` whose ``__all__`` defines ``name``."""
    obj = getattr(package, name)
    module = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isroutine(obj)) else None
    if module is not None:
        return module
    for sub in _submodules(package):
        if hasattr(sub, "__path__"):
            continue
        if name in getattr(sub, "__all__", ()) and getattr(sub, name) is obj:
            return sub.__name__
    raise ValueError(f"{package.__name__}.{name}: no public submodule defines it in its __all__")


def summary(module_name: str, name: str) -> str:
    """The first paragraph of the object's own docstring, or of the ``#:`` comment of a module constant."""
    module = importlib.import_module(module_name)
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        doc = obj.__doc__ or ""
    else:  # data: a documentation comment (``#:`` or a string after the assignment), never the type's docstring
        from sphinx.pycode import ModuleAnalyzer

        doc = "\n".join(ModuleAnalyzer.for_module(module_name).find_attr_docs().get(("", name), []))
    lines = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip() or line.lstrip().startswith((".. ", "- ", "* ", ">>>")):
            break
        lines.append(line.strip())
    return " ".join(lines) or "(undocumented)"


class PackageExports(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        package = importlib.import_module(self.arguments[0])
        names = list(getattr(package, "__all__", ()))
        if not names:
            return [nodes.paragraph(text=f"{package.__name__} exports no names.")]
        lines = [".. list-table::", "   :widths: 25 75", "   :class: package-exports", ""]
        for name in names:
            module = defining_module(package, name)
            lines += [f"   * - :py:obj:`~{module}.{name}`", f"     - {summary(module, name)}"]
        content = StringList(lines, source=self.get_source_info()[0])
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return container.children


_COMBINED_FIELD = re.compile(r"^(\s*:(?:ivar|var|cvar) )([^:]*?,[^:]*?)(:.*)$")


def join_combined_field_names(app, what, name, obj, options, lines):
    """Keep ``:ivar a, b: ...`` (napoleon's output for a numpydoc entry ``a, b:`` in an Attributes section) one
    entry named ``a, b``. Sphinx would otherwise read the field argument as ``<type> <name>`` and render
    ``b (a,)``; the names are joined with zero-width spaces, which are not whitespace to that split.
    """
    for i, line in enumerate(lines):
        match = _COMBINED_FIELD.match(line)
        if match:
            names = ",\u200b".join(part.strip() for part in match.group(2).split(","))
            lines[i] = f"{match.group(1)}{names}{match.group(3)}"


def skip_methods_without_own_docstring(app, what, name, obj, skip, options):
    """Leave out methods that have no docstring of their own.

    autodoc would show the docstring they inherit, which for ``forward`` of a ``torch.nn.Module`` is
    PyTorch's generic text; overrides of the library's own base classes are documented on the base.
    """
    if what == "class" and inspect.isfunction(obj) and not (obj.__doc__ or "").strip():
        return True
    return None


_PACKAGES = ("splitdyn", "splitdyn_cld", "splitdyn_cld.nets")


def resolve_reexported_name(app, env, node, contnode):
    """Link references to re-exported names, e.g. ``splitdyn.LinearSDE`` (or ``LinearSDE`` on the
    ``splitdyn`` page), to the page of the module that defines them (``splitdyn.linear_sde.LinearSDE``)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    package_name, _, name = target.rpartition(".")
    if not package_name:
        package_name, name = node.get("py:module") or "", target
    if package_name not in _PACKAGES:
        return None
    package = importlib.import_module(package_name)
    if name not in getattr(package, "__all__", ()):
        return None
    try:
        new_target = f"{defining_module(package, name)}.{name}"
    except ValueError:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], new_target, node, contnode)


def setup(app):
    app.add_directive("package-exports", PackageExports)
    app.connect("missing-reference", resolve_reexported_name)
    app.connect("autodoc-skip-member", skip_methods_without_own_docstring)
    # after sphinx.ext.napoleon (priority 500), which turns the numpydoc sections into fields
    app.connect("autodoc-process-docstring", join_combined_field_names, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
