"""`python -m bench`: every fedstack benchmark on this machine, Synapse measured beside it.

    python -m bench                 # full run, 3 repetitions
    python -m bench --quick         # small and fast (smoke test), 1 repetition
    python -m bench --repeat 5 --only inbound,e2e --no-synapse

Real processes only: two fedstack homeservers (four services each, HTTPS federation on
loopback), two Synapses (tests/interop/synapse_peer.py; its venv is created on first use),
and fake remote homeservers served by this process. Prints a markdown table (median and
min–max over the repetitions, fedstack ÷ Synapse) and writes it, a PNG chart and the raw
figures to --out (default .cache/bench/<time>/); --save also writes bench/RESULTS.md and
bench/results.png. Every process started is stopped by its PID at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import ensure_requirements, log

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("inbound", "e2e", "batch", "idle", "batching", "fanout", "typing")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, 1 repetition (smoke test)")
    p.add_argument("--repeat", type=int, default=None, help="repetitions per figure (default 3; 1 with --quick)")
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--no-synapse", action="store_true", help="measure fedstack only")
    p.add_argument("--messages", type=int, default=None, help="end-to-end messages for fedstack (default 5000)")
    p.add_argument("--synapse-messages", type=int, default=None,
                   help="end-to-end messages for Synapse (default 100: more overflow its staging queue, see bench/README.md)")
    p.add_argument("--out", default=None, help="output directory (default .cache/bench/<time>)")
    p.add_argument("--save", action="store_true", help="also write bench/RESULTS.md and bench/results.png")
    p.add_argument("--keep", action="store_true", help="keep the servers' data directories")
    p.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite",
                   help="fedstack's transaction-service database: sqlite (default) or PostgreSQL, "
                   "a fresh database per homeserver on --postgres-url, or else on a throw-away "
                   "server the bench starts (tests/postgres.py, with fsync on)")
    p.add_argument("--postgres-url", default=None, metavar="URL",
                   help="an existing PostgreSQL server to create the databases on, as a database "
                   "URL to connect to (postgresql+psycopg://USER@HOST:PORT/postgres)")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    return args


async def amain(args) -> int:
    from bench import runs, typing_edus
    from bench.report import Results, chart, markdown_table
    from bench.stacks import CallbackReceiver, FedstackServer, SynapseServer

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else REPO / ".cache" / "bench" / stamp
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fedstack-bench-"))
    results = Results()
    sizes = runs.Sizes.for_args(args)
    ctx = runs.Context(args=args, sizes=sizes, work=work, results=results)
    t_start = time.monotonic()
    load_before = os.getloadavg()
    failed = []
    pg_server = None
    try:
        ctx.receiver = await CallbackReceiver().start()
        new_db = lambda: ""      # noqa: E731  (sqlite: the data directory's file)
        if args.database == "postgresql":
            from tests.postgres import PostgresServer, create_database
            if args.postgres_url:
                server_url = args.postgres_url
            else:
                pg_server = PostgresServer().start(fsync=True)
                server_url = pg_server.url
            new_db = lambda: create_database(server_url)    # noqa: E731
        ctx.a = FedstackServer(work / "fedstack-a", "A", new_db())
        ctx.b = FedstackServer(work / "fedstack-b", "B", new_db())
        starting = [ctx.a.start(), ctx.b.start()]
        if ctx.synapse:
            ctx.s1 = SynapseServer(work / "synapse-1", "A")
            ctx.s2 = SynapseServer(work / "synapse-2", "B")
            starting += [ctx.s1.start(), ctx.s2.start()]
        await asyncio.gather(*starting)
        if ctx.synapse:
            ctx.state["s1_alice"] = await ctx.s1.register("alice")

        plan = []
        for rep in range(args.repeat):
            if "inbound" in args.only:
                plan.append(("inbound", "fedstack", rep, lambda r: runs.inbound_fedstack_once(ctx, r)))
                plan.append(("inbound", "synapse", rep, lambda r: runs.inbound_synapse_once(ctx, r)))
        for rep in range(args.repeat):
            if "e2e" in args.only:
                for conc in (1, 16):
                    plan.append((f"e2e-c{conc}", "fedstack", rep, lambda r, c=conc: runs.e2e_fedstack_once(ctx, r, c)))
                    plan.append((f"e2e-c{conc}", "synapse", rep, lambda r, c=conc: runs.e2e_synapse_once(ctx, r, c)))
            if "batch" in args.only:
                plan.append(("e2e-batch", "fedstack", rep, lambda r: runs.e2e_batch_fedstack_once(ctx, r)))
            if "idle" in args.only:
                plan.append(("idle", "fedstack", rep, lambda r: runs.idle_fedstack_once(ctx, r)))
                plan.append(("idle", "synapse", rep, lambda r: runs.idle_synapse_once(ctx, r)))
        for rep in range(args.repeat):
            if "batching" in args.only:
                plan.append(("batching", "fedstack", rep, lambda r: runs.batching_fedstack_once(ctx, r)))
                plan.append(("batching", "synapse", rep, lambda r: runs.batching_synapse_once(ctx, r)))
            if "fanout" in args.only:
                plan.append(("fanout", "fedstack", rep, lambda r: runs.fanout_fedstack_once(ctx, r)))
                plan.append(("fanout", "synapse", rep, lambda r: runs.fanout_synapse_once(ctx, r)))
        for rep in range(args.repeat):
            if "typing" in args.only:
                plan.append(("typing", "fedstack", rep, lambda r: typing_edus.fedstack_once(ctx, r)))
                plan.append(("typing", "synapse", rep, lambda r: typing_edus.synapse_once(ctx, r)))

        for name, side, rep, fn in plan:
            if side == "synapse" and not ctx.synapse:
                continue
            if (name, side) in failed:
                continue
            try:
                await fn(rep)
            except Exception as exc:  # noqa: BLE001 - report it, go on with the others
                traceback.print_exc()
                failed.append((name, side))
                results.warn(f"{name} ({side}) failed in repetition {rep + 1}: {type(exc).__name__}: {exc}"[:500])
        runs.synapse_beside_batch(ctx)
        runs.record_memory(ctx)
        for r in ctx.remotes:
            if r.unexpected:
                uniq = sorted(set(r.unexpected))
                results.notes.append(f"fake remote {r.server_name} got requests it does not serve: "
                                     f"{', '.join(uniq[:6])}")
        if ctx.receiver.duplicates:
            results.warn(f"{ctx.receiver.duplicates} events were delivered twice to a fedstack subscription")
        watcher = ctx.state.get("e2e_s", (None, None, None))[2]
        if watcher is not None and (watcher.limited or watcher.duplicates):
            results.warn(f"Synapse /sync: {watcher.limited} limited timelines, {watcher.duplicates} repeats")
    finally:
        watcher = ctx.state.get("e2e_s", (None, None, None))[2]
        if watcher is not None:
            await watcher.stop()
        await typing_edus.stop(ctx)
        for r in ctx.remotes:
            await r.stop()
        if ctx.receiver is not None:
            await ctx.receiver.stop()
        for srv in (ctx.a, ctx.b, ctx.s1, ctx.s2):
            if srv is not None:
                try:
                    await srv.stop()
                except Exception:  # noqa: BLE001
                    traceback.print_exc()
        if pg_server is not None:
            pg_server.stop()
        if args.keep:
            log(f"data directories kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - t_start
    synapse_version = ""
    if ctx.synapse:
        from tests.interop.synapse_peer import default_venv_path
        try:
            synapse_version = (default_venv_path() / ".fedstack-synapse-complete").read_text().strip()
        except OSError:
            pass
    results.params = {"quick": args.quick, "repeat": args.repeat, "sizes": vars(sizes),
                      "elapsed_s": round(elapsed), "cpus": os.cpu_count(),
                      "load_before": load_before, "load_after": os.getloadavg(),
                      "python": platform.python_version(), "synapse": synapse_version}
    table = markdown_table(results)
    s = sizes
    header = [
        f"# fedstack benchmarks ({'quick' if args.quick else 'full'} run, {time.strftime('%Y-%m-%d %H:%M')})",
        "",
        f"`python -m bench{' --quick' if args.quick else ''}` on {os.cpu_count()} cores, "
        f"{args.repeat} repetition(s), {elapsed / 60:.1f} min; load average before "
        f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}. Synapse {synapse_version or 'not run'} "
        f"(sqlite, presence off); fedstack's database: {args.database}. Medians, min–max over "
        "repetitions; ↑/↓: higher/lower is better.",
        "",
        f"Sizes: inbound {s.inbound:,} PDUs into fedstack, {s.inbound_synapse:,} into Synapse "
        f"(transactions of {runs.TXN_SIZE}, one in flight; Synapse: each transaction awaited until "
        f"stored); end to end {s.e2e:,} messages fedstack, {s.e2e_synapse:,} Synapse; lone-message "
        f"latency {s.idle_samples} samples; batching {s.batching:,} events; fan-out "
        f"{s.fanout_remotes} destinations, {s.fanout_samples} messages per repetition; typing "
        f"{typing_edus.sizes(args.quick)[0]:,} EDUs fedstack, {typing_edus.sizes(args.quick)[1]:,} "
        f"Synapse ({typing_edus.IN_FLIGHT} in flight).",
        "",
    ]
    footer = [""]
    if results.notes or results.warnings:
        footer += [f"- {n}" for n in results.notes] + [f"- **warning**: {w}" for w in results.warnings]
    text = "\n".join(header + [table] + footer) + "\n"
    (out / "RESULTS.md").write_text(text)
    (out / "results.json").write_text(results.to_json())
    png = out / "results.png"
    try:
        chart(results, png)
    except Exception:  # noqa: BLE001 - the table matters more than the chart
        traceback.print_exc()
    if args.save:
        (REPO / "bench" / "RESULTS.md").write_text(text.replace(str(out), "bench"))
        if png.exists():
            shutil.copy(png, REPO / "bench" / "results.png")
    print()
    print(text)
    print(f"written: {out / 'RESULTS.md'}, {png}, {out / 'results.json'}"
          + (", bench/RESULTS.md, bench/results.png" if args.save else ""))
    return 1 if failed else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    ensure_requirements()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
