"""The server's settings: admission, limits on what one request may ask, and the bank file.

``ServeSettings`` is one frozen value built once (by ``atts serve`` from its flags, or by a
test) and passed to both the service and the app.  The ATTS defaults themselves (alpha,
rounds, step tokens, sampling) live in the server's ``RunConfig``, made by ``server_config``
(the ATTS strategy with one online marginal bank); these settings only bound what a request
may override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from atts.config import ConfigError, RunConfig
from atts.conformal import min_bank_size


@dataclass(frozen=True)
class ServeSettings:
    # Access.
    api_key: str | None = None  # None: no key needed; else "Authorization: Bearer KEY"
    served_model_name: str | None = None  # the model id clients see (vLLM's flag); None:
    # "atts:<draft>+<target>".  The alias "atts" is accepted either way.

    # Admission control (docs/SERVE.md, "Admission").
    max_queue: int = 32  # requests admitted at once (running + waiting for sample slots)
    request_timeout: float = 300.0  # seconds from admission to the answer, streams included
    max_body_bytes: int = 1 << 20
    keepalive_seconds: float = 10.0  # SSE comment lines while a stream waits for the vote
    shutdown_seconds: int = 10  # at shutdown, requests in flight get this long to finish

    # Bounds on what one request may ask.
    max_n: int = 8
    max_rounds: int = 32
    max_step_tokens: int = 1024
    max_completion_tokens: int = 16384  # the largest `max_tokens` accepted

    # The shared calibration bank.
    bank_path: str | None = None  # None: in memory only (lost at exit)
    force_bank: bool = False  # load a bank whose fingerprint differs
    bank_save_every: int = 20  # save after this many new scores (and at shutdown)
    bank_max: int = 100_000  # stop growing past this many scores (decisions go on)

    def __post_init__(self) -> None:
        positive = (
            "max_queue", "max_body_bytes", "max_n", "max_rounds", "max_step_tokens",
            "max_completion_tokens", "bank_save_every", "bank_max", "shutdown_seconds",
        )
        for key in positive:
            value = getattr(self, key)
            if value < 1:
                raise ValueError(f"invalid {key}: must be >= 1, got {value}")
        for key in ("request_timeout", "keepalive_seconds"):
            value = getattr(self, key)
            if not value > 0:
                raise ValueError(f"invalid {key}: must be > 0 seconds, got {value}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("invalid api_key: empty; pass a non-empty key or none at all")
        name = self.served_model_name
        if name is not None and (not name.strip() or name != name.strip()):
            raise ValueError(f"invalid served_model_name {name!r}: give a non-empty name "
                             "without surrounding spaces, or none for the default id")


# What the server always runs: ATTS on one online marginal bank that grows with every judged
# step.  A recipe or --set that asks for something else is refused, not overridden.
SERVER_FIXED = {"strategy": "atts", "calibration": "marginal", "calibration_file": None,
                "grow_bank": True, "sync_budget": 0}


def server_config(values: Mapping[str, Any]) -> RunConfig:
    """A ``RunConfig`` for the server from RunConfig keys: ``SERVER_FIXED``, and a warm-up
    size valid for alpha.  Values are read and checked first (``RunConfig.from_mapping``), so
    a bad one is named with its key."""
    typed = RunConfig.from_mapping(dict(values))
    fixed = RunConfig.from_mapping(SERVER_FIXED)
    clashing = [f"{key}={getattr(typed, key)!r}" for key in SERVER_FIXED if key in values
                and getattr(typed, key) != getattr(fixed, key)]
    if clashing:
        raise ConfigError(f"atts serve runs strategy atts on one online marginal bank; drop "
                          f"{', '.join(clashing)} (for other strategies or calibrations use "
                          "`atts run`)")
    merged = {**typed.to_dict(), **SERVER_FIXED}
    merged["warmup"] = max(typed.warmup, min_bank_size(typed.alpha) + 1)
    return RunConfig.from_mapping(merged)
