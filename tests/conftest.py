"""Shared fixtures.  ``tiny_model``: the real SmolLM2-135M GGUF that `make test` pulls first.

Where it is missing the tests that need it skip with the command to run, except under CI
(``CI`` set), where a missing model is a setup bug and fails loudly.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from atts.engines.base import ModelNotFoundError
    from atts.models import resolve_model

    try:
        return resolve_model("smollm2-135m")
    except ModelNotFoundError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"tiny model not installed: {err}")


@pytest.fixture(scope="session")
def bench_script() -> Callable[[str], ModuleType]:
    """Import a script of bench/ by name (bench/ is scripts, not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None, name
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve their module by name
        spec.loader.exec_module(module)
        return module

    return load
