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
    except yaml.YAMLError as err:  # one line: where, and what (the parser's own text spans
        mark = getattr(err, "problem_mark", None)  # several lines, with the source quoted)
        line = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ConfigError(f"recipe {file}{line} is not valid YAML ({what})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {file} must be a mapping of key: value, got "
                          f"{type(data).__name__}")
    known = {f.name for f in fields(RunConfig)}
    unknown = [key for key in data if key not in known]
    if unknown:
        where = f"recipe {file}:{_key_line(read_text(file), unknown[0])}"
        if not all(isinstance(key, str) for key in unknown):
            raise ConfigError(f"{where}: {unknown[0]!r} is not a configuration key (a key is "
                              "a name such as samples)")
        try:
            RunConfig.from_mapping({key: data[key] for key in unknown})
        except ConfigError as err:  # names the keys, with the nearest known ones
            raise ConfigError(f"{where}: {err}") from None
    return data


def _key_line(text: str, key: Any) -> int:
    """The line of ``key`` in a recipe's top-level mapping (1 if it cannot be told)."""
    import yaml

    node = yaml.compose(text)
    for key_node, _ in getattr(node, "value", ()):
        if yaml.safe_load(yaml.serialize(key_node)) == key:
            return int(key_node.start_mark.line) + 1
    return 1


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs; values are read as YAML scalars (``0.1``, ``true``, ``null``)."""
    import yaml

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            what = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({what})") from err
        result[key.strip().replace("-", "_")] = value
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
