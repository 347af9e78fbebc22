"""The server's metrics, kept by ``prometheus_client`` in a registry of their own.

Each ``ServeMetrics`` owns a ``CollectorRegistry``, never the process-wide default one, so two
servers in one process (the tests, a benchmark) count apart and never collide on a name.
``render`` is ``generate_latest`` of that registry: the Prometheus text format 0.0.4.

Everything is counted from the server's event loop.  Gauges that describe the present
(requests admitted, samples running, engine calls in flight, bank size) are read at scrape
time from callbacks that their owner registers with ``gauge``: the service registers its own,
so this module knows nothing of the service.

Metric names (all prefixed ``atts_``): ``requests_total{route,status}``,
``request_duration_seconds{route}`` and ``time_to_first_token_seconds{route,stream}``
(histograms), ``sample_duration_seconds`` (histogram), ``samples_total{status}``,
``steps_total{author,kind}``, ``decisions_total{decision}`` (accept / continue / regenerate /
warmup), ``rejection_rate`` (realised: continue plus regenerate over judged draft steps,
warm-up excluded; compare with alpha), ``tokens_total{kind}``, ``cancelled_total{reason}``,
``rejected_total{reason}``, and the gauges.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import prometheus_client as prom

from atts.pipeline.trace import REJECTED, SampleTrace

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                   300.0)
ANSWER_ROUTES = ("/v1/chat/completions", "/v1/completions")
DECISIONS = ("accept", "continue", "regenerate", "warmup")
TOKEN_KINDS = ("prompt", "completion", "draft_decode", "target_decode", "target_score")
CANCEL_REASONS = ("client", "timeout", "shutdown")
REJECT_REASONS = ("queue_full", "shutting_down")


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        registry = self.registry
        self._requests = prom.Counter(
            "atts_requests", "HTTP requests by route and status.", ("route", "status"),
            registry=registry)
        self._request_seconds = prom.Histogram(
            "atts_request_duration_seconds", "Time from request to the last byte of the answer.",
            ("route",), buckets=LATENCY_BUCKETS, registry=registry)
        self._first_content = prom.Histogram(
            "atts_time_to_first_token_seconds",
            "Seconds from request arrival to the first content chunk of a stream "
            '(stream="true"), or to the whole answer of a non-streamed request '
            '(stream="false"); requests that fail before any content are not observed.',
            ("route", "stream"), buckets=LATENCY_BUCKETS, registry=registry)
        self._sample_seconds = prom.Histogram(
            "atts_sample_duration_seconds", "Wall time of one ATTS sample.",
            buckets=LATENCY_BUCKETS, registry=registry)
        self._samples = prom.Counter("atts_samples", "Finished samples by status.",
                                     ("status",), registry=registry)
        self._steps = prom.Counter(
            "atts_steps", "Steps by author and kind (step, wait, forced_answer).",
            ("author", "kind"), registry=registry)
        self._decisions = _counter(
            registry, "atts_decisions",
            "Judged draft steps by decision; warmup: no p-value yet, sent to the target.",
            "decision", DECISIONS)
        self._tokens = _counter(registry, "atts_tokens", "Tokens by kind.", "kind", TOKEN_KINDS)
        self._cancelled = _counter(registry, "atts_cancelled",
                                   "Requests whose work was cancelled, by reason.", "reason",
                                   CANCEL_REASONS)
        self._rejected = _counter(registry, "atts_rejected",
                                  "Requests refused before any work, by reason.", "reason",
                                  REJECT_REASONS)
        self.gauge("atts_rejection_rate",
                   "Realised rejection rate: (continue + regenerate) / judged, warm-up excluded.",
                   self.rejection_rate)
        self._recent_latency: float | None = None

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A gauge whose value ``read`` gives at every scrape."""
        prom.Gauge(name, help_text, registry=self.registry).set_function(read)

    # -- counting ---------------------------------------------------------------------------

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self._requests.labels(route, str(status)).inc()
        self._request_seconds.labels(route).observe(seconds)
        if route in ANSWER_ROUTES and status == 200:
            # A slow moving average of good answers: the Retry-After hint of a 429.
            old = self._recent_latency
            self._recent_latency = seconds if old is None else 0.8 * old + 0.2 * seconds

    def observe_first_content(self, route: str, *, stream: bool, seconds: float) -> None:
        self._first_content.labels(route, "true" if stream else "false").observe(seconds)

    def observe_sample(self, trace: SampleTrace) -> None:
        self._samples.labels(trace.status).inc()
        self._sample_seconds.observe(trace.seconds.wall)
        for step in trace.steps:
            self._steps.labels(step.author, step.kind).inc()
            if step.decision is not None:
                self._decisions.labels(
                    "warmup" if step.p_value is None else step.decision).inc()
        self._tokens.labels("draft_decode").inc(trace.tokens.draft_decode)
        self._tokens.labels("target_decode").inc(trace.tokens.target_decode)
        self._tokens.labels("target_score").inc(trace.tokens.target_score)

    def observe_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self._tokens.labels("prompt").inc(prompt_tokens)
        self._tokens.labels("completion").inc(completion_tokens)

    def cancel(self, reason: str) -> None:
        self._cancelled.labels(reason).inc()

    def reject(self, reason: str) -> None:
        self._rejected.labels(reason).inc()

    # -- reading ----------------------------------------------------------------------------

    @property
    def recent_latency(self) -> float | None:
        return self._recent_latency

    @property
    def decisions(self) -> Counter[str]:
        return _counts(self._decisions)

    @property
    def cancelled(self) -> Counter[str]:
        return _counts(self._cancelled)

    @property
    def rejected(self) -> Counter[str]:
        return _counts(self._rejected)

    def rejection_rate(self) -> float:
        decisions = self.decisions
        rejected = sum(decisions[d] for d in REJECTED)
        judged = decisions["accept"] + rejected  # warm-up decisions (no p-value) left out
        return rejected / judged if judged else 0.0

    def render(self) -> str:
        return prom.generate_latest(self.registry).decode()


def _counter(registry: prom.CollectorRegistry, name: str, help_text: str, label: str,
             values: tuple[str, ...]) -> prom.Counter:
    """A counter of one label whose known values show from the start, at 0."""
    counter = prom.Counter(name, help_text, (label,), registry=registry)
    for value in values:
        counter.labels(value)
    return counter


def _counts(counter: prom.Counter) -> Counter[str]:
    """A one-label counter's values by label value.  Read through the counter's own
    ``collect`` (not the registry's), so a gauge may call it during a scrape."""
    counts: Counter[str] = Counter()
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                (value,) = sample.labels.values()
                counts[value] += int(sample.value)
    return counts
