"""Load test of `atts serve` on loopback: many concurrent clients, bounded, stops by itself.

The server runs in this process (a background thread with its own event loop, real sockets on
127.0.0.1, an ephemeral port).  By default its engines are fakes with realistic per-call
latency: a draft step ~30 ms, a target scoring pass ~10 ms, a target step ~120 ms (each with
+-50% jitter), engine concurrency 8 (draft) and 4 (target), like batch slots of GPU servers.
Draft steps have log-normal perplexities, so the bank, p-values and rejections are real; each
sample thinks 1-3 steps and then answers.  With ``--tiny`` it serves SmolLM2-135M as both
models instead (use few requests).

Clients: ``--clients`` workers share a budget of ``--requests`` attempts and a ``--time-cap``;
a ``--stream-share`` of the requests stream.  A 429 counts as rejected and its client waits
``--backoff`` seconds (impatient on purpose, to exercise admission).  Any other non-200, a
malformed answer or a stream without ``[DONE]`` counts as failed; the exit code is 1 if any
failed.

Run:
    .venv/bin/python bench/load_serve.py --clients 48 --requests 600 --max-queue 16
"""

from __future__ import annotations

import argparse
import asyncio
import math
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from atts.engines.fake import FakeCall, FakeEngine
from atts.serve.server import ServerThread
from atts.serve.service import AttsService
from atts.serve.settings import ServeSettings, server_config

QUESTION = [
    {"role": "system", "content": "Solve step by step; put the final answer in \\boxed{}."},
    {"role": "user", "content": "A train travels 120 km in 1.5 hours. What is its speed?"},
]


def fake_pair(seed: int) -> tuple[FakeEngine, FakeEngine]:
    rng = random.Random(seed)

    def jitter(seconds: float) -> float:
        return seconds * rng.uniform(0.5, 1.5)

    def draft_step(call: FakeCall) -> str:
        done = call.prompt.rsplit("<|im_start|>assistant\n", 1)[-1].count("\n\n")
        ppl = math.exp(rng.gauss(0.5, 0.4))
        if done >= rng.randint(1, 3):
            return f"So the speed is \\boxed{{{rng.choice(['80', '80', '80', '75'])}}}. " \
                   f"ppl={ppl:.3f}\n\n"
        return f"Divide distance by time, step {done}. ppl={ppl:.3f}\n\n"

    def score(call: FakeCall) -> float:
        text = call.step
        ppl = float(text.rsplit("ppl=", 1)[1]) if "ppl=" in text else 1.5
        return -math.log(ppl)

    def target_step(call: FakeCall) -> str:
        return "Check: 120 / 1.5 = 80, so \\boxed{80}.\n\n"

    draft = FakeEngine("fake-draft", step=draft_step, delay=lambda c: jitter(0.030))
    target = FakeEngine(
        "fake-target", step=target_step, score=score,
        delay=lambda c: jitter(0.010 if c.kind == "score" else 0.120),
    )
    return draft, target


@dataclass
class Tally:
    completed: int = 0
    rejected: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


async def one_request(client: httpx.AsyncClient, body: dict[str, Any], tally: Tally,
                      backoff: float) -> None:
    started = time.monotonic()
    try:
        if body.get("stream"):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = [line async for line in response.aiter_lines()]
                status = response.status_code
                ok = status == 200 and "data: [DONE]" in lines and not any(
                    line.startswith('data: {"error"') for line in lines)
        else:
            response = await client.post("/v1/chat/completions", json=body)
            status = response.status_code
            ok = status == 200 and bool(response.json()["choices"][0]["message"]["content"])
    except (httpx.HTTPError, KeyError, ValueError) as err:
        tally.failed += 1
        tally.failures.append(f"{type(err).__name__}: {err}")
        return
    if status == 429:
        tally.rejected += 1
        await asyncio.sleep(backoff)
    elif ok:
        tally.completed += 1
        tally.latencies.append(time.monotonic() - started)
    else:
        tally.failed += 1
        tally.failures.append(f"status {status}")


async def drive(url: str, args: argparse.Namespace) -> tuple[Tally, float]:
    tally = Tally()
    budget = iter(range(args.requests))
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.time_cap
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=args.client_timeout,
                                 limits=limits) as client:

        async def worker() -> None:
            for _ in budget:
                if time.monotonic() > deadline:
                    return
                body = {"model": "atts", "messages": QUESTION, "n": args.n,
                        "stream": rng.random() < args.stream_share}
                await one_request(client, body, tally, args.backoff)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
    return tally, time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--requests", type=int, default=600, help="attempts in all")
    parser.add_argument("--time-cap", type=float, default=120.0, help="seconds")
    parser.add_argument("--n", type=int, default=2, help="samples per request")
    parser.add_argument("--stream-share", type=float, default=0.25)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--max-active-samples", type=int, default=32)
    parser.add_argument("--backoff", type=float, default=0.5, help="seconds after a 429")
    parser.add_argument("--client-timeout", type=float, default=120.0)
    parser.add_argument("--alpha", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="SmolLM2-135M instead of fakes")
    args = parser.parse_args()

    values: dict[str, Any] = dict(alpha=args.alpha, rounds=6, max_retries=0,
                                  max_active_samples=args.max_active_samples)
    if args.tiny:
        from atts.models import resolve_model

        model = str(resolve_model("smollm2-135m"))
        values.update(engine="llama_cpp", draft=model, target=model, n_ctx=1024,
                      draft_tokens=24, target_tokens=24, draft_concurrency=2,
                      target_concurrency=2, draft_threads=1, target_threads=1)
        engines = None
    else:
        values.update(engine="fake", draft="fake-draft", target="fake-target",
                      draft_concurrency=8, target_concurrency=4)
        engines = fake_pair(args.seed)
    settings = ServeSettings(max_queue=args.max_queue, max_n=max(8, args.n),
                             request_timeout=args.client_timeout)
    service = AttsService.build(server_config(values), settings, engines=engines)
    with ServerThread(service, settings) as server:
        tally, wall = asyncio.run(drive(server.url, args))
        metrics = service.metrics
        rate = metrics.rejection_rate()
        bank = len(service.bank)
        peaks = (service.draft.peak_in_flight, service.target.peak_in_flight)
    lat = tally.latencies
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {platform.platform()}, Python {platform.python_version()}")
    print(f"engines: {'smollm2-135m (llama.cpp)' if args.tiny else 'fake, realistic delays'}")
    print()
    print("| attempts | completed | rejected 429 | failed | wall s | completed/s | "
          "p50 s | p99 s | max s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    attempts = tally.completed + tally.rejected + tally.failed
    print(f"| {attempts} | {tally.completed} | {tally.rejected} | {tally.failed} | "
          f"{wall:.1f} | {tally.completed / wall:.1f} | "
          f"{percentile(lat, 0.5) if lat else float('nan'):.3f} | "
          f"{percentile(lat, 0.99) if lat else float('nan'):.3f} | "
          f"{max(lat) if lat else float('nan'):.3f} |")
    print()
    print(f"server: realised rejection rate {rate:.3f} (alpha {args.alpha}), bank {bank} "
          f"scores, decisions {dict(metrics.decisions)}, peak engine calls in flight "
          f"draft/target {peaks[0]}/{peaks[1]}, mean latency "
          f"{statistics.fmean(lat) if lat else float('nan'):.3f} s")
    if tally.failures:
        print("failures:", tally.failures[:10])
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())
