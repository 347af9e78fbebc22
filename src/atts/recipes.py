"""Configuration as a user writes it: YAML recipes and ``--set key=value`` overrides, read into
plain mappings of ``RunConfig`` keys (``RunConfig.from_mapping`` types and checks them).

Precedence (the CLI applies it): defaults < recipe < ``--set`` < explicit flags.  A recipe
holds only overrides of the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atts.config import ConfigError
from atts.textfile import read_text


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe: a flat mapping of configuration keys to values."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"recipe {file} does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(read_text(file)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {file} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {file} must be a mapping of key: value, got {type(data)}")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars (``0.1``, ``true``, ``null``)."""
    import yaml

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        result[key.strip().replace("-", "_")] = yaml.safe_load(raw) if raw else ""
    return result
