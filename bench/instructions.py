"""`python -m bench.instructions`: CPU instructions per event end to end, counted by
valgrind's callgrind, so that two revisions compare on a noisy machine.

    python -m bench.instructions                      # this tree
    python -m bench.instructions --against 35425b9    # this tree and a git revision, side by side
    python -m bench.instructions --batch 50 --events 100,600 --against 35425b9   # batch submit

What runs: two whole homeservers in one process (`tests.harness.InProcessHomeserver`: the
four real apps of each, their lifespans, sqlite files, X-Matrix signing and verification;
only the sockets between the apps are replaced by in-process ASGI calls), a v12 room of A
that B joins, B's subscription, then N messages sent through A's domain API one at a time,
each awaited until B's subscription has it. The figure is the difference between the
instruction counts ("I refs") of a run with `--events` N2 and one with N1, divided by
N2 - N1: start-up, imports and the join cancel out.

Why callgrind: on these 2-core machines the CPU seconds of `python -m bench` drift by 20-40%
between runs with whatever else runs; instruction counts do not (the same count twice, with
the other core loaded). They leave out what the in-process wiring skips (uvicorn, our HTTP/1
client, the kernel's loopback), which `python -m bench.hop` measures per hop; and an
instruction is not a fixed time. Needs valgrind (Debian's `valgrind`); a run takes minutes.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def _inner(n: int, batch: int) -> None:
    """One run: join, warm up, then `n` messages A -> B; one at a time, each awaited at B's
    subscription (batch 1), or in batch-submit calls of `batch`, each call's events awaited
    at B (A sends them on in transactions of up to 50 PDUs: B's inbound path)."""
    sys.path.insert(0, os.getcwd())
    from tests.harness import InProcessHomeserver, Receiver
    d = Path(tempfile.mkdtemp(prefix="fedstack-instr-"))
    ra, rb = Receiver(), Receiver()
    arrived = asyncio.Event()

    class Signalling(list):
        def append(self, body):
            super().append(body)
            arrived.set()
    rb.bodies = Signalling()       # an event, not the receiver's polling loop: no idle work

    async def until(k: int) -> None:
        while sum(len(b["events"]) for b in rb.bodies) < k:
            arrived.clear()
            await asyncio.wait_for(arrived.wait(), 300)

    network: dict = {}
    a = InProcessHomeserver("a.test:8448", d / "a", network, ra)
    b = InProcessHomeserver("b.test:8448", d / "b", network, rb)
    await a.start()
    await b.start()
    try:
        alice, bob = a.user("alice"), b.user("bob")
        room = await a.api.create_room(alice, room_version="12", preset="public_chat", name="r")
        await b.api.join(room, bob, servers=[a.server_name])
        await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
        sent = 0
        sizes = ([1] * (5 + n) if batch == 1 else     # 5 warm-up events, then n
                 [5] + [batch] * (n // batch) + ([n % batch] if n % batch else []))
        for size in sizes:
            if batch == 1:
                await a.api.send(room, alice, "m.room.message", {"msgtype": "m.text", "body": f"m{sent}"})
            else:
                await a.api.send_batch(room, [{"sender": alice, "type": "m.room.message",
                                               "content": {"msgtype": "m.text", "body": f"m{sent + j}"}}
                                              for j in range(size)])
            sent += size
            await until(sent)
    finally:
        await a.stop()
        await b.stop()
        shutil.rmtree(d, ignore_errors=True)


def count(tree: Path, n: int, batch: int) -> int:
    """Instructions of one inner run of `n` events in `tree` (a checkout of fedstack)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "callgrind.log"
        cmd = ["valgrind", "--tool=callgrind", f"--log-file={log}",
               f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
               sys.executable, str(Path(__file__).resolve()), "--inner", str(n),
               "--batch", str(batch)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run(cmd, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
        found = re.search(r"I\s+refs:\s+([\d,]+)", log.read_text())
        if not found:
            raise RuntimeError(f"no instruction count in {log.read_text()[-2000:]}")
        return int(found.group(1).replace(",", ""))


def per_event(tree: Path, n1: int, n2: int, batch: int) -> float:
    return (count(tree, n2, batch) - count(tree, n1, batch)) / (n2 - n1)


def checkout(rev: str, into: Path) -> Path:
    """`git archive` of `rev` unpacked into `into` (no work tree is touched)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", default="20,120", help="N1,N2: the two run sizes (default 20,120)")
    p.add_argument("--batch", type=int, default=1,
                   help="events per domain-API call: 1 (default, each awaited at B) or a batch "
                        "submit size, e.g. 50 (B then receives transactions of 50 PDUs)")
    p.add_argument("--against", metavar="REV", help="also count a git revision of this repository")
    p.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner is not None:
        asyncio.run(_inner(args.inner, args.batch))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    n1, n2 = (int(x) for x in args.events.split(","))
    trees = [("this tree", REPO)]
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            trees.append((args.against, checkout(args.against, Path(tmp))))
        figures = {}
        for label, tree in trees:
            t0 = time.monotonic()
            figures[label] = per_event(tree, n1, n2, args.batch)
            print(f"{label}: {figures[label] / 1e6:.2f} M instructions per event "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    if args.against:
        mine, theirs = figures["this tree"], figures[args.against]
        print(f"this tree / {args.against}: {mine / theirs:.3f} ({(mine / theirs - 1) * 100:+.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
