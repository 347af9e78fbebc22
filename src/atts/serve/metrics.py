"""The server's counters and histograms, rendered in the Prometheus text format (0.0.4).

Everything is updated from the server's event loop only, so plain ints suffice.  Gauges that
describe the present (requests admitted, samples running, engine calls in flight, bank size)
are read at render time from callbacks the service registers.

Metric names (all prefixed ``atts_``): ``requests_total{route,status}``,
``request_duration_seconds{route}`` (histogram), ``sample_duration_seconds`` (histogram),
``samples_total{status}``, ``steps_total{author,kind}``, ``decisions_total{decision}``
(accept / continue / regenerate / warmup), ``rejection_rate`` (realised: continue plus
regenerate over judged draft steps, warm-up excluded; compare with alpha),
``tokens_total{kind}``, ``cancelled_total{reason}``, ``rejected_total{reason}``, and the gauges.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from atts.pipeline.trace import SampleTrace

if TYPE_CHECKING:
    from atts.serve.service import AttsService

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                   300.0)
Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: Labels) -> Iterable[str]:
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            cumulative += count
            yield f"{name}_bucket{_labels((*labels, ('le', _num(bound))))} {cumulative}"
        yield f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {self.n}"
        yield f"{name}_sum{_labels(labels)} {_num(self.total)}"
        yield f"{name}_count{_labels(labels)} {self.n}"


class ServeMetrics:
    def __init__(self) -> None:
        self.requests: Counter[Labels] = Counter()
        self.request_seconds: dict[Labels, Histogram] = {}
        self.sample_seconds = Histogram()
        self.samples: Counter[Labels] = Counter()
        self.steps: Counter[Labels] = Counter()
        self.decisions: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self._recent_latency: float | None = None

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self._gauges[name] = (help_text, read)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests[(("route", route), ("status", str(status)))] += 1
        key: Labels = (("route", route),)
        self.request_seconds.setdefault(key, Histogram()).observe(seconds)
        if route == "/v1/chat/completions" and status == 200:
            # A slow moving average of good answers: the Retry-After hint of a 429.
            old = self._recent_latency
            self._recent_latency = seconds if old is None else 0.8 * old + 0.2 * seconds

    @property
    def recent_latency(self) -> float | None:
        return self._recent_latency

    def observe_sample(self, trace: SampleTrace) -> None:
        self.samples[(("status", trace.status),)] += 1
        self.sample_seconds.observe(trace.seconds.wall)
        for step in trace.steps:
            self.steps[(("author", step.author), ("kind", step.kind))] += 1
            if step.decision is not None:
                self.decisions["warmup" if step.p_value is None else step.decision] += 1
        self.tokens["draft_decode"] += trace.tokens.draft_decode
        self.tokens["target_decode"] += trace.tokens.target_decode
        self.tokens["target_score"] += trace.tokens.target_score

    def observe_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.tokens["prompt"] += prompt_tokens
        self.tokens["completion"] += completion_tokens

    def rejection_rate(self) -> float:
        judged = sum(self.decisions[d] for d in ("accept", "continue", "regenerate"))
        rejected = self.decisions["continue"] + self.decisions["regenerate"]
        return rejected / judged if judged else 0.0

    def render(self) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")

        family("atts_requests_total", "counter", "HTTP requests by route and status.")
        for labels, value in sorted(self.requests.items()):
            out.append(f"atts_requests_total{_labels(labels)} {value}")
        family("atts_request_duration_seconds", "histogram",
               "Time from request to the last byte of the answer.")
        for labels, hist in sorted(self.request_seconds.items()):
            out.extend(hist.lines("atts_request_duration_seconds", labels))
        family("atts_sample_duration_seconds", "histogram", "Wall time of one ATTS sample.")
        out.extend(self.sample_seconds.lines("atts_sample_duration_seconds", ()))
        family("atts_samples_total", "counter", "Finished samples by status.")
        for labels, value in sorted(self.samples.items()):
            out.append(f"atts_samples_total{_labels(labels)} {value}")
        family("atts_steps_total", "counter", "Steps by author and kind (step, wait, forced).")
        for labels, value in sorted(self.steps.items()):
            out.append(f"atts_steps_total{_labels(labels)} {value}")
        family("atts_decisions_total", "counter",
               "Judged draft steps by decision; warmup: no p-value yet, sent to the target.")
        for name in ("accept", "continue", "regenerate", "warmup"):
            out.append(f'atts_decisions_total{{decision="{name}"}} {self.decisions[name]}')
        family("atts_rejection_rate", "gauge",
               "Realised rejection rate: (continue + regenerate) / judged, warm-up excluded.")
        out.append(f"atts_rejection_rate {_num(self.rejection_rate())}")
        family("atts_tokens_total", "counter", "Tokens by kind.")
        for kind, value in sorted(self.tokens.items()):
            out.append(f'atts_tokens_total{{kind="{kind}"}} {value}')
        family("atts_cancelled_total", "counter", "Requests whose work was cancelled, by reason.")
        for reason, value in sorted(self.cancelled.items()):
            out.append(f'atts_cancelled_total{{reason="{reason}"}} {value}')
        family("atts_rejected_total", "counter", "Requests refused before any work, by reason.")
        for reason, value in sorted(self.rejected.items()):
            out.append(f'atts_rejected_total{{reason="{reason}"}} {value}')
        for name, (help_text, read) in self._gauges.items():
            family(name, "gauge", help_text)
            out.append(f"{name} {_num(float(read()))}")
        return "\n".join(out) + "\n"


def register_gauges(metrics: ServeMetrics, service: AttsService) -> None:
    """The gauges that read the service's present state at every scrape."""
    gauge = metrics.gauge
    gauge("atts_requests_admitted", "Requests admitted (running or waiting).",
          lambda: service.admitted)
    gauge("atts_queue_capacity", "Most requests admitted at once (--max-queue).",
          lambda: service.settings.max_queue)
    gauge("atts_requests_solving", "Requests whose samples are running or queued.",
          lambda: service.solving)
    gauge("atts_samples_active", "Samples holding a sample slot.",
          lambda: service.active_samples)
    gauge("atts_engine_in_flight_draft", "Draft engine calls in flight.",
          lambda: service.draft.in_flight)
    gauge("atts_engine_in_flight_target", "Target engine calls in flight.",
          lambda: service.target.in_flight)
    gauge("atts_engine_retries", "Engine calls retried since start.",
          lambda: service.draft.retries + service.target.retries)
    gauge("atts_bank_size", "Scores in the shared calibration bank.", lambda: len(service.bank))
    gauge("atts_bank_added", "Scores added to the bank since start.", lambda: service.bank.added)
    gauge("atts_bank_saves", "Bank saves since start.", lambda: service.bank.saves)
    gauge("atts_bank_save_errors", "Bank saves that failed.", lambda: service.bank.save_errors)
    gauge("atts_alpha", "The server's default alpha.", lambda: service.config.alpha)


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    value = float(value)
    return str(int(value)) if math.isfinite(value) and value.is_integer() else repr(value)
