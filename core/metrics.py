"""Prometheus metrics: what every process counts, and the text `GET /metrics` serves.

Counting (any package): `metrics.count("receipts_sent", kind="gift")`, `metrics.observe("job_duration_seconds",
0.12, actor="receipts.issue_for_gift", outcome="done")`. The names and their labels are the table `COUNTERS` /
`HISTOGRAMS` below; an unknown name or a wrong label set raises, so a typo fails the first test that reaches it.

Several processes: `giving serve --workers N` and `giving worker --processes N` run many processes, each counting on
its own. They use prometheus_client's multiprocess mode: `giving.ops.prepare_metrics_dir` gives every started command
its own directory `<GIVING_METRICS_DIR>/<role>-<pid>/` (PROMETHEUS_MULTIPROC_DIR, inherited by its child processes),
each process writes its counters to files there, and `/metrics` adds up every file under GIVING_METRICS_DIR, so web
and worker processes on one machine show as one. Without that (tests, `giving demo`) the counters stay in memory.

Gauges about shared state (events pending and failed, durable jobs pending, queue depth) are not counted by any
process: `LiveSource`s compute them from the database and the broker at scrape time, so every web process
answers the same whole-system figure (sum them with `max`, not `sum`, across machines).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

PREFIX = "giving_"

# name -> (help, labels). Every metric has at least one label: an unlabelled one would create its value at import,
# before `enable_multiprocess` can choose where values live.
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "deliveries_accepted": ("Webhook deliveries stored (new events) and answered 2xx.", ("provider",)),
    "deliveries_duplicate": ("Webhook deliveries of an event already stored, answered 2xx.", ("provider",)),
    "deliveries_refused": (
        "Webhook deliveries refused; reason is signature, malformed, too_large, too_slow, unavailable, ...",
        ("provider", "reason"),
    ),
    "events_processed": (
        "Provider events processed by a worker; outcome is processed, ignored, waiting or failed.",
        ("provider", "outcome"),
    ),
    "jobs_sent": ("Jobs handed to the broker.", ("actor",)),
    "jobs_send_failed": ("Jobs the broker did not take (the sweep sends durable ones again).", ("actor",)),
    "job_attempts_failed": ("Job runs that raised (retried with backoff until max_retries).", ("actor",)),
    "jobs_given_up": ("Durable jobs marked failed after their last retry.", ("actor",)),
    "receipts_issued": ("Documents issued (numbered); kind is gift, order, correction, statement, ...", ("kind",)),
    "receipts_sent": ("Documents emailed and accepted by the SMTP server.", ("kind",)),
    "receipts_failed": ("Document emails that failed (retried).", ("kind",)),
    "emails_sent": ("Emails accepted by the SMTP server; kind is receipt, subscribe, password_reset, ...", ("kind",)),
    "emails_failed": ("Emails the SMTP server refused or could not be reached for.", ("kind",)),
    "claims_built": ("Gift Aid claims built; format is ods, xml or both.", ("format",)),
    "claim_gifts": ("Gifts included in Gift Aid claims built.", ("format",)),
    "http_requests": ("HTTP responses by route template and status class (2xx, 4xx, ...).", ("route", "status")),
}

_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "job_duration_seconds": (
        "How long job runs take; outcome is done, skipped (already done) or failed.",
        ("actor", "outcome"),
    ),
    "http_request_duration_seconds": ("HTTP request durations by route template.", ("route",)),
}

_counters: dict[str, Counter] = {
    name: Counter(PREFIX + name, help_text, labels) for name, (help_text, labels) in COUNTERS.items()
}
_histograms: dict[str, Histogram] = {
    name: Histogram(PREFIX + name, help_text, labels, buckets=_SECONDS_BUCKETS)
    for name, (help_text, labels) in HISTOGRAMS.items()
}


def count(name: str, amount: float = 1, **labels: str) -> None:
    """Add `amount` to the counter `name` (a key of COUNTERS) with exactly its labels."""
    counter = _counters.get(name)
    if counter is None:
        raise ValueError(f"no counter named {name!r}; add it to core.metrics.COUNTERS")
    counter.labels(**_exact(name, COUNTERS[name][1], labels)).inc(amount)


def observe(name: str, value: float, **labels: str) -> None:
    """Record `value` in the histogram `name` (a key of HISTOGRAMS)."""
    histogram = _histograms.get(name)
    if histogram is None:
        raise ValueError(f"no histogram named {name!r}; add it to core.metrics.HISTOGRAMS")
    histogram.labels(**_exact(name, HISTOGRAMS[name][1], labels)).observe(value)


@contextmanager
def timed(name: str, **labels: str) -> Iterator[None]:
    """Observe the seconds the block takes in histogram `name`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe(name, time.perf_counter() - started, **labels)


def value(name: str, **labels: str) -> float:
    """This process's current value of a counter (tests)."""
    counter = _counters[name]
    return float(counter.labels(**_exact(name, COUNTERS[name][1], labels))._value.get())


def _exact(name: str, expected: tuple[str, ...], labels: dict[str, str]) -> dict[str, str]:
    if set(labels) != set(expected):
        raise ValueError(f"metric {name!r} takes labels {sorted(expected)}, not {sorted(labels)}")
    return {key: str(val) for key, val in labels.items()}


# --- several processes --------------------------------------------------------------------------------------------

METRICS_ROOT_ENV = "GIVING_METRICS_DIR"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_enabled() -> bool:
    return values.ValueClass is not values.MutexValue


def enable_multiprocess(directory: Path) -> None:
    """Make this process (and the children it starts, through the environment) count in files under `directory`.

    prometheus_client chooses where values live when it is imported; a command may have imported it already
    (through a package that counts), so the choice is made again here, before any value exists.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()


def metrics_root() -> Path | None:
    """The directory whose process files `/metrics` adds up: the machine's root, else this command's own."""
    root = os.environ.get(METRICS_ROOT_ENV) or os.environ.get(MULTIPROC_ENV)
    return Path(root) if root else None


class _FilesCollector:
    """Adds up the counter files of every process under the machine's metrics root."""

    def __init__(self, root: Path):
        self.root = root

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(str(self.root / "*" / "*.db")) + glob.glob(str(self.root / "*.db"))
        # A process that has just created its file has not sized it yet: an empty file has no samples, and
        # reading it fails (seen in CI while a worker started during a scrape).
        return MultiProcessCollector.merge([f for f in files if _has_header(f)], accumulate=True)


def _has_header(path: str) -> bool:
    try:
        return os.path.getsize(path) >= 8
    except OSError:  # gone meanwhile: its process ended
        return False


# --- scrape-time gauges -------------------------------------------------------------------------------------------

LiveSource = Callable[[], Iterable[Metric]]


class _LiveCollector:
    def __init__(self, sources: list[LiveSource]):
        self.sources = sources

    def collect(self) -> Iterable[Metric]:
        for source in self.sources:
            yield from source()


def render(sources: list[LiveSource]) -> tuple[bytes, str]:
    """The Prometheus text for one scrape: this machine's counters plus the live gauges. Blocking (run in a thread)."""
    registry = CollectorRegistry(auto_describe=False)
    root = metrics_root()
    if multiprocess_enabled() and root is not None:
        registry.register(_FilesCollector(root))
    else:
        registry.register(_RegistryCollector(REGISTRY))
    registry.register(_LiveCollector(sources))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _RegistryCollector:
    def __init__(self, inner: CollectorRegistry):
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        return self.inner.collect()
