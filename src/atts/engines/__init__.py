"""Engine registry: build an engine from a spec string, importing its backend only then.

A spec is ``"BACKEND:MODEL"`` (``"llama_cpp:qwen2.5-coder-1.5b"``, ``"transformers:tiny"``,
``"llama_cpp:/path/to/model.gguf"``), a bare backend (``"llama_cpp"``: the model defaults to
the role's model, ``draft`` -> qwen2.5-coder-0.5b, ``target`` -> qwen2.5-coder-1.5b), or a bare
model name or path (served by the default backend, llama_cpp).  The backend class is called as
``cls(model, **options)``, or ``cls(**options)`` when neither the spec nor the role names a
model (the ``fake`` backend).

This module stays light: ``import atts.engines.base`` runs it, so no backend is imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

from atts.engines.base import Engine

# backend name -> (module, class); the module is imported on first use.
BACKENDS: dict[str, tuple[str, str]] = {
    "llama_cpp": ("atts.engines.llama_cpp", "LlamaCppEngine"),
    "transformers": ("atts.engines.transformers_engine", "TransformersEngine"),
    "fake": ("atts.engines.fake", "FakeEngine"),
    "vllm": ("atts.engines.remote.vllm", "VllmEngine"),
    "sglang": ("atts.engines.remote.sglang", "SglangEngine"),
    "openai": ("atts.engines.remote.openai_compat", "OpenAICompatEngine"),
}

DEFAULT_BACKEND = "llama_cpp"
_ROLES = ("draft", "target")
_NEEDS_MODEL = ("llama_cpp", "transformers")


def parse_spec(spec: str, role: str) -> tuple[str, str | None]:
    """Split a spec into (backend, model or None), applying the role's default model."""
    if role not in _ROLES:
        raise ValueError(f"role must be one of {_ROLES}, got {role!r}")
    if not spec:
        raise ValueError("empty engine spec; use e.g. 'llama_cpp:qwen2.5-coder-0.5b'")
    backend, sep, model = spec.partition(":")
    if backend in BACKENDS:
        chosen: str | None = model if sep and model else None
    else:
        backend, chosen = DEFAULT_BACKEND, spec
    if chosen is None and backend in _NEEDS_MODEL:
        chosen = role  # the role alias resolves to the role's default named model
    return backend, chosen


def create_engine(spec: str, role: str, **options: Any) -> Engine:
    """Build the engine ``spec`` describes for ``role`` ("draft" or "target")."""
    backend, model = parse_spec(spec, role)
    module_name, class_name = BACKENDS[backend]
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        # Backends import their heavy dependency in the constructor, hence inside the try.
        engine: Engine = cls(model, **options) if model is not None else cls(**options)
    except ImportError as err:
        extra = {
            "llama_cpp": "llama", "transformers": "hf",
            "vllm": "remote", "sglang": "remote", "openai": "remote",
        }.get(backend)
        hint = f" (install it: pip install 'atts[{extra}]')" if extra else ""
        raise ValueError(f"engine backend {backend!r} cannot be loaded: {err}{hint}") from err
    return engine


__all__ = ["BACKENDS", "DEFAULT_BACKEND", "create_engine", "parse_spec"]
