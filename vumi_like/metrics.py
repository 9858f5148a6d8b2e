"""Prometheus metrics every worker exports on ``GET /metrics``.

One process-wide registry: workers run one per process in production, several per
process under ``vumi-like run``, so every series carries ``worker`` and ``connector``
labels and the workers of one process share the registry without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

# ``*_created`` series double the output and tell nothing a scrape does not know.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)

_LABELS = ("worker", "connector", "queue")

CONSUMED = Counter(
    "vumi_like_consumed",
    "Envelopes taken from a queue and handed to a handler",
    _LABELS,
    registry=REGISTRY,
)
PUBLISHED = Counter(
    "vumi_like_published",
    "Envelopes published and confirmed by the broker",
    _LABELS,
    registry=REGISTRY,
)
FAILED = Counter(
    "vumi_like_handler_failed",
    "Handlers that raised (their envelope was dead-lettered)",
    _LABELS,
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "vumi_like_dead_lettered",
    "Envelopes sent to the dead-letter queue (undecodable or failed)",
    _LABELS,
    registry=REGISTRY,
)
RETRIED = Counter(
    "vumi_like_retried",
    "Envelopes handed to the broker for delayed retry",
    _LABELS,
    registry=REGISTRY,
)
HANDLER_SECONDS = Histogram(
    "vumi_like_handler_seconds",
    "Time from delivery to the end of its handler",
    _LABELS,
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class QueueMetrics:
    """The series of one (worker, connector, queue), bound once so the hot path skips lookups."""

    __slots__ = ("consumed", "dead_lettered", "failed", "handler_seconds", "published", "retried")

    def __init__(self, worker: str, connector: str, queue: str) -> None:
        labels = (worker, connector, queue)
        self.consumed = CONSUMED.labels(*labels)
        self.published = PUBLISHED.labels(*labels)
        self.failed = FAILED.labels(*labels)
        self.dead_lettered = DEAD_LETTERED.labels(*labels)
        self.retried = RETRIED.labels(*labels)
        self.handler_seconds = HANDLER_SECONDS.labels(*labels)
