"""shared.metrics: bounded labels never fail on what a remote sent; the lock-free series
render as prometheus_client's would; merged expositions stay valid."""
from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import EDU_TYPES, Metrics, bounded, merge_expositions


def test_bounded_takes_anything():
    assert bounded("m.typing", EDU_TYPES) == "m.typing"
    for v in ([], {}, None, 5, "x.custom"):     # a list edu_type made inbound /send 500
        assert bounded(v, EDU_TYPES) == "other"


def render(m: Metrics) -> dict:
    text = asyncio.run(m.render()).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_fast_series_and_merge():
    a, b = Metrics("transaction"), Metrics("pdu")
    a.counter("fedstack_things_total", "things", ["origin", "outcome"]).labels("x", "ok").inc(3)
    h = a.histogram("fedstack_wait_seconds", "waits", buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 5.0):
        h.observe(v)
    b.counter("fedstack_things_total", "things", ["origin", "outcome"]).labels("x", "bad").inc()
    got = render(a)
    assert got[("fedstack_things_total", (("origin", "x"), ("outcome", "ok")))] == 3
    assert got[("fedstack_wait_seconds_bucket", (("le", "0.1"),))] == 1
    assert got[("fedstack_wait_seconds_bucket", (("le", "1.0"),))] == 2
    assert got[("fedstack_wait_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("fedstack_wait_seconds_count", ())] == 3
    merged = merge_expositions([asyncio.run(a.render()), asyncio.run(b.render())])
    fams = [f for f in text_string_to_metric_families(merged) if f.name == "fedstack_things"]
    assert len(fams) == 1 and {s.labels["outcome"] for s in fams[0].samples} == {"ok", "bad"}
    assert merged.count("# TYPE fedstack_things_total counter") == 1


def test_merge_keeps_label_values_with_unicode_line_separators():
    """A destination name holding U+0085 or U+2028 (a fuzzer's) stays one sample line."""
    m = Metrics("transaction")
    for name in ("n\x85x", "a\u2028b", 'q"\\\n'):
        m.counter("fedstack_sends_total", "sends", ["destination"]).labels(name).inc()
    merged = merge_expositions([asyncio.run(m.render())])
    (fam,) = [f for f in text_string_to_metric_families(merged) if f.name == "fedstack_sends"]
    assert {s.labels["destination"] for s in fam.samples} == {"n\x85x", "a\u2028b", 'q"\\\n'}
