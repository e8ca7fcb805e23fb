"""Fixtures of the serving fault tests: the registered model and the live-server helpers of ``tests/serve``.

Tests are not a package (``--import-mode=importlib``), so the modules are loaded from their files.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SERVE_TESTS = Path(__file__).resolve().parents[2] / "serve"


def _load(name: str) -> ModuleType:
    key = f"perftune_tests_serve_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, SERVE_TESTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


registered = _load("conftest").registered  # the same fixture: a small study, two registered versions


@pytest.fixture(scope="session")
def live() -> ModuleType:
    """``tests/serve/test_live.py``: ``server(registered, *args)`` starts ``perftune serve``; ``Load`` posts."""
    return _load("test_live")
