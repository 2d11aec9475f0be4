"""Every public name of splitdyn and splitdyn_cld appears in the API reference."""

import importlib
import pkgutil
import re
from pathlib import Path

import splitdyn
import splitdyn_cld

DOCS = Path(__file__).resolve().parents[1] / "docs"


def documented_modules() -> set[str]:
    text = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.rst"))
    return set(re.findall(r"\.\. automodule:: ([\w.]+)", text))


def public_modules():
    for package in (splitdyn, splitdyn_cld):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not info.name.rsplit(".", 1)[-1].startswith("_"):
                yield importlib.import_module(info.name)


def test_every_public_module_with_public_names_has_an_api_page():
    documented = documented_modules()
    missing = [m.__name__ for m in public_modules() if getattr(m, "__all__", None) and m.__name__ not in documented]
    assert not missing, f"modules missing from docs/api: {missing}"


def test_every_name_exported_by_the_packages_is_defined_in_a_documented_module():
    documented = documented_modules()
    for package in (splitdyn, splitdyn_cld):
        for name in package.__all__:
            obj = getattr(package, name)
            module = getattr(obj, "__module__", None)
            if module is None:  # constants such as SAMPLERS
                continue
            assert module in documented, f"{package.__name__}.{name} is defined in {module}, which has no API page"
