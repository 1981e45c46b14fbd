"""Prometheus metrics of one service (prometheus_client), and the homeserver's combined view.

Invariants:
- No module-level state: each `create_app` builds its own `Metrics`, whose own
  `CollectorRegistry` holds every series of that app (two homeservers in one process never
  share a series). Nothing registers in prometheus_client's global registry.
- Every metric name starts `fedstack_`; labels are bounded: server names (`origin`,
  `destination`), route templates (never a path with ids in it), outcomes and types from
  fixed sets (`bounded`), subscription ids. Never an event id, room id or user id.
- Gauges of state (queue depths, backoffs, lags) are computed when scraped: `on_scrape`
  hooks run before each render, so the hot paths only count and observe.
- `merge_expositions` makes one valid exposition of several services' texts: a family
  that appears in several of them (with a `service` label telling them apart) is written
  once with all their samples.
"""
from __future__ import annotations

import logging
import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger("fedstack.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "fedstack_"
# Latency buckets from 0.5 ms (an internal hop) to a minute (a destination backing off).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

# The EDU types of the spec; any other type a remote sends is counted as "other".
EDU_TYPES = frozenset({"m.typing", "m.receipt", "m.presence", "m.direct_to_device",
                       "m.device_list_update", "m.signing_key_update"})


def bounded(value, allowed: frozenset, other: str = "other") -> str:
    """`value` when it is one of `allowed`, else `other`: keeps a label's values bounded
    (anything a remote sent: a list or an object is `other` too, never an error)."""
    return value if isinstance(value, str) and value in allowed else other


class _CounterSeries:
    __slots__ = ("value",)

    def __init__(self):
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class _HistogramSeries:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: list):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)     # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class FastCounter:
    """A labelled counter kept in plain Python objects: `labels(...)` is a dict look-up
    and `inc` an addition (~0.2 us, against 1-3 us for prometheus_client's locked ones).
    Only for metrics changed from the event loop's thread; exposed by `Metrics.collect`."""
    kind = "counter"

    def __init__(self, name: str, doc: str, labels):
        self.name, self.doc, self.labelnames = name, doc, tuple(labels)
        self.series: dict[tuple, _CounterSeries] = {}

    def labels(self, *values) -> _CounterSeries:
        s = self.series.get(values)
        if s is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
            s = self.series[values] = _CounterSeries()
        return s

    def inc(self, amount: float = 1) -> None:      # a counter without labels
        self.labels().inc(amount)

    def family(self):
        fam = CounterMetricFamily(self.name.removesuffix("_total"), self.doc, labels=self.labelnames)
        for values, s in self.series.items():
            fam.add_metric([str(v) for v in values], s.value)
        return fam


class FastHistogram(FastCounter):
    """A labelled histogram in plain Python objects (see FastCounter): `observe` is a
    bisection and two additions."""
    kind = "histogram"

    def __init__(self, name: str, doc: str, labels, buckets=LATENCY_BUCKETS):
        super().__init__(name, doc, labels)
        self.bounds = sorted(float(b) for b in buckets)
        self.series: dict[tuple, _HistogramSeries] = {}

    def labels(self, *values) -> _HistogramSeries:
        s = self.series.get(values)
        if s is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values}")
            s = self.series[values] = _HistogramSeries(self.bounds)
        return s

    def observe(self, value: float) -> None:
        self.labels().observe(value)

    def family(self):
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, s in self.series.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self.bounds + [float("inf")], s.counts):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            fam.add_metric([str(v) for v in values], buckets, s.sum)
        return fam


class Metrics:
    """The metrics of one service: `counter`/`gauge`/`histogram` make (once) and return a
    metric of this registry by name, so modules ask for what they need without wiring.
    Counters and histograms are the lock-free `FastCounter`/`FastHistogram` (changed only
    from the event loop's thread); `threadsafe_histogram` is prometheus_client's own, for
    a metric observed from another thread (the database thread)."""

    def __init__(self, service: str):
        self.service = service
        self.registry = CollectorRegistry(auto_describe=False)
        self._metrics: dict[str, object] = {}
        self._hooks: list = []
        self.registry.register(self)       # collects the fast metrics
        self.requests = self.histogram(
            "fedstack_http_request_duration_seconds",
            "Time a service spent answering a request, per route template (internal hops "
            "and, on the transport, federation requests)", ["service", "method", "route"])

    def _get(self, cls, name: str, doc: str, labels, **kw):
        if not name.startswith(PREFIX):
            raise ValueError(f"metric names start {PREFIX}: {name}")
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = cls(name, doc, list(labels), registry=self.registry, **kw)
        return m

    def _fast(self, cls, name: str, doc: str, labels, **kw):
        if not name.startswith(PREFIX):
            raise ValueError(f"metric names start {PREFIX}: {name}")
        m = self._metrics.get(name)
        if m is None:
            m = self._metrics[name] = cls(name, doc, labels, **kw)
        return m

    def counter(self, name: str, doc: str, labels=()) -> FastCounter:
        return self._fast(FastCounter, name, doc, labels)

    def histogram(self, name: str, doc: str, labels=(), buckets=LATENCY_BUCKETS) -> FastHistogram:
        return self._fast(FastHistogram, name, doc, labels, buckets=buckets)

    def gauge(self, name: str, doc: str, labels=()) -> Gauge:
        return self._get(Gauge, name, doc, labels)

    def threadsafe_histogram(self, name: str, doc: str, labels=(), buckets=LATENCY_BUCKETS) -> Histogram:
        return self._get(Histogram, name, doc, labels, buckets=buckets)

    def collect(self):
        """prometheus_client's collector protocol: the fast metrics' families."""
        for m in list(self._metrics.values()):
            if isinstance(m, FastCounter):
                yield m.family()

    def on_scrape(self, hook) -> None:
        """`await hook()` before every render (it sets the gauges of current state)."""
        self._hooks.append(hook)

    def route_timer(self, method: str, route: str):
        """The labelled histogram child of one route (looked up once, observed per request)."""
        return self.requests.labels(self.service, method, route)

    async def render(self) -> bytes:
        for hook in self._hooks:
            try:
                await hook()
            except Exception as exc:  # noqa: BLE001 - a scrape shows what it can
                log.warning("metrics hook %s failed: %s", getattr(hook, "__name__", hook), exc)
        return generate_latest(self.registry)


class Timer:
    """`with Timer(histogram_child):` observes the block's duration in seconds."""
    __slots__ = ("child", "start")

    def __init__(self, child):
        self.child = child

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.child.observe(time.perf_counter() - self.start)
        return False


def merge_expositions(texts: list[bytes | str]) -> str:
    """One exposition of several: families in first-seen order, each family's HELP and
    TYPE written once, followed by the samples of every text that had it."""
    families: dict[str, list] = {}      # name -> [help line, type line, samples]
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        current = None
        for line in text.split("\n"):    # not splitlines(): a label value may hold \x85 or \u2028
            if not line.strip():
                continue
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                name = line.split(" ", 3)[2]
                fam = families.setdefault(name, [None, None, []])
                fam[0 if line.startswith("# HELP ") else 1] = fam[0 if line.startswith("# HELP ") else 1] or line
                current = fam
            elif line.startswith("#"):
                continue
            elif current is not None:
                current[2].append(line)
    out = []
    for name, (help_line, type_line, samples) in families.items():
        out.extend(x for x in (help_line, type_line) if x)
        out.extend(samples)
    return "\n".join(out) + "\n"
