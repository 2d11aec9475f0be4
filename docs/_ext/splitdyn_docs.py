"""Local Sphinx helpers for the splitdyn docs.

- ``.. package-exports:: PACKAGE`` renders a summary table of every name in ``PACKAGE.__all__``, each
  linked to its documentation on the page of the module that defines it. Package pages use it instead of
  documenting the re-exported objects a second time, so a name exported later appears without editing
  any page.
- References to re-exported names (``splitdyn.LinearSDE``, ``splitdyn.mcmc.MALA``) resolve to the defining
  module's entry, and so do names written in a docstring as its module sees them (``MixedScore`` in a module
  that imports it, ``Solution.trajectory``): a reference resolves the way Python would resolve the name there.
- The one-line summaries in the package-exports tables resolve their references in the context of the object
  they summarise (``:meth:`plan``` in a class's summary is that class's method).
- A private base class (``_RungeKutta``) is shown as its nearest public ancestor in "Bases:".
- A reference to an attribute listed in a class's "Attributes" section (rendered as an ``:ivar:`` field, which
  is no link target) links to that class.
- An attribute, constant or property docstring whose first sentence has a colon stays prose: napoleon reads
  ``Rank 0: the process ...`` as the type ``Rank 0``; types here come from the annotations.
- ``:ivar a, b:`` fields from numpydoc ``a, b:`` attribute entries keep both names (napoleon limitation).
- The API reference shows the public API: the modules in :data:`INTERNAL_MODULES` have no page and the names
  in :data:`INTERNAL_NAMES` are left out of their module's page and of the package-exports tables (they are
  documented in the source; ``tests/test_docs.py`` holds the rest of the reference to these lists). A name
  a package exports from an internal module is documented on the package's page.
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
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective


#: Modules that are implementation details: no API page (documented in their source).
INTERNAL_MODULES = frozenset({
    "splitdyn.checks",  # argument checks shared by the library's entry points
    "splitdyn.linalg",  # the batched matrix kernels behind the exact flows
    "splitdyn.oracles.small_matrices",  # k x k linear algebra of the mixture oracles
    "splitdyn.steps.exponential_weights",  # coefficient tables of the exponential integrators
})
#: Names in a public module's ``__all__`` (for use across the library's modules) that the reference leaves out.
INTERNAL_NAMES = frozenset({
    "splitdyn.steps.base.AffineMap",  # the affine kernel the plans apply
    "splitdyn.steps.base.REGISTRY",  # the step classes the order tests walk
})


def is_internal(module_name: str, name: str | None = None) -> bool:
    """Whether the module (or the name defined in it) is left out of the API reference."""
    if module_name in INTERNAL_MODULES:
        return True
    return name is not None and f"{module_name}.{name}" in INTERNAL_NAMES


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
        names = [name for name in getattr(package, "__all__", ())
                 if f"{defining_module(package, name)}.{name}" not in INTERNAL_NAMES]
        if not names:
            return [nodes.paragraph(text=f"{package.__name__} exports no names.")]
        lines = [".. list-table::", "   :widths: 25 75", "   :class: package-exports", ""]
        for name in names:
            module = defining_module(package, name)
            # each summary is parsed in the context of its object, so that its references resolve there
            obj = getattr(package, name)
            context = f"{module}|{name}" if inspect.isclass(obj) else module
            # a name defined in an internal module is documented on the package's page itself
            entry = f"{package.__name__}.{name}" if is_internal(module) else f"{module}.{name}"
            lines += [f"   * - :py:obj:`~{entry}`", f"     - :summary-context:`{context}` "
                      f"{summary(module, name)}"]
        content = StringList(lines, source=self.get_source_info()[0])
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return container.children


def summary_context_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    """``:summary-context:`module|Class``` (or ``module``): the Python module (and class) for the references of
    the same paragraph (set by :func:`set_summary_contexts`); renders nothing."""
    return [_SummaryContext(target=text)], []


class _SummaryContext(nodes.Invisible, nodes.Element):
    pass


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


_PROSE_TYPE = re.compile(r"^[A-Z]\w*\s")  # "The components ...", "Rank 0": a sentence, not a type


def keep_attribute_prose(app, what, name, obj, options, lines):
    """Undo napoleon's inline type of an attribute / constant / property docstring when it is the start of a
    sentence (``:type: The components a CLD score model returns``): put it back in front of the text."""
    if what not in ("attribute", "data", "property") or not lines or not lines[-1].startswith(":type: "):
        return
    head = lines[-1][len(":type: "):]
    if not _PROSE_TYPE.match(head):
        return
    del lines[-1]
    while lines and not lines[-1].strip():
        del lines[-1]
    if lines:
        lines[0] = f"{head}: {lines[0]}"
    else:
        lines.append(head)


def skip_methods_without_own_docstring(app, what, name, obj, skip, options):
    """Leave out methods that have no docstring of their own, and the internal names of a module.

    autodoc would show the docstring they inherit, which for ``forward`` of a ``torch.nn.Module`` is
    PyTorch's generic text; overrides of the library's own base classes are documented on the base.
    """
    if what == "class" and inspect.isfunction(obj) and not (obj.__doc__ or "").strip():
        return True
    if what == "module" and _is_internal_object(name, obj):
        return True
    return None


def _is_internal_object(name: str, obj) -> bool:
    for full in INTERNAL_NAMES:
        module, _, attribute = full.rpartition(".")
        if attribute == name and getattr(_import(module), attribute, None) is obj:
            return True
    return False


_ROOTS = ("splitdyn", "splitdyn_cld")


def _import(name: str):
    """The module ``name`` of this project, or ``None``."""
    if name.split(".")[0] not in _ROOTS:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _defined_in(klass, name: str):
    """The class of ``klass.__mro__`` that defines the attribute ``name`` (a value or an annotation)."""
    for owner in klass.__mro__:
        if name in vars(owner) or name in vars(owner).get("__annotations__", {}):
            return owner
    return None


def _documented_name(scope, dotted: str) -> str | None:
    """Where the object that ``dotted`` names in the namespace of ``scope`` (a module or a class of this
    project) is documented: the full name of its definition (``module.Class.attribute``), or ``None``."""
    obj = scope
    doc = scope.__name__ if inspect.ismodule(scope) else f"{scope.__module__}.{scope.__qualname__}"
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        value = getattr(obj, part, None)
        if value is None and inspect.ismodule(obj) and hasattr(obj, "__path__"):
            value = _import(f"{obj.__name__}.{part}")
        if inspect.ismodule(value):
            doc = value.__name__
        elif (inspect.isclass(value) or inspect.isroutine(value)) and hasattr(value, "__qualname__"):
            module = getattr(value, "__module__", None) or ""
            if module.split(".")[0] not in _ROOTS or "<" in value.__qualname__:
                return None
            doc = f"{module}.{value.__qualname__}"
        elif last and inspect.isclass(obj) and _defined_in(obj, part) is not None:
            owner = _defined_in(obj, part)  # an attribute, a property, a dataclass field
            if (owner.__module__ or "").split(".")[0] not in _ROOTS:
                return None
            return f"{owner.__module__}.{owner.__qualname__}.{part}"
        elif last and inspect.ismodule(obj) and hasattr(obj, part):  # a module constant
            if hasattr(obj, "__path__"):  # re-exported by a package
                try:
                    return f"{defining_module(obj, part)}.{part}"
                except ValueError:
                    return None
            return f"{obj.__name__}.{part}"
        else:
            return None
        obj = value
    return doc


def resolve_project_name(app, env, node, contnode):
    """Resolve a Python reference that Sphinx's own lookup missed the way Python resolves the name: a
    re-exported name (``splitdyn.mcmc.MALA``) goes to its defining module's entry, and a name as the module
    (or class) of the reference sees it (``MixedScore`` imported there, ``Solution.trajectory``) to the entry
    of the object it is."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    candidates = []
    head = target.split(".")[0]
    if head in _ROOTS:
        candidates.append((_import(head), target.split(".", 1)[1] if "." in target else ""))
    module = _import(node.get("py:module") or "")
    if module is not None:
        klass = node.get("py:class")
        if klass:
            scope = module
            for part in klass.split("."):
                scope = getattr(scope, part, None)
            if scope is not None:
                candidates.append((scope, target))
        candidates.append((module, target))
    domain = env.get_domain("py")
    for scope, dotted in candidates:
        if scope is None or not dotted:
            continue
        new_target = _documented_name(scope, dotted)
        if new_target is None or new_target == target:
            continue
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], new_target, node, contnode)
        if found is not None:
            return found
        owner, _, attribute = new_target.rpartition(".")
        if is_internal(owner):  # defined in an internal module: documented where a package re-exports it
            for package in _ROOTS:
                if attribute in getattr(_import(package), "__all__", ()):
                    found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"],
                                                f"{package}.{attribute}", node, contnode)
                    if found is not None:
                        return found
        if node["reftype"] in ("attr", "obj") and _lists_attribute(owner, attribute):
            found = domain.resolve_xref(env, node["refdoc"], app.builder, "class", owner, node, contnode)
            if found is not None:
                return found
    return None


def _lists_attribute(class_name: str, attribute: str) -> bool:
    """Whether the class ``class_name`` of this project lists ``attribute`` in the Attributes section of its
    docstring."""
    module_name, _, qualname = class_name.rpartition(".")
    klass = _import(module_name)
    for part in qualname.split("."):
        klass = getattr(klass, part, None)
    if not inspect.isclass(klass):
        return False
    doc = inspect.cleandoc(klass.__doc__ or "")
    section = re.search(r"^Attributes\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, flags=re.S | re.M)
    if section is None:
        return False
    names = re.findall(r"^(\w[\w, ]*?)\s*:", section.group(1), flags=re.M)
    return any(attribute in (n.strip() for n in entry.split(",")) for entry in names)


def set_summary_contexts(app, doctree):
    """Give the references of each package-exports summary the module and class of the summarised object."""
    for marker in list(doctree.findall(_SummaryContext)):
        module, _, klass = marker["target"].partition("|")
        paragraph = marker.parent
        for ref in paragraph.findall(addnodes.pending_xref):
            if ref.get("refdomain") == "py":
                ref["py:module"], ref["py:class"] = module, klass or None
        paragraph.remove(marker)


def public_bases(app, name, obj, options, bases):
    """Show a private base class (``_RungeKutta``) as its nearest public ancestor; drop it when that ancestor
    is already listed."""
    shown = []
    for base in bases:
        while (getattr(base, "__name__", "").startswith("_")
               and getattr(base, "__module__", "").split(".")[0] in _ROOTS):
            base = base.__mro__[1]
        if base not in shown and base is not object:
            shown.append(base)
    bases[:] = shown or [object]


def setup(app):
    app.add_directive("package-exports", PackageExports)
    app.add_role("summary-context", summary_context_role)
    app.add_node(_SummaryContext)
    app.connect("missing-reference", resolve_project_name)
    app.connect("doctree-read", set_summary_contexts)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-skip-member", skip_methods_without_own_docstring)
    # after sphinx.ext.napoleon (priority 500), which turns the numpydoc sections into fields
    app.connect("autodoc-process-docstring", join_combined_field_names, priority=600)
    app.connect("autodoc-process-docstring", keep_attribute_prose, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
