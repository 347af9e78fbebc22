"""The ATTS service: shared engines and bank, admission control, and solving one conversation.

A request is solved in three calls, so the HTTP layer can answer errors before any work:

1. ``prepare(messages, options)``: the request's ``RunConfig`` (the server's defaults with the
   request's overrides, validated), the prompt (the target's chat template over the request's
   messages, rendered once, as token ids) and the context check.  Bad input: ``ApiError`` 400.
2. ``admit()``: a ticket in the bounded queue (requests running plus waiting for sample slots),
   or ``ApiError`` 429 with ``Retry-After`` when the queue is full.
3. ``solve(prepared)``: n samples of the ATTS loop (``run_sample`` with ``atts_round``), each
   its own task, in parallel; the answer is their majority vote over ``\\boxed{}`` answers.
   The whole solve runs under the request timeout (``ApiError`` 504); cancelling it (a client
   that went away) cancels every sample task and waits for them, so engine calls in flight
   return to zero before ``solve`` returns.

Shutdown (``shut_down``, called by the server when it begins to stop): nothing more is
admitted, and every solve still running at the end of the grace period ends with a 503
(``server_shutting_down``) the client receives, rather than the connection being cut.

Engines are shared by all requests behind one ``GuardedEngine`` each (the only place for
concurrency limits and retries); samples of all requests share ``max_active_samples`` slots
(the KV contexts of the llama.cpp engines).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atts.config import ConfigError, RunConfig
from atts.conformal import Thresholds, min_bank_size
from atts.engines.base import ChatMessage, Engine
from atts.grading import normalize_answer
from atts.pipeline.engine_pair import check_tokenizers, guarded_pair
from atts.pipeline.prompt import ANSWER_CUE, FORCED_ANSWER_TOKENS
from atts.pipeline.sample import SampleEnv, SampleSpec, TextSink, execute_sample
from atts.pipeline.strategies import atts_round
from atts.pipeline.trace import SampleTrace
from atts.report.metrics import majority_vote
from atts.seeds import derive_seed
from atts.serve.calibration import RequestCalibrator, ServeBank, bank_fingerprint, step_settings
from atts.serve.errors import ApiError, bad_request, shutting_down
from atts.serve.metrics import ServeMetrics
from atts.serve.settings import ServeSettings, server_config

log = logging.getLogger("atts.serve")
# Request fields that are RunConfig keys, and the name a client knows them by.
PARAMS = {"temperature": "temperature", "top_p": "top_p"}


@dataclass(frozen=True)
class SolveOptions:
    n: int = 1
    seed: int | None = None
    max_tokens: int | None = None
    trace: bool = False
    overrides: Mapping[str, Any] = field(default_factory=dict)  # RunConfig keys


@dataclass(frozen=True)
class Prepared:
    request_id: str
    options: SolveOptions
    config: RunConfig
    prompt_ids: tuple[int, ...]
    context_length: int
    seed: int
    grows_bank: bool  # the request drafts under the bank's fingerprinted step settings


@dataclass(frozen=True)
class Solution:
    prepared: Prepared
    traces: tuple[SampleTrace, ...]  # by sample index
    chosen: int  # the sample whose text answers (the vote's winner)
    votes: dict[str, int]  # normalised answer -> samples that gave it
    completion_tokens: tuple[int, ...]  # tokens of each sample's text
    warmup_steps: int
    bank_size: int

    @property
    def answer(self) -> str | None:
        return self.traces[self.chosen].answer


class Ticket:
    """A place in the admission queue; ``release`` is idempotent."""

    def __init__(self, service: AttsService) -> None:
        self._service = service
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._service.admitted -= 1


def model_name(engine: Engine) -> str:
    return Path(engine.info.model).name.removesuffix(".gguf")


class AttsService:
    def __init__(
        self,
        draft: Engine,
        target: Engine,
        config: RunConfig,
        bank: ServeBank,
        settings: ServeSettings,
    ) -> None:
        check_tokenizers(draft, target)
        self._draft_engine, self._target_engine = draft, target
        self.config = server_config(config.to_dict())
        self.bank = bank
        self.settings = settings
        self.metrics = ServeMetrics()
        self.draft, self.target = guarded_pair(config, draft, target)
        self._slots = asyncio.Semaphore(config.max_active_samples)
        self._context_length = min(draft.info.context_length, target.info.context_length)
        self._reserve = len(target.tokenize(ANSWER_CUE)) + FORCED_ANSWER_TOKENS
        self.model_id = (settings.served_model_name
                         or f"atts:{model_name(draft)}+{model_name(target)}")
        self.model_ids = tuple(dict.fromkeys((self.model_id, "atts")))  # the names answered
        self.created = int(time.time())
        self.admitted = 0
        self.solving = 0
        self.active_samples = 0
        self._deadlines: set[asyncio.Timeout] = set()  # of the solves running now
        self._closing_at: float | None = None  # loop time when shutdown ends running solves
        self._register_gauges()

    @classmethod
    def build(
        cls, config: RunConfig, settings: ServeSettings,
        engines: tuple[Engine, Engine] | None = None,
    ) -> AttsService:
        """Engines (built from ``config`` unless given) and the bank file of ``settings``."""
        from atts.runner.build import load_engines

        draft, target = engines if engines is not None else load_engines(config)
        fingerprint = bank_fingerprint(config, draft.info, target.info)
        bank = ServeBank.open(settings.bank_path, fingerprint, force=settings.force_bank,
                              save_every=settings.bank_save_every, max_size=settings.bank_max)
        return cls(draft, target, config, bank, settings)

    # -- 1. prepare -------------------------------------------------------------------------

    def prepare(self, messages: tuple[ChatMessage, ...], options: SolveOptions, *,
                param: str = "messages", id_prefix: str = "chatcmpl") -> Prepared:
        """``param``: the request field that holds the conversation (errors name it);
        ``id_prefix``: OpenAI's id prefix of the route ("chatcmpl", or "cmpl" for legacy)."""
        config = self._request_config(options)
        try:
            prompt = tuple(self._target_engine.render_chat(list(messages)))
        except Exception as err:  # a template may refuse an order of roles, for one
            raise bad_request(f"the model's chat template cannot render the {param}: {err}",
                              param=param) from err
        room = 2 * max(config.draft_tokens, config.target_tokens)
        if len(prompt) + room + self._reserve > self._context_length:
            raise bad_request(
                f"{len(prompt)} tokens of {param} leave too little of the "
                f"{self._context_length}-token context for one round ({room} tokens) and a "
                f"final answer ({self._reserve}); shorten the {param} or lower "
                "atts.draft_tokens / atts.target_tokens",
                param=param, code="context_length_exceeded",
            )
        context = self._context_length
        if options.max_tokens is not None:
            # run_sample starts a round only while its worst case still fits the context, so
            # this context ends the completion near max_tokens (plus a forced answer).
            context = min(context, len(prompt) + options.max_tokens + self._reserve)
        return Prepared(
            request_id=f"{id_prefix}-{uuid.uuid4().hex}",
            options=options,
            config=config,
            prompt_ids=prompt,
            context_length=context,
            seed=options.seed if options.seed is not None else secrets.randbits(63),
            grows_bank=step_settings(config) == step_settings(self.config),
        )

    def _request_config(self, options: SolveOptions) -> RunConfig:
        changes = dict(options.overrides)
        changes["samples"] = options.n
        alpha = float(changes.get("alpha", self.config.alpha))
        if 0 < alpha < 1:
            changes["warmup"] = max(self.config.warmup, min_bank_size(alpha) + 1)
        if options.max_tokens is not None:
            cap = max(1, options.max_tokens // 2)  # one round (draft + target step) fits
            for key in ("draft_tokens", "target_tokens"):
                changes[key] = min(int(changes.get(key, getattr(self.config, key))), cap)
        try:
            return self.config.replace(**changes)
        except ConfigError as err:
            key = str(err).removeprefix("invalid ").split(":", 1)[0]
            param = PARAMS.get(key, f"atts.{key}")
            raise bad_request(str(err), param=param) from err

    # -- 2. admit ---------------------------------------------------------------------------

    def admit(self) -> Ticket:
        if self._closing_at is not None:
            self.metrics.reject("shutting_down")
            raise shutting_down()
        if self.admitted >= self.settings.max_queue:
            self.metrics.reject("queue_full")
            wait = self.metrics.recent_latency or 1.0
            retry_after = str(max(1, min(60, round(wait))))
            raise ApiError(
                429, f"the server is at capacity ({self.settings.max_queue} requests admitted); "
                f"retry after {retry_after} s", type="rate_limit_error", code="queue_full",
                headers={"Retry-After": retry_after},
            )
        self.admitted += 1
        return Ticket(self)

    # -- 3. solve ---------------------------------------------------------------------------

    async def solve(self, prepared: Prepared, on_text: TextSink | None = None) -> Solution:
        config = prepared.config
        calibrator = RequestCalibrator(
            self.bank, Thresholds(config.alpha, config.discard_level),
            grows=prepared.grows_bank,
        )
        env = SampleEnv.build(
            config, self.draft, self.target,
            calibrator=calibrator,  # a CalibratorLike; p = None during warm-up
            prompt_ids=lambda _question: list(prepared.prompt_ids),
            context_length=prepared.context_length,
        )
        specs = [
            SampleSpec(prepared.request_id, "serve", prepared.request_id, "", i,
                       derive_seed(prepared.seed, i))
            for i in range(prepared.options.n)
        ]
        self.solving += 1
        tasks = [asyncio.ensure_future(self._sample(s, env, on_text if i == 0 else None))
                 for i, s in enumerate(specs)]
        deadline = asyncio.timeout(self.settings.request_timeout)
        try:
            async with deadline:
                self._deadlines.add(deadline)
                self._bound(deadline)
                traces = tuple(await asyncio.gather(*tasks))
        except TimeoutError as err:
            if not deadline.expired():
                raise
            if deadline.when() == self._closing_at:  # the shutdown's, not the request's own
                self.metrics.cancel("shutdown")
                raise shutting_down() from err
            self.metrics.cancel("timeout")
            raise ApiError(
                504, f"the request took longer than {self.settings.request_timeout:g} s and was "
                "stopped; lower n, atts.rounds or the step tokens, or retry later",
                type="timeout_error", code="request_timeout",
            ) from err
        except asyncio.CancelledError:  # the client went away, or the server cancels at exit
            self.metrics.cancel("client" if self._closing_at is None else "shutdown")
            raise
        finally:
            self._deadlines.discard(deadline)
            self.solving -= 1
            await _cancel_all(tasks)
        if on_text is not None:
            on_text(traces[0].text)
        return self._vote(prepared, traces, calibrator.warmup_steps)

    async def _sample(self, spec: SampleSpec, env: SampleEnv,
                      on_text: TextSink | None) -> SampleTrace:
        async with self._slots:
            self.active_samples += 1
            try:
                trace = await execute_sample(spec, env, atts_round, on_text)
            finally:
                self.active_samples -= 1
        if trace.status == "error":
            log.warning("sample %s/%d failed: %s", spec.question_id, spec.sample_index,
                        trace.error)
        self.metrics.observe_sample(trace)
        return trace

    def _vote(self, prepared: Prepared, traces: tuple[SampleTrace, ...],
              warmup_steps: int) -> Solution:
        ok = [t.sample_index for t in traces if t.status == "ok"]
        if not ok:
            raise ApiError(
                503, f"all {len(traces)} samples failed: {traces[0].error}",
                type="server_error", code="engine_error",
            )
        answers = [t.answer if t.status == "ok" else None for t in traces]
        winner = majority_vote(answers)
        keys = (normalize_answer(a, "math") for a in answers if a is not None)
        votes = Counter(k for k in keys if k)
        tokens = tuple(len(self._target_engine.tokenize(t.text)) for t in traces)
        self.metrics.observe_usage(len(prepared.prompt_ids), sum(tokens))
        return Solution(
            prepared=prepared, traces=traces, chosen=winner if winner is not None else ok[0],
            votes=dict(votes), completion_tokens=tokens, warmup_steps=warmup_steps,
            bank_size=len(self.bank),
        )

    # -- lifecycle and gauges ---------------------------------------------------------------

    def shut_down(self, within: float) -> None:
        """The server is stopping: admit nothing more (503), and end every solve still
        running ``within`` seconds from now with a 503 (``server_shutting_down``), so its
        client gets that answer before the server's grace period closes the connection."""
        self._closing_at = asyncio.get_running_loop().time() + within
        for deadline in self._deadlines:
            self._bound(deadline)

    def _bound(self, deadline: asyncio.Timeout) -> None:
        if self._closing_at is not None:
            when = deadline.when()
            deadline.reschedule(self._closing_at if when is None
                                else min(when, self._closing_at))

    async def aclose(self) -> None:
        """Save the bank and close the engines (the service owns them)."""
        await self.bank.aclose()
        await self._draft_engine.close()
        if self._target_engine is not self._draft_engine:
            await self._target_engine.close()

    def _register_gauges(self) -> None:
        """The gauges that read this service's present state at every scrape."""
        gauge = self.metrics.gauge
        gauge("atts_requests_admitted", "Requests admitted (running or waiting).",
              lambda: self.admitted)
        gauge("atts_queue_capacity", "Most requests admitted at once (--max-queue).",
              lambda: self.settings.max_queue)
        gauge("atts_requests_solving", "Requests whose samples are running or queued.",
              lambda: self.solving)
        gauge("atts_samples_active", "Samples holding a sample slot.",
              lambda: self.active_samples)
        gauge("atts_engine_in_flight_draft", "Draft engine calls in flight.",
              lambda: self.draft.in_flight)
        gauge("atts_engine_in_flight_target", "Target engine calls in flight.",
              lambda: self.target.in_flight)
        gauge("atts_engine_retries", "Engine calls retried since start.",
              lambda: self.draft.retries + self.target.retries)
        gauge("atts_bank_size", "Scores in the shared calibration bank.",
              lambda: len(self.bank))
        gauge("atts_bank_added", "Scores added to the bank since start.",
              lambda: self.bank.added)
        gauge("atts_bank_saves", "Bank saves since start.", lambda: self.bank.saves)
        gauge("atts_bank_save_errors", "Bank saves that failed.",
              lambda: self.bank.save_errors)
        gauge("atts_alpha", "The server's default alpha.", lambda: self.config.alpha)


async def _cancel_all(tasks: Sequence[asyncio.Future[SampleTrace]]) -> None:
    for task in tasks:
        task.cancel()
    # Shielded: a second cancellation of the caller must not leave samples running.
    await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
