"""Scaffolding shared by the server tests (no tests here): scripted engines and a live server.

A scripted draft step reads ``"... ppl=<x>\\n\\n"``; the fake target scores it with mean
log-probability ``-log(x)``, so its perplexity is exactly x and, against the bank 1..99, its
p-value is ``(1 + #{b >= x}) / 100``: x = 2 -> 0.99 (accept at any alpha below it), x = 500 ->
0.01 (rejected at alpha = 0.1).  The draft writes one thinking step, then an answer step whose
answer cycles through ``answers`` call by call (so n samples give a known multiset of answers).
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from atts.config import RunConfig
from atts.engines.fake import FakeCall, FakeEngine
from atts.serve.calibration import ServeBank, bank_fingerprint
from atts.serve.server import ServerThread
from atts.serve.service import AttsService
from atts.serve.settings import ServeSettings, server_config

PPL = re.compile(r"ppl=([0-9.]+)")
BANK_1_99 = tuple(float(x) for x in range(1, 100))
USER = [{"role": "user", "content": "What is 3 + 4?"}]


def score_from_text(call: FakeCall) -> float:
    match = PPL.search(call.step)
    return -math.log(float(match.group(1))) if match else -1.0


def drafting(answers: Iterable[str] = ("7",), *, think_ppl: float = 2.0,
             answer_ppl: float = 2.0, thinking_steps: int = 1) -> Callable[[FakeCall], str]:
    cycle = itertools.cycle(list(answers))

    def step(call: FakeCall) -> str:
        assistant = call.prompt.rsplit("<|im_start|>assistant\n", 1)[-1]
        if assistant.count("ppl=") < thinking_steps:
            return f"Add the numbers. ppl={think_ppl}\n\n"
        return f"So the answer is \\boxed{{{next(cycle)}}}. ppl={answer_ppl}\n\n"

    return step


def target_writes(call: FakeCall) -> str:
    return "The target checks it: \\boxed{7}.\n\n"


def engines(
    draft_step: Callable[[FakeCall], str] | None = None,
    *,
    delay: float = 0.0,
    draft_name: str = "draft",
    target_name: str = "target",
) -> tuple[FakeEngine, FakeEngine]:
    draft = FakeEngine(draft_name, step=draft_step or drafting(), delay=lambda call: delay)
    target = FakeEngine(target_name, step=target_writes, score=score_from_text,
                        delay=lambda call: delay)
    return draft, target


def config(**changes: object) -> RunConfig:
    # The fake engines script step perplexities: these tests judge by them.
    base: dict[str, object] = dict(engine="fake", score="ppl", draft="draft", target="target",
                                   alpha=0.1,
                                   rounds=4, force_answer="target", max_retries=0,
                                   max_active_samples=16, draft_concurrency=16,
                                   target_concurrency=16)
    base.update(changes)
    return server_config(base)


def service(
    cfg: RunConfig | None = None,
    settings: ServeSettings | None = None,
    *,
    pair: tuple[FakeEngine, FakeEngine] | None = None,
    bank: Iterable[float] | None = BANK_1_99,
) -> AttsService:
    """A service on fake engines; ``bank=None`` starts from the settings' bank file (or empty)."""
    cfg = cfg or config()
    settings = settings or ServeSettings()
    draft, target = pair or engines()
    if bank is None:
        return AttsService.build(cfg, settings, engines=(draft, target))
    fingerprint = bank_fingerprint(cfg, draft.info, target.info)
    return AttsService(draft, target, cfg, ServeBank(fingerprint, scores=bank), settings)


@contextmanager
def running(svc: AttsService, settings: ServeSettings | None = None) -> Iterator[ServerThread]:
    with ServerThread(svc, settings or svc.settings) as server:
        yield server


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def settled(svc: AttsService) -> bool:
    """No request admitted, no sample running, no engine call in flight."""
    fakes = [svc.draft.engine, svc.target.engine]
    return (svc.admitted == 0 and svc.active_samples == 0 and svc.draft.in_flight == 0
            and svc.target.in_flight == 0
            and all(getattr(e, "in_flight", 0) == 0 for e in fakes))


def bank_file(tmp_path: Path) -> str:
    return str(tmp_path / "bank.json")


@dataclass(frozen=True)
class Scrape:
    """A /metrics page as prometheus_client's own parser reads it: the type of every family,
    and the value of every sample by name and labels (``scrape("atts_requests_total",
    route="/health", status="200")``; None when absent)."""

    types: dict[str, str]
    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    @classmethod
    def of(cls, text: str) -> Scrape:
        from prometheus_client.parser import text_string_to_metric_families

        types, values = {}, {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                values[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return cls(types, values)

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))
