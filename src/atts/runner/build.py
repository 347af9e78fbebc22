"""The engines of a run, built from its configuration and closed after it: the one place that
turns ``RunConfig`` engine settings into engines (runs, ``atts calibrate``, the server).

In-process engines (llama.cpp) share one pool of ``config.cores`` cores (engines/compute.py);
remote engines get their endpoints, timeout and the HTTP layer's retry policy.

``open_engines`` builds them on a worker thread from inside the event loop.  A model loading on
the main thread calls back into Python for every log line (llama.cpp's log callback), and a
Ctrl-C raised inside such a ctypes callback is swallowed ("Exception ignored"): the run then
went on as if never interrupted.  On a worker thread the load never sees the signal, the main
thread does; engines that finish loading after the run was cancelled are closed (their decode
threads joined), not left to the interpreter to free under those threads.  ``load_engines``
does the same outside an event loop (the server, before it serves).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from atts.config import REMOTE_ENGINES, RunConfig
from atts.engines import create_engine
from atts.engines.base import Engine
from atts.engines.compute import ComputePool

__all__ = ["build_engines", "close_engines", "contexts", "engine_options", "load_engines",
           "open_engines"]


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
        options = {"n_ctx": config.n_ctx, "n_threads": share.threads,
                   "n_contexts": contexts(config)}
        if share.pooled:
            options["compute"] = compute if compute is not None else ComputePool(plan.cores)
        return options
    return {}


def contexts(config: RunConfig) -> int:
    """Cached sequences per in-process engine: one per sample in flight keeps every active
    history cached, plus one per first step a pooled warm-up drafts for samples not yet in
    flight (their histories are live too, and without room each would evict an active
    sample's: measured on the tiny pair, 585 context rows read again at 8 sequences for 8 in
    flight, 76 at 16; bench/results/rereads.md)."""
    extra = 0
    if config.strategy in ("atts", "atts_cascade") and config.calibration in ("marginal",
                                                                              "adaptive"):
        extra = config.warmup_size
    return config.max_active_samples + extra


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


async def open_engines(config: RunConfig) -> tuple[Engine, Engine]:
    """``build_engines`` on a worker thread (see the module docstring)."""
    loading = asyncio.get_running_loop().run_in_executor(None, build_engines, config)
    try:
        return await asyncio.shield(loading)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # a load that fails has nothing to close
            await close_engines(*await loading)
        raise


def load_engines(config: RunConfig) -> tuple[Engine, Engine]:
    """``build_engines`` on a worker thread, for a caller outside an event loop (the server,
    before it serves): the same reason as ``open_engines``.  Interrupted, it lets the load end
    and closes what it built before the interrupt goes on."""
    with ThreadPoolExecutor(1, thread_name_prefix="atts-load") as pool:
        loading = pool.submit(build_engines, config)
        try:
            return loading.result()
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                asyncio.run(close_engines(*loading.result()))
            raise


async def close_engines(draft: Engine, target: Engine) -> None:
    await draft.close()
    if target is not draft:
        await target.close()
