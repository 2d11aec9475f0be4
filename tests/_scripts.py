"""Load the repository's scripts (``examples/``, ``benchmarks/``, ``docs/tutorials/``) as modules in tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: Path, name: str | None = None) -> ModuleType:
    """Import the script at ``path`` (relative to the repository root, or absolute) as a fresh module."""
    path = ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a module."""
    return load_script(Path("examples") / f"{name}.py", f"example_{name}")
