"""Shared fixtures.  ``tiny_model``: the real SmolLM2-135M GGUF that `make test` pulls first.

Where it is missing the tests that need it skip with the command to run, except under CI
(``CI`` set), where a missing model is a setup bug and fails loudly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
