"""The gauges of a homeserver's current state, set at scrape time from operators' views
(`shared.contracts.admin` shapes): per destination its queue, backoff and failures; per
subscription its lag. A destination or subscription gone since the last scrape loses its
series (the gauges are cleared and set anew each time)."""
from __future__ import annotations


def set_destinations(metrics, rows: list[dict], now: float) -> None:
    queued = metrics.gauge("fedstack_destination_queue_depth",
                           "Items (PDUs and EDUs) queued for a destination", ["destination"])
    age = metrics.gauge("fedstack_destination_oldest_item_age_seconds",
                        "Age of the oldest unsent item of a destination's queue (0: empty)",
                        ["destination"])
    backoff = metrics.gauge("fedstack_destination_backoff_seconds",
                            "Seconds until a backing-off destination is tried again (0: not "
                            "backing off)", ["destination"])
    failures = metrics.gauge("fedstack_destination_failures",
                             "Consecutive failed transactions to a destination", ["destination"])
    for g in (queued, age, backoff, failures):
        g.clear()
    for r in rows:
        d = r["destination"]
        queued.labels(d).set(r["queued"])
        age.labels(d).set(r.get("oldest_age_s") or 0.0)
        backoff.labels(d).set(max(0.0, (r["retry_at"] or 0.0) - now))
        failures.labels(d).set(r["failures"])


def set_subscriptions(metrics, view: dict) -> None:
    lag = metrics.gauge("fedstack_subscription_lag_positions",
                        "Stream positions past a subscription's acknowledged position",
                        ["subscription"])
    head = metrics.gauge("fedstack_stream_head_position", "The live stream's last position")
    lag.clear()
    head.set(view["head"])
    for s in view["subscriptions"]:
        lag.labels(s["subscription_id"]).set(s["lag"])
