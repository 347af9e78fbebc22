"""A run from configuration to run folder: engines, manifest, calibration bank, execution.

The CLI (``atts run``, ``atts calibrate``) and the server call these; they hold no logic of
their own beyond parsing.
"""

from __future__ import annotations

import asyncio
import hashlib
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import atts
from atts.config import REMOTE_ENGINES, RunConfig
from atts.conformal import load_bank, make_fingerprint, save_bank
from atts.conformal.scores import score_label, score_rule
from atts.data import Problem, load_dataset
from atts.engines import create_engine
from atts.engines.base import Engine, EngineInfo
from atts.engines.compute import ComputePool
from atts.pipeline import prompt
from atts.pipeline.sample import SampleSpec, SampleState
from atts.pipeline.strategies import draft_and_score
from atts.runner.machine import machine_block, session_end, session_start
from atts.runner.run_folder import RunFolder
from atts.runner.runner import RunOutcome, execute
from atts.seeds import derive_seed


def engine_options(config: RunConfig, role: str,
                   compute: ComputePool | None = None) -> dict[str, Any]:
    """The constructor options of the ``role`` engine; ``compute`` is the run's shared pool of
    cores, handed to every in-process engine that the plan puts in it."""
    if config.engine in REMOTE_ENGINES:
        options: dict[str, Any] = {
            "base_url": config.draft_url if role == "draft" else config.target_url,
            "n_ctx": config.n_ctx,
            "timeout": config.remote_timeout,
            "max_retries": config.max_retries,  # the HTTP layer's policy; see guarded.py
            "backoff": config.retry_backoff,
        }
        tokenizer = config.draft_tokenizer if role == "draft" else config.target_tokenizer
        if tokenizer:
            options["tokenizer"] = tokenizer
        return options
    if config.engine == "llama_cpp":
        plan = config.compute_plan()
        share = plan.draft if role == "draft" else plan.target
        # One cached context per sample in flight keeps every active prefix in the KV cache.
        options = {"n_ctx": config.n_ctx, "n_threads": share.threads,
                   "n_contexts": config.max_active_samples}
        if share.pooled:
            options["compute"] = compute if compute is not None else ComputePool(plan.cores)
        return options
    return {}


def build_engines(config: RunConfig) -> tuple[Engine, Engine]:
    """Both engines of a run; the in-process ones share one pool of ``config.cores`` cores."""
    compute = ComputePool(config.compute_plan().cores)
    draft = create_engine(
        f"{config.engine}:{config.draft}", "draft", **engine_options(config, "draft", compute)
    )
    if (config.draft, config.draft_url) == (config.target, config.target_url):
        return draft, draft
    target = create_engine(
        f"{config.engine}:{config.target}", "target",
        **engine_options(config, "target", compute),
    )
    return draft, target


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


def run_job(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    retry_failed: bool = False,
    force_bank: bool = False,
    show_progress: bool = True,
    engines: tuple[Engine, Engine] | None = None,
    problems: Sequence[Problem] | None = None,
) -> RunOutcome:
    """Run (or resume) ``config`` into the folder ``out``.  Engines are built and closed here
    unless given.  Everything runs in one event loop, engines included."""
    problems = list(problems) if problems is not None else load_dataset(
        config.dataset, limit=config.limit, offset=config.offset, ids=list(config.ids) or None
    )
    return asyncio.run(
        _run_job(config, RunFolder(out), problems, engines, overwrite=overwrite,
                 retry_failed=retry_failed, force_bank=force_bank, show_progress=show_progress)
    )


async def _run_job(
    config: RunConfig, folder: RunFolder, problems: Sequence[Problem],
    engines: tuple[Engine, Engine] | None, *, overwrite: bool, retry_failed: bool,
    force_bank: bool, show_progress: bool,
) -> RunOutcome:
    draft, target = engines if engines is not None else build_engines(config)
    try:
        bank: Sequence[float] = ()
        if config.calibration == "file":
            assert config.calibration_file is not None
            expected = calibration_fingerprint(config, draft.info, target.info)
            bank = load_bank(config.calibration_file, expected, force=force_bank).tolist()
            check_bank_values(bank, config.score, config.calibration_file)
        with folder.locked():
            folder.prepare(manifest(config, draft, target, problems), overwrite=overwrite)
            recorded = folder.read_manifest().get("sessions") or []
            # Rows are counted only for a folder written before sessions were recorded (the
            # one case session_start needs them); execute reads them again in any case.
            sessions = session_start(0 if recorded else len(folder.rows()), recorded)
            folder.update_manifest(sessions=sessions)
            outcome = await execute(
                config, problems, draft, target, folder,
                bank_scores=bank, retry_failed=retry_failed, show_progress=show_progress,
            )
            done: dict[str, Any] = {
                "sessions": session_end(sessions, outcome.wall_seconds, outcome.written)}
            # last_session is the last session that wrote samples: opening a finished run
            # again must not replace its timings with those of a session that did nothing.
            if outcome.written or "last_session" not in folder.read_manifest():
                done["last_session"] = asdict(outcome)
            folder.update_manifest(**done)
        return outcome
    finally:
        if engines is None:
            await _close(draft, target)


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


def calibrate(
    config: RunConfig, pool: str, out: str | Path, *, limit: int, offset: int = 0,
    samples: int = 1, show_progress: bool = True,
) -> tuple[Path, int]:
    """Draft first steps on a calibration pool disjoint from the test sets, score them with the
    target, and save the bank with its fingerprint."""
    problems = load_dataset(pool, limit=limit, offset=offset)

    async def job() -> tuple[list[float], dict[str, str]]:
        draft, target = build_engines(config)
        try:
            scores = await _calibration_scores(config, problems, draft, target, samples,
                                               show_progress)
            return scores, calibration_fingerprint(config, draft.info, target.info)
        finally:
            await _close(draft, target)

    scores, fingerprint = asyncio.run(job())
    if not scores:  # every first step was empty: an empty bank could never reject anything
        raise ValueError(f"no first step of the {len(problems)} pool problems could be scored; "
                         f"nothing was written to {out}")
    return save_bank(out, scores, fingerprint), len(scores)


async def _calibration_scores(
    config: RunConfig, problems: Sequence[Problem], draft: Engine, target: Engine,
    samples: int, show_progress: bool,
) -> list[float]:
    from tqdm import tqdm

    from atts.pipeline.executor import guarded_pair
    from atts.pipeline.sample import SampleEnv

    guarded_draft, guarded_target = guarded_pair(config, draft, target)
    env = SampleEnv(
        config=config,
        draft=guarded_draft,
        target=guarded_target,
        calibrator=None,  # drafting and scoring need no bank
        prompt_ids=lambda q: target.render_chat(prompt.question_messages(q)),
        context_length=min(draft.info.context_length, target.info.context_length),
    )
    bar = tqdm(total=len(problems) * samples, unit="step", desc="calibrate",
               disable=not show_progress, file=sys.stderr)
    slots = asyncio.Semaphore(config.max_active_samples)

    async def one(problem: Problem, index: int) -> float | None:
        spec = SampleSpec(problem.id, problem.dataset, problem.question, problem.gold, index,
                          derive_seed(config.seed, "calibrate", problem.id, index))
        async with slots:
            drafted = await draft_and_score(SampleState(spec, env.prompt_ids(problem.question)),
                                            env, 0)
        bar.update(1)
        return drafted.value

    results = await asyncio.gather(*(one(p, i) for p in problems for i in range(samples)))
    bar.close()
    return [s for s in results if s is not None]


async def _close(draft: Engine, target: Engine) -> None:
    await draft.close()
    if target is not draft:
        await target.close()
