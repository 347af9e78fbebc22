"""Configuration as a user writes it: YAML recipes and ``--set key=value`` overrides, read into
plain mappings of ``RunConfig`` keys (``RunConfig.from_mapping`` types and checks them).

Precedence (the CLI applies it): defaults < recipe < ``--set`` < explicit flags.  A recipe
holds only overrides of the defaults; ``check_replaced`` refuses a bad value even where a later
layer replaces it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from atts.config import ConfigError, RunConfig
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


def check_replaced(values: Mapping[str, Any], later: Mapping[str, Any], source: str) -> None:
    """Refuse a bad value that a later layer replaces (a recipe's ``samples: abc`` under
    ``--samples 2``): it is never used, but it is a mistake in a file the user will run
    again.  Each replaced value is checked on its own over the defaults, and only the problems
    that name its own key count (``engine: vllm`` alone lacks its URLs, which is not a problem
    of that value)."""
    problems: list[tuple[str, str]] = []
    for key in sorted(set(values) & set(later) & {f.name for f in fields(RunConfig)}):
        try:
            RunConfig.from_mapping({key: values[key]})
        except ConfigError as err:
            problems += [(k, line) for k, line in err.problems if k == key]
    if problems:
        lines = "; ".join(line for _, line in problems)
        raise ConfigError(f"{source}: {lines} (a later setting replaces it in this run; fix it "
                          "all the same)", problems=tuple(problems))
