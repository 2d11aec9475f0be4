"""The package behaves like a release: license, version, citation, typing marker, extras, no print in the library."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import splitdyn

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_matches_the_spdx_string():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the splitdyn developers" in text
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"][0]  # PEP 639 license fields


def test_one_source_of_the_version():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "splitdyn.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", splitdyn.__version__)
    assert f'version: "{splitdyn.__version__}"' in (ROOT / "CITATION.cff").read_text()
    assert f"## [{splitdyn.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    assert "__version__ as release" in (ROOT / "docs" / "conf.py").read_text()


def test_citation_names_the_library_and_the_cld_paper():
    text = (ROOT / "CITATION.cff").read_text()
    assert "cff-version: 1.2.0" in text
    for word in ("Critically-Damped Langevin Diffusion", "Dockhorn", "Vahdat", "Kreis", "2022"):
        assert word in text


def test_typing_markers_ship_with_both_packages():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in ("splitdyn", "splitdyn_cld"):
        assert (ROOT / package / "py.typed").is_file() and data[package] == ["py.typed"]


def test_optional_dependencies_are_pinned_to_tested_ranges():
    unpinned_peers = {"blackjax", "jax[cpu]"}  # benchmark peers, not run by the test suite
    for extra, requirements in PYPROJECT["project"]["optional-dependencies"].items():
        if extra == "test":
            continue
        for requirement in requirements:
            if requirement in unpinned_peers:
                continue
            assert ">=" in requirement and "<" in requirement.replace("<=", ""), (extra, requirement)
    assert not any(r.startswith("matplotlib") for r in PYPROJECT["project"]["dependencies"])


def test_getting_started_and_readme_name_the_makefile_extras_and_the_docs_command():
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r'pip install -q -e "\.\[([a-z,]+)\]"', makefile).group(1)
    assert f'pip install -e ".[{extras}]"' in (ROOT / "docs" / "getting_started.rst").read_text()
    readme = (ROOT / "README.md").read_text()
    assert f"`{extras}`" in readme and "make docs" in readme
    for extra in extras.split(","):
        assert extra in PYPROJECT["project"]["optional-dependencies"]


def test_library_code_logs_instead_of_printing():
    # splitdyn_cld.cli.user_errors is the scripts' one-line error report (script plumbing, to stderr)
    allowed = {("splitdyn_cld/cli.py", "user_errors")}
    found = []
    for package in ("splitdyn", "splitdyn_cld"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.Module))]:
                for node in ast.walk(function):
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                        where = (str(path.relative_to(ROOT)), getattr(function, "name", "<module>"))
                        if where not in allowed and isinstance(function, ast.FunctionDef):
                            found.append(f"{where[0]}:{node.lineno} in {where[1]}")
    assert not found, found


def test_train_images_defaults_to_one_thread_and_says_why():
    from _scripts import load_example

    script = load_example("train_images")
    parser = script.build_parser()
    assert parser.parse_args([]).threads == 1
    assert "oversubscribes" in " ".join(parser.format_help().split())
    assert script.settings_from_args(["--config", "tiny", "--threads", "0"]).threads is None  # torch's choice
    assert script.settings_from_args(["--config", "tiny"]).threads == 1
