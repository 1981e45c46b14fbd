"""State-resolution test vectors from tests/vectors/state-res (see its README.md).

The case list is read from the README's two tables, and every file in expected/ must be
covered by a case, so no vector can be skipped silently. If the test data directory is
missing the tests fail (they do not skip).

Batch cases are computed the way a server would: for each PDU in file order,
state before = resolve(states after each prev_event); the PDU is checked against its own
auth events (rule "auth_events", then the remaining rules against those events; failing
that it is rejected and marked ``"rejected": True``) and against the state before it;
state after = state before + the PDU if it is a state event that passed. The final state
is then resolved three ways that must agree:
  - pairwise, folding the forward extremities one at a time (event by event),
  - batch by batch (each file's tips resolved into the running state),
  - all at once (one resolution over every file's tips).
"""
from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest

from services.pdu.authrules import AuthError, check_auth, check_auth_events_list
from services.pdu.stateres import resolve_state


DATA_DIR = Path(__file__).resolve().parents[1] / "vectors" / "state-res"


def _data_dir() -> Path:
    """The vectors shipped in the repository (tests/vectors/state-res); nothing outside it."""
    if (DATA_DIR / "README.md").is_file() and (DATA_DIR / "fixtures").is_dir():
        return DATA_DIR
    raise FileNotFoundError(f"state-res test data not found in {DATA_DIR}")


def _table_rows(readme: str, heading: str) -> list[list[str]]:
    """Data rows of the first markdown table after `heading`."""
    section = readme.split(heading, 1)[1]
    rows, started = [], False
    for line in section.splitlines():
        line = line.strip()
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cells[0] in ("case", "") or set(cells[0]) <= set("-: "):
                continue
            rows.append(cells)
        elif started:
            break
    return rows


def _file_list(cell: str) -> list[str]:
    out, folder = [], ""
    for name in (n.strip() for n in cell.split(",")):
        if "/" in name:
            folder = name.rsplit("/", 1)[0] + "/"
        else:
            name = folder + name
        out.append(name)
    return out


def _cases() -> tuple[list, list]:
    try:
        readme = (_data_dir() / "README.md").read_text()
    except FileNotFoundError:
        # Keep one case per table so that the parametrised tests FAIL (not skip).
        return [("test-data-missing", [])], [("test-data-missing", [], "")]
    batch = [(r[0], _file_list(r[1])) for r in _table_rows(readme, "## Batch cases")]
    maps = [(r[0], _file_list(r[1]), r[2]) for r in _table_rows(readme, "## State-map cases")]
    return batch, maps


BATCH_CASES, MAP_CASES = _cases()


def _load(name: str):
    return json.loads((_data_dir() / "fixtures" / f"{name}.json").read_text())


def _expected(case: str) -> dict:
    rows = json.loads((_data_dir() / "expected" / f"{case}.json").read_text())
    return {(r["type"], r["state_key"]): (r["event_id"], r["content"]) for r in rows}


def _room_version(pdus: list[dict]) -> str:
    for p in pdus:
        if p["type"] == "m.room.create":
            return p["content"]["room_version"]
    raise AssertionError("no create event")


def _assert_state(result: dict, expected: dict, events: dict) -> None:
    got = {k: (v, events[v]["content"]) for k, v in result.items()}
    assert got == expected


def _create_of(event: dict, events: dict, state: dict, rv: str) -> dict | None:
    if rv == "12":
        rid = event.get("room_id")
        return events.get("$" + rid[1:]) if isinstance(rid, str) else None
    cid = state.get(("m.room.create", ""))
    return events.get(cid) if cid else None


# ------------------------------------------------------------------ preconditions

def test_test_data_present_and_every_expected_file_has_a_case():
    d = _data_dir()  # raises (fails) when missing
    expected = {p.stem for p in (d / "expected").glob("*.json")}
    cases = {c for c, _ in BATCH_CASES} | {c for c, _, _ in MAP_CASES}
    assert BATCH_CASES and MAP_CASES
    assert expected == cases


# ------------------------------------------------------------------- batch cases

class _Room:
    """Replays PDUs like a server: per-event state before/after, rejection."""

    def __init__(self, rv: str):
        self.rv = rv
        self.events: dict[str, dict] = {}
        self.after: dict[str, dict] = {}
        self.refused: dict[str, str] = {}

    def resolve(self, sets: list[dict]) -> dict:
        return resolve_state(self.rv, sets, self.events.get)

    def add(self, pdu: dict) -> None:
        ev = copy.deepcopy(pdu)
        eid = ev["event_id"]
        assert eid not in self.events
        for p in ev["prev_events"] + ev["auth_events"]:
            assert p in self.events, f"{eid} cites unknown {p}"
        self.events[eid] = ev
        prevs = ev["prev_events"]
        if not prevs:
            before: dict = {}
        elif len(prevs) == 1:
            before = dict(self.after[prevs[0]])
        else:
            before = self.resolve([self.after[p] for p in prevs])
        # Receipt step: auth against the event's own auth events.
        auth = [self.events[a] for a in ev["auth_events"] if not self.events[a].get("rejected")]
        create_by_auth = _create_of(ev, self.events, {(a["type"], a["state_key"]): a["event_id"] for a in auth}, self.rv)
        try:
            check_auth_events_list(ev, auth, self.rv, create_by_auth)
            check_auth(ev, {(a["type"], a["state_key"]): a for a in auth}, self.rv, create_by_auth)
        except AuthError as exc:
            ev["rejected"] = True
            self.refused[eid] = f"auth events: {exc}"
        passed = not ev.get("rejected")
        if passed:
            state_events = {k: self.events[v] for k, v in before.items()}
            try:
                check_auth(ev, state_events, self.rv, _create_of(ev, self.events, before, self.rv))
            except AuthError as exc:
                passed = False
                self.refused[eid] = f"state before: {exc}"
        after = dict(before)
        if passed and "state_key" in ev:
            after[(ev["type"], ev["state_key"])] = eid
        self.after[eid] = after


def _tips(ids: list[str], events: dict) -> list[str]:
    cited = {p for i in ids for p in events[i]["prev_events"]}
    return [i for i in ids if i not in cited]


@pytest.mark.parametrize("case,files", BATCH_CASES, ids=[c for c, _ in BATCH_CASES])
def test_batch_case(case, files):
    _data_dir()
    batches = [_load(f) for f in files]
    rv = _room_version(batches[0])
    room = _Room(rv)
    batch_ids = []
    for batch in batches:
        for pdu in batch:
            room.add(pdu)
        batch_ids.append([p["event_id"] for p in batch])
    all_ids = [i for b in batch_ids for i in b]
    expected = _expected(case)

    # Event by event: fold the forward extremities one at a time.
    extremities = _tips(all_ids, room.events)
    state = room.after[extremities[0]]
    for e in extremities[1:]:
        state = room.resolve([state, room.after[e]])
    _assert_state(state, expected, room.events)

    # All forward extremities in a single resolution.
    single = room.resolve([room.after[e] for e in extremities])
    assert single == state

    # Batch by batch: each file's tips resolved into the running state.
    acc = None
    for ids in batch_ids:
        sets = [room.after[t] for t in _tips(ids, room.events)]
        acc = room.resolve(([acc] if acc is not None else []) + sets)
    assert acc == state

    # All at once: every file's tips together.
    everything = room.resolve([room.after[t] for ids in batch_ids for t in _tips(ids, room.events)])
    assert everything == state

    # Order of the state sets must not matter.
    rnd = random.Random(case)
    sets = [room.after[e] for e in extremities]
    for _ in range(3):
        rnd.shuffle(sets)
        assert room.resolve(sets) == state


# --------------------------------------------------------------- state-map cases

@pytest.mark.parametrize("case,state_files,pdu_file", MAP_CASES, ids=[c for c, _, _ in MAP_CASES])
def test_state_map_case(case, state_files, pdu_file):
    _data_dir()
    pdus = _load(pdu_file)
    rv = _room_version(pdus)
    events = {p["event_id"]: p for p in pdus}
    sets = []
    for f in state_files:
        ids = _load(f)
        sets.append({(events[i]["type"], events[i]["state_key"]): i for i in ids})
    result = resolve_state(rv, sets, events.get)
    _assert_state(result, _expected(case), events)
    assert resolve_state(rv, list(reversed(sets)), events.get) == result


def test_map_cases_cover_both_algorithms():
    _data_dir()
    versions = {_room_version(_load(p)) for _, _, p in MAP_CASES}
    assert {"11", "12"} <= versions


# ------------------------------------------------------------------- performance

def _big_room(rv: str, members: int):
    """A room with `members` joined users, a few PL changes, and two forks that each
    change a couple of state keys."""
    v12 = rv == "12"
    events: dict[str, dict] = {}
    alice = "@alice:example.com"
    create_id = "$create"
    room_id = "!create" if v12 else "!room:example.com"
    ts = [0]

    def add(eid, etype, sender, sk, content, auth, prev):
        ts[0] += 1
        ev = {"event_id": eid, "room_id": room_id, "type": etype, "sender": sender,
              "state_key": sk, "content": content, "origin_server_ts": ts[0],
              "prev_events": prev, "auth_events": [a for a in auth if a and (not v12 or a != create_id)]}
        events[eid] = ev
        return eid

    c = {"room_version": rv}
    if rv == "10":
        c["creator"] = alice
    create = {"event_id": create_id, "type": "m.room.create", "sender": alice, "state_key": "",
              "content": c, "origin_server_ts": 0, "prev_events": [], "auth_events": []}
    if not v12:
        create["room_id"] = room_id
    events[create_id] = create
    state = {("m.room.create", ""): create_id}
    ja = add("$join-alice", "m.room.member", alice, alice, {"membership": "join"}, [create_id], [create_id])
    state[("m.room.member", alice)] = ja
    users = {} if v12 else {alice: 100}
    pl = add("$pl0", "m.room.power_levels", alice, "", {"users": dict(users)}, [create_id, ja], [ja])
    state[("m.room.power_levels", "")] = pl
    jr = add("$jr", "m.room.join_rules", alice, "", {"join_rule": "public"}, [create_id, ja, pl], [pl])
    state[("m.room.join_rules", "")] = jr
    last = jr
    for i in range(members):
        u = f"@u{i}:example.com"
        last = add(f"$join-{i}", "m.room.member", u, u, {"membership": "join"}, [create_id, pl, jr], [last])
        state[("m.room.member", u)] = last
        if i % 500 == 499:
            users[f"@u{i}:example.com"] = 50
            pl = add(f"$pl-{i}", "m.room.power_levels", alice, "", {"users": dict(users)},
                     [create_id, pl, ja], [last])
            state[("m.room.power_levels", "")] = pl
            last = pl
    fork_a = dict(state)
    fork_b = dict(state)
    t1 = add("$topic-a", "m.room.topic", alice, "", {"topic": "a"}, [create_id, pl, ja], [last])
    fork_a[("m.room.topic", "")] = t1
    k = add("$kick-u3", "m.room.member", alice, "@u3:example.com", {"membership": "leave"},
            [create_id, pl, ja, state[("m.room.member", "@u3:example.com")]], [t1])
    fork_a[("m.room.member", "@u3:example.com")] = k
    t2 = add("$topic-b", "m.room.topic", alice, "", {"topic": "b"}, [create_id, pl, ja], [last])
    fork_b[("m.room.topic", "")] = t2
    return events, fork_a, fork_b


@pytest.mark.parametrize("rv", ["10", "11", "12"])
def test_large_room_small_conflict(rv):
    """Correctness on a large room; its speed is measured in bench/, not asserted here."""
    events, a, b = _big_room(rv, 3000)
    result = resolve_state(rv, [a, b], events.get)
    assert result[("m.room.member", "@u3:example.com")] == "$kick-u3"
    assert result[("m.room.topic", "")] in ("$topic-a", "$topic-b")
    assert len(result) == len(a)
