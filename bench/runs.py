"""The benchmarks. Each `*_once` function measures one repetition and records its figures.

Figures are rates and times measured from outside the servers (monotonic clock of the
benchmark process); CPU seconds come from /proc/<pid>/stat of the server processes.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import CpuMeter, log, median, percentile, wait_until
from bench.fake_remote import FakeRemote, tag_of
from bench.report import Results
from bench.stacks import CallbackReceiver, FedstackServer, SynapseServer, SyncWatcher

TXN_SIZE = 50


@dataclass
class Sizes:
    inbound: int              # PDUs into fedstack
    inbound_synapse: int      # PDUs into Synapse
    e2e: int                  # messages A -> B, fedstack
    e2e_synapse: int          # messages A -> B, Synapse
    idle_samples: int         # messages sent one at a time, each awaited (idle latency)
    batching: int             # events queued while the destination is down
    fanout_remotes: int
    fanout_samples: int       # messages per repetition, each awaited on every remote

    @classmethod
    def for_args(cls, args) -> "Sizes":
        if args.quick:
            s = cls(inbound=200, inbound_synapse=50, e2e=300, e2e_synapse=50, idle_samples=20,
                    batching=200, fanout_remotes=10, fanout_samples=3)
        else:
            s = cls(inbound=2000, inbound_synapse=200, e2e=5000, e2e_synapse=100,
                    idle_samples=100, batching=1000, fanout_remotes=50, fanout_samples=10)
        if args.messages:
            s.e2e = args.messages
        if args.synapse_messages:
            s.e2e_synapse = args.synapse_messages
        return s


@dataclass
class Context:
    args: object
    sizes: Sizes
    work: Path
    results: Results
    receiver: CallbackReceiver | None = None
    a: FedstackServer | None = None
    b: FedstackServer | None = None
    s1: SynapseServer | None = None
    s2: SynapseServer | None = None
    remotes: list[FakeRemote] = field(default_factory=list)
    state: dict = field(default_factory=dict)   # set-up shared between repetitions

    @property
    def synapse(self) -> bool:
        return not self.args.no_synapse

    def remote(self, **kw) -> FakeRemote:
        r = FakeRemote(self.work, **kw)
        self.remotes.append(r)
        return r


def _timeout(n: int, per_second: float, floor: float = 120.0) -> float:
    return max(floor, n / per_second)


# --------------------------------------------------------------------------- inbound

async def inbound_fedstack_once(ctx: Context, rep: int) -> None:
    a, n = ctx.a, ctx.sizes.inbound
    r = ctx.state.get("inbound_remote")
    if r is None:
        r = ctx.state["inbound_remote"] = await ctx.remote().start()
    room = await a.create_room(a.user("alice"))
    await a.subscribe(ctx.receiver.url, room)
    view = await r.join(a.server_name, room)
    tag = f"in{rep}"
    pdus = r.build_messages(view, [f"{tag}:{i}" for i in range(n)])
    cpu = a.cpu_meter().start()
    t0 = time.monotonic()
    for i in range(0, n, TXN_SIZE):
        status, body = await r.send_transaction(a.server_name, pdus[i:i + TXN_SIZE])
        errors = {k: v for k, v in (body or {}).get("pdus", {}).items() if v}
        if status != 200 or errors:
            raise RuntimeError(f"fedstack /send answered {status}: {str(errors or body)[:300]}")
    t_acked = time.monotonic()
    t_last = await ctx.receiver.wait_tag(tag, n, _timeout(n, 5))
    used = cpu.stop()
    rate = n / (t_last - t0)
    res = ctx.results
    res.add("inbound_rate", "fedstack", rate, label="Inbound: signed PDUs stored (and, fedstack, delivered)",
            unit="PDUs/s", higher_better=True)
    res.add("inbound_ack_rate", "fedstack", n / (t_acked - t0),
            label="Inbound: /send acknowledged (staged)", unit="PDUs/s", higher_better=True)
    res.add("inbound_cpu", "fedstack", used / n * 1000, label="Inbound: CPU of the receiving server",
            unit="CPU-s / 1,000 PDUs", higher_better=False)
    log(f"inbound fedstack #{rep}: {n} PDUs, {rate:.0f}/s delivered, acked at {n / (t_acked - t0):.0f}/s, "
        f"CPU {used:.1f}s")


async def inbound_synapse_once(ctx: Context, rep: int) -> None:
    s, n = ctx.s1, ctx.sizes.inbound_synapse
    r = ctx.state.get("inbound_remote")
    if r is None:
        r = ctx.state["inbound_remote"] = await ctx.remote().start()
    tok = ctx.state["s1_alice"]
    room = await s.create_room(tok)
    view = await r.join(s.server_name, room)
    tag = f"syn-in{rep}"
    pdus = r.build_messages(view, [f"{tag}:{i}" for i in range(n)])
    ids = [r.event_id(view, p) for p in pdus]
    cpu = s.cpu_meter().start()
    t0 = time.monotonic()
    acked = 0.0
    for i in range(0, n, TXN_SIZE):
        chunk = pdus[i:i + TXN_SIZE]
        ta = time.monotonic()
        status, body = await r.send_transaction(s.server_name, chunk)
        acked += time.monotonic() - ta
        if status != 200:
            raise RuntimeError(f"Synapse /send answered {status}: {str(body)[:300]}")
        last = ids[i + len(chunk) - 1]
        # Synapse drops all but the newest when >~100 events of a room are staged:
        # wait until this transaction is stored before sending the next.
        await wait_until(lambda: s.has_event(tok, room, last), _timeout(len(chunk), 1),
                         f"Synapse to store {last}", interval=0.05)
    t_last = time.monotonic()
    used = cpu.stop()
    rate = n / (t_last - t0)
    res = ctx.results
    res.add("inbound_rate", "synapse", rate, label="Inbound: signed PDUs stored (and, fedstack, delivered)",
            unit="PDUs/s", higher_better=True)
    res.add("inbound_ack_rate", "synapse", n / acked, label="Inbound: /send acknowledged (staged)",
            unit="PDUs/s", higher_better=True)
    res.add("inbound_cpu", "synapse", used / n * 1000, label="Inbound: CPU of the receiving server",
            unit="CPU-s / 1,000 PDUs", higher_better=False)
    log(f"inbound Synapse #{rep}: {n} PDUs, {rate:.1f}/s stored, CPU {used:.1f}s")


# --------------------------------------------------------------------------- end to end

async def _e2e_setup_fedstack(ctx: Context):
    if "e2e_f" in ctx.state:
        return ctx.state["e2e_f"]
    a, b = ctx.a, ctx.b
    alice, bob = a.user("alice"), b.user("bob")
    room = await a.create_room(alice)
    await b.join(room, bob, [a.server_name])
    await b.subscribe(ctx.receiver.url, room)
    # warm up connections and caches (not measured)
    for i in range(20):
        await a.send(room, alice, f"warm-f:{i}")
    await ctx.receiver.wait_tag("warm-f", 20, 60)
    ctx.state["e2e_f"] = (room, alice)
    return ctx.state["e2e_f"]


async def _e2e_setup_synapse(ctx: Context):
    if "e2e_s" in ctx.state:
        return ctx.state["e2e_s"]
    s1, s2 = ctx.s1, ctx.s2
    alice = ctx.state["s1_alice"]
    bob = await s2.register("bob")
    room = await s1.create_room(alice)
    await s2.join(bob, room, s1.server_name)
    watcher = await SyncWatcher(s2, bob).start()
    for i in range(10):
        await s1.send(alice, room, f"warm-s:{i}", f"warm-{i}")
    await watcher.wait_tag("warm-s", 10, 60)
    ctx.state["e2e_s"] = (room, alice, watcher)
    return ctx.state["e2e_s"]


async def _drive(send, n: int, concurrency: int, tag: str) -> dict[str, float]:
    """Send n messages `<tag>:<i>` with `concurrency` calls in flight; body -> call start."""
    starts: dict[str, float] = {}
    it = iter(range(n))

    async def worker():
        for i in it:
            body = f"{tag}:{i}"
            starts[body] = time.monotonic()
            await send(body, i)
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return starts


async def _wait_delivery(rx, tag: str, n: int, timeout: float, stall_s: float = 30.0):
    """(monotonic time of the last arrival, number delivered): waits for all `n`, but gives
    up when nothing new has arrived for `stall_s` (events lost on the way) or at `timeout`."""
    deadline = time.monotonic() + timeout
    last_count, last_change = -1, time.monotonic()
    while True:
        count, now = rx.tag_counts[tag], time.monotonic()
        if count != last_count:
            last_count, last_change = count, now
        if count >= n or now > deadline or now - last_change > stall_s:
            break
        await asyncio.sleep(0.05)
    times = [t for b, t in rx.arrivals.items() if tag_of(b) == tag]
    return (max(times) if times else time.monotonic()), count


def _record_e2e(ctx, side, n, conc, t0, t_last, starts, arrivals, used, delivered):
    res = ctx.results
    rate = delivered / (t_last - t0)
    res.add(f"e2e_lost_{conc}", side, n - delivered,
            label=f"End to end at {conc} in flight: sent messages that never reached B",
            unit="messages", higher_better=False)
    if delivered < n:
        res.warn(f"{side} end to end at {conc} in flight: {n - delivered} of {n} messages never reached B "
                 "(rate and latency counted over those that did)")
    res.add(f"e2e_rate_{conc}", side, rate, label=f"End to end A→B, {conc} send(s) in flight",
            unit="events/s", higher_better=True)
    res.add(f"e2e_cpu_{conc}", side, used / n * 1000,
            label=f"CPU of both homeservers, end to end at {conc} in flight",
            unit="CPU-s / 1,000 events", higher_better=False)
    lat = [(arrivals[b] - t) * 1000 for b, t in starts.items() if b in arrivals]
    if conc == 1:
        res.add("e2e_p50", side, percentile(lat, 50), label="Latency send→arrival on B at 1 in flight, p50",
                unit="ms", higher_better=False)
        res.add("e2e_p99", side, percentile(lat, 99), label="Latency send→arrival on B at 1 in flight, p99",
                unit="ms", higher_better=False)
    return rate, lat


async def e2e_fedstack_once(ctx: Context, rep: int, conc: int) -> None:
    room, alice = await _e2e_setup_fedstack(ctx)
    a, n = ctx.a, ctx.sizes.e2e
    tag = f"e2e{rep}c{conc}"
    cpu = CpuMeter({**{f"A.{k}": v for k, v in a.pids.items()},
                    **{f"B.{k}": v for k, v in ctx.b.pids.items()}}).start()
    t0 = time.monotonic()
    starts = await _drive(lambda body, i: a.send(room, alice, body), n, conc, tag)
    t_last, delivered = await _wait_delivery(ctx.receiver, tag, n, _timeout(n, 5))
    used = cpu.stop()
    rate, lat = _record_e2e(ctx, "fedstack", n, conc, t0, t_last, starts, ctx.receiver.arrivals, used,
                            delivered)
    split = ", ".join(f"{k} {v / n * 1000:.1f}" for k, v in sorted(cpu.per_label.items(), key=lambda kv: -kv[1]))
    ctx.state.setdefault("cpu_split", {}).setdefault(conc, []).append(split)
    log(f"e2e fedstack #{rep} c={conc}: {n} msgs {rate:.0f}/s, p50 {percentile(lat, 50):.0f} ms "
        f"p99 {percentile(lat, 99):.0f} ms, CPU {used:.1f}s")


async def e2e_synapse_once(ctx: Context, rep: int, conc: int) -> None:
    room, alice, watcher = await _e2e_setup_synapse(ctx)
    s1, n = ctx.s1, ctx.sizes.e2e_synapse
    tag = f"syn-e2e{rep}c{conc}"
    cpu = CpuMeter([s1.pid, ctx.s2.pid]).start()
    t0 = time.monotonic()
    starts = await _drive(lambda body, i: s1.send(alice, room, body, f"{tag}-{i}"), n, conc, tag)
    t_last, delivered = await _wait_delivery(watcher, tag, n, _timeout(n, 2))
    used = cpu.stop()
    rate, lat = _record_e2e(ctx, "synapse", n, conc, t0, t_last, starts, watcher.arrivals, used, delivered)
    log(f"e2e Synapse #{rep} c={conc}: {n} msgs {rate:.1f}/s, p50 {percentile(lat, 50):.0f} ms "
        f"p99 {percentile(lat, 99):.0f} ms, CPU {used:.1f}s")


BATCH_EVENTS, BATCH_IN_FLIGHT = 100, 4


async def e2e_batch_fedstack_once(ctx: Context, rep: int) -> None:
    """The batch-submit path: the same messages in calls of BATCH_EVENTS events each
    (POST /v1/rooms/{room}/events/batch), BATCH_IN_FLIGHT calls in flight."""
    room, alice = await _e2e_setup_fedstack(ctx)
    a, n = ctx.a, ctx.sizes.e2e
    tag = f"e2e{rep}batch"
    bodies = [f"{tag}:{i}" for i in range(n)]
    chunks = iter(range(0, n, BATCH_EVENTS))
    cpu = CpuMeter(list(a.pids.values()) + list(ctx.b.pids.values())).start()
    t0 = time.monotonic()

    async def worker():
        for i in chunks:
            results = await a.send_batch(room, alice, bodies[i:i + BATCH_EVENTS])
            refused = [r for r in results if not r.get("event_id")]
            if refused:
                raise RuntimeError(f"batch send refused {len(refused)} events: {refused[0]}")
    await asyncio.gather(*(worker() for _ in range(BATCH_IN_FLIGHT)))
    t_sent = time.monotonic()
    t_last, delivered = await _wait_delivery(ctx.receiver, tag, n, _timeout(n, 5))
    used = cpu.stop()
    rate = delivered / (t_last - t0)
    res = ctx.results
    note = (f"calls of {BATCH_EVENTS} events, {BATCH_IN_FLIGHT} in flight; Synapse has no batch "
            "submit: its figure is its end-to-end rate at 16 sends in flight, same run")
    res.add("e2e_rate_batch", "fedstack", rate, label="End to end A→B, batch submit",
            unit="events/s", higher_better=True, note=note)
    res.add("e2e_lost_batch", "fedstack", n - delivered,
            label="End to end, batch submit: sent messages that never reached B", unit="messages",
            higher_better=False)
    res.add("e2e_cpu_batch", "fedstack", used / n * 1000,
            label="CPU of both homeservers, end to end, batch submit", unit="CPU-s / 1,000 events",
            higher_better=False)
    log(f"e2e fedstack #{rep} batch: {n} msgs {rate:.0f}/s (accepted at {n / (t_sent - t0):.0f}/s), "
        f"CPU {used:.1f}s")


def synapse_beside_batch(ctx: Context) -> None:
    """Synapse's best end-to-end figure (16 in flight) as the comparison for the batch row."""
    m, s16 = ctx.results.metrics.get("e2e_rate_batch"), ctx.results.metrics.get("e2e_rate_16")
    if m is not None and s16 is not None:
        m.synapse = list(s16.synapse)


async def _idle_latency(send, wait_tag, arrivals, m: int, tag: str) -> list[float]:
    lat = []
    for i in range(m):
        body = f"{tag}:{i}"
        t = time.monotonic()
        await send(body, i)
        await wait_tag(tag, i + 1, 60)
        lat.append((arrivals[body] - t) * 1000)
    return lat


async def idle_fedstack_once(ctx: Context, rep: int) -> None:
    room, alice = await _e2e_setup_fedstack(ctx)
    tag = f"idle{rep}"
    lat = await _idle_latency(lambda b, i: ctx.a.send(room, alice, b), ctx.receiver.wait_tag,
                              ctx.receiver.arrivals, ctx.sizes.idle_samples, tag)
    _record_idle(ctx, "fedstack", lat)


async def idle_synapse_once(ctx: Context, rep: int) -> None:
    room, alice, watcher = await _e2e_setup_synapse(ctx)
    tag = f"syn-idle{rep}"
    lat = await _idle_latency(lambda b, i: ctx.s1.send(alice, room, b, f"{tag}-{i}"), watcher.wait_tag,
                              watcher.arrivals, ctx.sizes.idle_samples, tag)
    _record_idle(ctx, "synapse", lat)


def _record_idle(ctx, side, lat):
    ctx.results.add("idle_p50", side, percentile(lat, 50),
                    label="Latency of a lone message (each awaited), p50", unit="ms", higher_better=False)
    ctx.results.add("idle_p99", side, percentile(lat, 99),
                    label="Latency of a lone message (each awaited), p99", unit="ms", higher_better=False)
    log(f"idle latency {side}: p50 {percentile(lat, 50):.0f} ms p99 {percentile(lat, 99):.0f} ms")


# --------------------------------------------------------------------------- batching

async def batching_fedstack_once(ctx: Context, rep: int) -> None:
    """Events queued for a destination that is down are sent, once it is back, in full
    transactions, one at a time."""
    a, n = ctx.a, ctx.sizes.batching
    d = ctx.state.get("batch_remote")
    if d is None:
        # 5 ms per /send stands for a real receiver's work and makes overlap observable.
        d = ctx.state["batch_remote"] = await ctx.remote(send_delay_s=0.005).start()
    alice = a.user("alice")
    room = await a.create_room(alice)
    await d.join(a.server_name, room)

    async def queued():
        info = (await a.destinations())["destinations"].get(d.server_name, {})
        return info.get("queued", 0)
    await wait_until(lambda: _eq(queued(), 0), 60, "an empty queue before the outage")
    await d.down()
    tag = f"batch{rep}"
    await _drive(lambda body, i: a.send(room, alice, body), n, 16, tag)
    await wait_until(lambda: _ge(queued(), n), 60, f"{n} events queued for the stopped destination")
    d.reset_counters()
    await d.up()
    t0 = time.monotonic()
    # The way back: a signed request from the destination ("I'm up"), as Synapse does.
    status, _ = await d.send_transaction(a.server_name, [])
    if status != 200:
        raise RuntimeError(f"ping /send answered {status}")
    t_last = await d.wait_tag(tag, n, _timeout(n, 5))
    drain = t_last - t0
    info = await a.destinations()
    ideal = math.ceil(n / TXN_SIZE)
    _record_batching(ctx, "fedstack", rep, n, d, d.tag_counts[tag], drain,
                     max(d.max_in_flight, info.get("max_in_flight_seen", 0)))
    ctx.state["batch_sizes"] = d.txn_sizes
    log(f"batching #{rep}: {n} events in {d.transactions} transactions (ideal {ideal}), max in flight "
        f"{d.max_in_flight} (sender says {info.get('max_in_flight_seen')}), drained in {drain:.2f}s")


async def batching_synapse_once(ctx: Context, rep: int) -> None:
    """The same outage against Synapse: what reaches the destination once it is back."""
    s, n = ctx.s1, ctx.sizes.batching
    tok = ctx.state["s1_alice"]
    d = ctx.state.get("batch_remote_s")
    if d is None:
        d = ctx.state["batch_remote_s"] = await ctx.remote(send_delay_s=0.005).start()
    room = await s.create_room(tok)
    await d.join(s.server_name, room)
    await d.down()
    tag = f"syn-batch{rep}"
    await _drive(lambda body, i: s.send(tok, room, body, f"{tag}-{i}"), n, 16, tag)
    d.reset_counters()
    await d.up()
    t0 = time.monotonic()
    status, _ = await d.send_transaction(s.server_name, [])   # "I'm up": resets its backoff
    if status != 200:
        raise RuntimeError(f"ping /send answered {status}")
    newest = f"{tag}:{n - 1}"
    try:
        await wait_until(lambda: newest in d.arrivals or d.tag_counts[tag] >= n, 120,
                         "Synapse to send the newest event")
    except TimeoutError:
        ctx.results.warn(f"Synapse batching #{rep}: the newest event did not arrive within 120 s")
    await asyncio.sleep(2.0)   # stragglers
    pushed = d.tag_counts[tag]
    last = max((t for b, t in d.arrivals.items() if b.startswith(tag + ":")), default=time.monotonic())
    _record_batching(ctx, "synapse", rep, n, d, pushed, last - t0, d.max_in_flight)
    ctx.state["batch_sizes_s"] = d.txn_sizes
    if pushed < n:
        ctx.results.notes.append(
            f"Synapse batching #{rep + 1}: after the outage it pushed {pushed} of the {n} events in "
            f"{d.transactions} transaction(s) (its catch-up sends the newest event per room and leaves "
            "the rest to the receiver's get_missing_events/backfill).")
    log(f"batching Synapse #{rep}: {pushed}/{n} events in {d.transactions} transactions, max in flight "
        f"{d.max_in_flight}, {last - t0:.2f}s")


def _record_batching(ctx, side, rep, n, d, pushed, drain, in_flight) -> None:
    res = ctx.results
    res.add("batch_pushed", side, pushed,
            label=f"Batching: of {n:,} events queued during the outage, pushed after it",
            unit="events", higher_better=True)
    res.add("batch_inflight", side, in_flight,
            label="Batching: most transactions in flight to one destination",
            unit="transactions", higher_better=False)
    ideal = math.ceil(n / TXN_SIZE)
    res.add("batch_txns", side, d.transactions,
            label=f"Batching: transactions carrying the {n:,} queued events",
            unit=f"transactions (ideal {ideal})", higher_better=False)
    res.add("batch_drain", side, pushed / drain if drain > 0 else 0.0,
            label="Batching: catch-up rate after the outage (ping → last event)",
            unit="events/s", higher_better=True)
    if d.duplicates:
        res.warn(f"batching {side} #{rep + 1}: {d.duplicates} events arrived twice")


async def _eq(coro, v):
    return (await coro) == v


async def _ge(coro, v):
    return (await coro) >= v


# --------------------------------------------------------------------------- fan-out

async def _fanout_remotes(ctx: Context) -> list[FakeRemote]:
    if "fan_remotes" not in ctx.state:
        rs = [ctx.remote() for _ in range(ctx.sizes.fanout_remotes)]
        await asyncio.gather(*(r.start() for r in rs))
        ctx.state["fan_remotes"] = rs
    return ctx.state["fan_remotes"]


async def _fanout_measure(ctx, side, rep, remotes, send) -> None:
    times, p50s = [], []
    for j in range(ctx.sizes.fanout_samples):
        tag = f"{side}-fan{rep}x{j}"
        t0 = time.monotonic()
        await send(f"{tag}:0")
        arrivals = await asyncio.gather(*(r.wait_tag(tag, 1, 120) for r in remotes))
        times.append((max(arrivals) - t0) * 1000)
        p50s.append((median(arrivals) - t0) * 1000)
    k = len(remotes)
    ctx.results.add("fanout_all", side, median(times),
                    label=f"Fan-out: send → all {k} destinations have the event",
                    unit="ms", higher_better=False)
    ctx.results.add("fanout_half", side, median(p50s),
                    label=f"Fan-out: send → half of the {k} destinations have it",
                    unit="ms", higher_better=False)
    log(f"fan-out {side} #{rep}: all {k} in {median(times):.0f} ms (samples {[round(t) for t in times]})")


async def fanout_fedstack_once(ctx: Context, rep: int) -> None:
    a = ctx.a
    remotes = await _fanout_remotes(ctx)
    if "fan_f" not in ctx.state:
        alice = a.user("alice")
        room = await a.create_room(alice)
        t0 = time.monotonic()
        for r in remotes:
            await r.join(a.server_name, room)
        log(f"fan-out fedstack: {len(remotes)} remotes joined in {time.monotonic() - t0:.1f}s")

        async def drained():
            ds = (await a.destinations())["destinations"]
            return all(ds.get(r.server_name, {}).get("queued", 0) == 0 for r in remotes)
        await wait_until(drained, 300, "the joins to reach every remote", interval=0.2)
        ctx.state["fan_f"] = (room, alice)
    room, alice = ctx.state["fan_f"]
    await _fanout_measure(ctx, "fedstack", rep, remotes, lambda body: a.send(room, alice, body))


async def fanout_synapse_once(ctx: Context, rep: int) -> None:
    s = ctx.s1
    remotes = await _fanout_remotes(ctx)
    if "fan_s" not in ctx.state:
        tok = ctx.state["s1_alice"]
        room = await s.create_room(tok)
        t0 = time.monotonic()
        for r in remotes:
            await r.join(s.server_name, room)
        log(f"fan-out Synapse: {len(remotes)} remotes joined in {time.monotonic() - t0:.1f}s")
        # Let Synapse hand the joins out before measuring.
        probe = "syn-fanwarm"
        await s.send(tok, room, f"{probe}:0", "fan-warm")
        await asyncio.gather(*(r.wait_tag(probe, 1, 300) for r in remotes))
        ctx.state["fan_s"] = (room, tok)
    room, tok = ctx.state["fan_s"]
    counter = ctx.state.setdefault("fan_s_txn", [0])

    async def send(body):
        counter[0] += 1
        await s.send(tok, room, body, f"fan-{counter[0]}")
    await _fanout_measure(ctx, "synapse", rep, remotes, send)


# --------------------------------------------------------------------------- memory

def record_memory(ctx: Context) -> None:
    res = ctx.results
    for key, who in (("batch_sizes", "fedstack"), ("batch_sizes_s", "Synapse")):
        if ctx.state.get(key):
            res.notes.append(f"{who} batching, PDUs per transaction after the outage (last repetition): "
                             f"{ctx.state[key]}.")
    for conc, splits in sorted(ctx.state.get("cpu_split", {}).items()):
        res.notes.append(f"fedstack CPU-s per 1,000 events by process, end to end at {conc} in flight "
                         f"(last repetition): {splits[-1]}.")
    per_service = {}
    for hs in (ctx.a, ctx.b):
        if hs is None or hs.hs is None:
            continue
        rss = hs.rss()
        res.add("rss", "fedstack", sum(rss.values()),
                label="Memory after the runs, per homeserver (fedstack: its 4 processes)",
                unit="MiB RSS", higher_better=False)
        per_service[hs.label] = rss
        res.add("rss_max", "fedstack", max(rss.values()),
                label="Memory after the runs, largest single process (fedstack: of its 4 services)",
                unit="MiB RSS", higher_better=False)
    for s in (ctx.s1, ctx.s2):
        if s is not None and s.peer is not None:
            for key, label in (("rss", "per homeserver (fedstack: its 4 processes)"),
                               ("rss_max", "largest single process (fedstack: of its 4 services)")):
                res.add(key, "synapse", s.rss(), label=f"Memory after the runs, {label}",
                        unit="MiB RSS", higher_better=False)
    for label, rss in per_service.items():
        parts = ", ".join(f"{k} {v:.0f}" for k, v in rss.items())
        res.notes.append(f"RSS of fedstack {label} after the runs (MiB): {parts}.")
