"""What a run folder records about a run and a bank records about its scores: the manifest
(and ``MANIFEST_RECORD``, its shape as every reader checks it), the calibration fingerprint, the
question hashes that refuse a resume on an edited dataset, and the check that a loaded bank's
values are ones its score can take.
"""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from importlib import metadata
from typing import Any

import atts
from atts.config import RunConfig
from atts.conformal import make_fingerprint
from atts.conformal.scores import score_label, score_rule
from atts.data import Problem
from atts.engines.base import Engine, EngineInfo
from atts.pipeline import prompt
from atts.runner.machine import machine_block
from atts.schema import (
    Flag,
    Integer,
    ListOf,
    MapOf,
    Nullable,
    Number,
    Record,
    Spec,
    Text,
    Unchecked,
)

__all__ = ["MANIFEST_RECORD", "calibration_fingerprint", "check_bank_values", "manifest",
           "prompt_sha256", "question_hashes"]


def prompt_sha256() -> str:
    """What the prompt looks like, so a calibration bank made under another prompt is refused."""
    text = "\x1f".join([prompt.SYSTEM, prompt.INSTRUCTION, prompt.WAIT_CUE, prompt.ANSWER_CUE])
    return hashlib.sha256(text.encode()).hexdigest()


def calibration_fingerprint(
    config: RunConfig, draft: EngineInfo, target: EngineInfo
) -> dict[str, str]:
    """What a calibration score depends on: which score it is, both models, the prompt, and
    how steps are drafted."""
    return make_fingerprint(
        score=score_label(config.score, config.score_k),
        draft=draft.model_sha256 or draft.model,
        target=target.model_sha256 or target.model,
        prompt_sha256=prompt_sha256(),
        step={
            "draft_tokens": config.draft_tokens,
            "step_stop": config.step_stop,
            "temperature": config.temperature,
            "top_p": config.top_p,
        },
    )


def question_hashes(problems: Sequence[Problem]) -> dict[str, str]:
    """Per problem id, a hash of what the model reads and what it is graded against: a resume
    on an edited dataset file is refused instead of mixing old rows with new questions."""
    return {p.id: hashlib.sha256(f"{p.question}\x1f{p.gold}".encode()).hexdigest()[:16]
            for p in problems}


def manifest(config: RunConfig, draft: Engine, target: Engine,
             problems: Sequence[Problem]) -> dict[str, Any]:
    versions = {"atts": atts.__version__, "python": platform.python_version()}
    for package in ("numpy", "llama_cpp_python", "torch", "transformers", "math-verify", "httpx"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "config": config.to_dict(),
        "versions": versions,
        "engines": {"draft": asdict(draft.info), "target": asdict(target.info)},
        "seed": config.seed,
        "problems": len(problems),
        "questions": question_hashes(problems),
        "command": " ".join(sys.argv),
        "created_at": time.time(),
        "machine": machine_block(),
        # The budget every strategy spends, and how the engines spent it (engines/compute.py).
        "compute": config.compute_plan().to_dict() if config.engine == "llama_cpp" else None,
    }


def check_bank_values(scores: Sequence[float], score: str, path: str) -> None:
    """A bank's values must be ones its score can take (perplexities are >= 1, surprisals
    >= 0; atts.conformal.scores); others cannot come from `atts calibrate`, and judging
    against them would reject the wrong steps."""
    least = score_rule(score).minimum
    low = [] if least is None else [s for s in scores if s < least]
    if low:
        raise ValueError(f"{path}: {len(low)} of {len(scores)} scores are below {least:g} (e.g. "
                         f"{min(low):g}), but {score} scores are >= {least:g}: the file was "
                         "edited or holds another score; run `atts calibrate` again")


def _config_record() -> Record:
    """A manifest's ``config``: each RunConfig key of the type RunConfig declares (what the
    values mean together is RunConfig's check, when a run is resumed from them).  Keys this
    version does not know are left alone here; a resume refuses them."""
    def spec(annotation: str) -> Spec:
        if annotation.endswith(" | None"):
            return Nullable(spec(annotation.removesuffix(" | None")))
        simple: dict[str, Spec] = {"int": Integer(None), "float": Number(), "str": Text(),
                                   "bool": Flag()}
        if annotation in simple:
            return simple[annotation]
        if annotation.startswith("tuple[str"):
            return ListOf(Text())
        raise TypeError(f"RunConfig type {annotation!r} has no manifest spec")

    return Record({f.name: spec(str(f.type)) for f in fields(RunConfig)}, noun="config")


_SESSION = Record({
    "boot_id": Nullable(Text()), "cpu": Nullable(Text()), "started_at": Nullable(Number()),
    "finished_at": Nullable(Number()), "wall_seconds": Nullable(Number(0.0)),
    "written": Nullable(Integer()), "note": Text(),
    "cpu_share": Nullable(Record({"busy": Number(), "idle": Number(), "steal": Number()},
                                 required=("steal",), noun="cpu_share")),
    "cpu_ticks_at_start": Nullable(MapOf(Integer(None))),
}, noun="session")
_LAST_SESSION = Record({
    **{key: Integer() for key in ("total", "skipped", "written", "errors", "retries",
                                  "draft_peak_in_flight", "target_peak_in_flight")},
    **{key: Number(0.0) for key in ("wall_seconds", "cpu_seconds", "cores_used")},
    "engine_calls": MapOf(MapOf(Unchecked())),
}, noun="last_session")
# The shape of manifest.json as every reader checks it (RunFolder.read_manifest).
MANIFEST_RECORD = Record({
    "config": _config_record(), "questions": MapOf(Text()), "problems": Integer(),
    "sessions": ListOf(_SESSION), "last_session": Nullable(_LAST_SESSION), "seed": Integer(None),
    "command": Text(), "created_at": Number(), "versions": MapOf(Text()),
    "engines": MapOf(MapOf(Unchecked())), "machine": MapOf(Unchecked()),
    "compute": Nullable(MapOf(Unchecked())),
}, required=("config",), noun="manifest")
