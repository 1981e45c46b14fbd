"""State resolution v2 (room versions 10, 11) and v2.1 (room version 12). Pure, no I/O.

``resolve_state(room_version, state_sets, get_event)`` resolves state maps
``(type, state_key) -> event_id`` into one. ``get_event(event_id)`` returns the event dict
(with ``event_id``) or None when unknown; it must be able to return every event of the
state sets and of their auth chains. An event dict carrying ``"rejected": True`` is
never admitted into the resolved state and never used as an auth event.

Algorithm (spec "state resolution v2", room v2-v11; v12 changes marked):
- unconflicted map: keys with the same event in every set; conflicted set: the other
  events (a key missing from a set is conflicted).
- auth difference: C_i = the events of S_i plus their auth chains; difference =
  union(C_i) - intersection(C_i). (Counting S_i's own events in C_i follows Synapse and
  ruma; the two readings differ only for unconflicted events that are auth events of
  just some sets.)
- v12: conflicted state subgraph = events on auth-DAG paths between conflicted events.
- full conflicted set = conflicted set + auth difference (+ subgraph in v12).
- X = power events of the full conflicted set + the full-conflicted-set events of their
  auth chains, in reverse topological power order (Kahn over auth edges; among ready events
  the smallest (-sender power, origin_server_ts, event_id)).
- R = iterative auth checks over X starting from the unconflicted map (v12: an EMPTY map).
- the other full-conflicted-set events in mainline order of R's power levels, iterative
  auth checks on top of R; finally the unconflicted map is overlaid.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable

from services.pdu.authrules import (
    CREATE,
    CREATE_KEY,
    MEMBER,
    PL_KEY,
    POWER_LEVELS,
    JOIN_RULES,
    AuthError,
    auth_types_for_event,
    check_auth,
    get_user_power_level,
)

__all__ = ["resolve_state", "is_power_event"]

StateMap = dict[tuple[str, str], str]


def is_power_event(event: dict) -> bool:
    """m.room.power_levels, m.room.join_rules (and m.room.create) with state_key "", or a
    membership leave/ban whose sender is not its state_key."""
    etype = event.get("type")
    sk = event.get("state_key")
    if etype in (POWER_LEVELS, JOIN_RULES, CREATE):
        return sk == ""
    if etype == MEMBER and isinstance(sk, str):
        m = (event.get("content") or {}).get("membership")
        return m in ("leave", "ban") and event.get("sender") != sk
    return False


def resolve_state(room_version: str, state_sets: list[StateMap],
                  get_event: Callable[[str], dict | None]) -> StateMap:
    """Resolve `state_sets` with v2 (rooms 10, 11) or v2.1 (room 12)."""
    sets = [dict(s) for s in state_sets]
    if not sets:
        return {}
    if len(sets) == 1:
        return sets[0]
    return _Resolver(room_version, get_event).resolve(sets)


class _Resolver:
    def __init__(self, room_version: str, get_event: Callable[[str], dict | None]):
        self.rv = room_version
        self.v21 = room_version == "12"
        self._get = get_event
        self._events: dict[str, dict | None] = {}
        self._auth_ids: dict[str, tuple[str, ...]] = {}
        self._creates: dict[str, dict | None] = {}
        self._power: dict[str, int | float] = {}

    # ------------------------------------------------------------ event access
    def ev(self, eid: str) -> dict | None:
        try:
            return self._events[eid]
        except KeyError:
            e = self._get(eid)
            if e is not None and e.get("event_id") != eid:
                e = dict(e, event_id=eid)
            self._events[eid] = e
            return e

    def usable(self, eid: str) -> dict | None:
        e = self.ev(eid)
        if e is None or e.get("rejected"):
            return None
        return e

    def auth_ids(self, eid: str) -> tuple[str, ...]:
        try:
            return self._auth_ids[eid]
        except KeyError:
            e = self.ev(eid)
            ids = tuple(e.get("auth_events") or ()) if e else ()
            self._auth_ids[eid] = ids
            return ids

    def chain(self, start: Iterable[str], include_start: bool) -> set[str]:
        """Events reachable through auth_events from `start` (optionally with `start`)."""
        seen: set[str] = set()
        stack: list[str] = []
        for s in start:
            if include_start:
                if s not in seen and self.ev(s) is not None:
                    seen.add(s)
                    stack.append(s)
            else:
                stack.append(s)
        auth_ids = self.auth_ids
        while stack:
            for a in auth_ids(stack.pop()):
                if a not in seen and self.ev(a) is not None:
                    seen.add(a)
                    stack.append(a)
        return seen

    def create_for(self, event: dict) -> dict | None:
        """The room's create event as seen by `event` (v12: from its room_id; v10/v11:
        among its auth events)."""
        if self.v21:
            rid = event.get("room_id")
            if not isinstance(rid, str) or not rid.startswith("!"):
                return None
            if rid not in self._creates:
                self._creates[rid] = self.usable("$" + rid[1:])
            return self._creates[rid]
        for a in self.auth_ids(event["event_id"]):
            ae = self.usable(a)
            if ae is not None and ae.get("type") == CREATE and ae.get("state_key") == "":
                return ae
        return None

    def pl_in_auth(self, eid: str) -> str | None:
        for a in self.auth_ids(eid):
            ae = self.ev(a)
            if ae is not None and ae.get("type") == POWER_LEVELS and ae.get("state_key") == "":
                return a
        return None

    def sender_power(self, eid: str) -> int | float:
        """Sender's power level judged from the event's own auth events."""
        try:
            return self._power[eid]
        except KeyError:
            pass
        e = self.ev(eid)
        state: dict = {}
        for a in self.auth_ids(eid):
            ae = self.usable(a)
            if ae is not None and (ae.get("type"), ae.get("state_key")) == PL_KEY:
                state[PL_KEY] = ae
                break
        create = self.create_for(e)
        if create is not None:
            state[CREATE_KEY] = create
        p = get_user_power_level(e.get("sender"), state, self.rv, create)
        self._power[eid] = p
        return p

    # --------------------------------------------------------------- algorithm
    def resolve(self, sets: list[StateMap]) -> StateMap:
        unconflicted: StateMap = {}
        conflicted: set[str] = set()
        keys = set().union(*sets)
        for k in keys:
            vals = {s.get(k) for s in sets}
            if len(vals) == 1 and None not in vals:
                unconflicted[k] = vals.pop()
            else:
                conflicted.update(v for v in vals if v is not None)
        if not conflicted:
            return unconflicted
        conflicted = {c for c in conflicted if self.ev(c) is not None}

        full = set(conflicted)
        full |= self.auth_difference(sets, unconflicted, conflicted)
        if self.v21:
            full |= self.conflicted_subgraph(conflicted)

        power = {e for e in full if is_power_event(self.ev(e))}
        x = power | (self.chain(power, include_start=False) & full)
        x_sorted = self.reverse_topological_power_sort(x)

        resolved: StateMap = {} if self.v21 else dict(unconflicted)
        resolved = self.iterative_auth_checks(resolved, x_sorted)

        rest = full - x
        rest_sorted = self.mainline_sort(rest, resolved.get(PL_KEY))
        resolved = self.iterative_auth_checks(resolved, rest_sorted)

        resolved.update(unconflicted)
        return resolved

    def auth_difference(self, sets: list[StateMap], unconflicted: StateMap,
                        conflicted: set[str]) -> set[str]:
        """union(C_i) - intersection(C_i), C_i = S_i's events and their auth chains.

        Every C_i contains the (closed) chain of the unconflicted events, so only events
        reachable from some set's conflicted events can be in the difference."""
        per_set = []
        for s in sets:
            own = {v for k, v in s.items() if k not in unconflicted}
            per_set.append(self.chain(own, include_start=True))
        union = set().union(*per_set)
        common = set.intersection(*per_set)
        candidates = union - common
        if not candidates:
            return set()
        base = self.chain(unconflicted.values(), include_start=True)
        return candidates - base

    def conflicted_subgraph(self, conflicted: set[str]) -> set[str]:
        """Events on auth-DAG paths between conflicted events (endpoints included)."""
        reachable = self.chain(conflicted, include_start=True)
        # reaches[e]: some conflicted event is reachable from e through >= 1 auth edge.
        reaches: dict[str, bool] = {}
        for root in reachable:
            if root in reaches:
                continue
            stack = [(root, False)]
            while stack:
                node, expanded = stack.pop()
                if node in reaches:
                    continue
                children = [a for a in self.auth_ids(node) if a in reachable]
                if expanded:
                    reaches[node] = any(a in conflicted or reaches.get(a, False) for a in children)
                    continue
                stack.append((node, True))
                for a in children:
                    if a not in reaches:
                        stack.append((a, False))
        return set(conflicted) | {e for e in reachable if reaches.get(e)}

    def reverse_topological_power_sort(self, events: set[str]) -> list[str]:
        """Kahn's algorithm over auth ancestry restricted to `events`, oldest first; among
        ready events the smallest (-sender power, origin_server_ts, event_id)."""
        # parents[e]: members of `events` reachable from e (its auth ancestors in the set).
        memo: dict[str, frozenset[str]] = {}

        def ancestors_in_set(root: str) -> frozenset[str]:
            stack = [(root, False)]
            while stack:
                node, expanded = stack.pop()
                if node in memo:
                    continue
                kids = [a for a in self.auth_ids(node) if self.ev(a) is not None]
                if expanded:
                    acc: set[str] = set()
                    for a in kids:
                        if a in events:
                            acc.add(a)
                        acc |= memo[a]
                    memo[node] = frozenset(acc)
                    continue
                stack.append((node, True))
                stack.extend((a, False) for a in kids if a not in memo)
            return memo[root]

        waiting: dict[str, int] = {}
        children: dict[str, list[str]] = {e: [] for e in events}
        for e in events:
            anc = ancestors_in_set(e)
            waiting[e] = len(anc)
            for a in anc:
                children[a].append(e)

        def key(e: str):
            ev = self.ev(e)
            return (-self.sender_power(e), ev.get("origin_server_ts", 0), e)

        heap = [key(e) for e, n in waiting.items() if n == 0]
        heapq.heapify(heap)
        out: list[str] = []
        while heap:
            e = heapq.heappop(heap)[2]
            out.append(e)
            for c in children[e]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(heap, key(c))
        return out

    def mainline_sort(self, events: set[str], pl_id: str | None) -> list[str]:
        """Ascending (-mainline position, origin_server_ts, event_id); position ∞ (no
        mainline event in the PL chain) sorts first."""
        index: dict[str, int] = {}
        p = pl_id
        i = 0
        while p is not None and p not in index and self.ev(p) is not None:
            index[p] = i
            i += 1
            p = self.pl_in_auth(p)
        inf = float("inf")
        pos_memo: dict[str, float] = {}

        def position(eid: str) -> float:
            path: list[str] = []
            cur = self.pl_in_auth(eid)
            pos = inf
            while cur is not None:
                if cur in index:
                    pos = index[cur]
                    break
                if cur in pos_memo:
                    pos = pos_memo[cur]
                    break
                path.append(cur)
                cur = self.pl_in_auth(cur)
            for pe in path:
                # a PL event's own position is that of the first mainline event strictly
                # below it, which is what we found.
                pos_memo[pe] = pos
            return pos

        def key(e: str):
            ev = self.ev(e)
            return (-position(e), ev.get("origin_server_ts", 0), e)

        return sorted(events, key=key)

    def iterative_auth_checks(self, base: StateMap, events: list[str]) -> StateMap:
        resolved = dict(base)
        for eid in events:
            ev = self.ev(eid)
            if ev is None or ev.get("rejected") or not isinstance(ev.get("state_key"), str):
                continue
            auth_state: dict[tuple[str, str], dict] = {}
            for a in self.auth_ids(eid):
                ae = self.usable(a)
                if ae is not None:
                    auth_state[(ae.get("type"), ae.get("state_key"))] = ae
            for k in auth_types_for_event(ev, self.rv):
                rid = resolved.get(k)
                if rid is not None:
                    re_ = self.usable(rid)
                    if re_ is not None:
                        auth_state[k] = re_
            create = self.create_for(ev) if self.v21 else None
            if ev.get("type") == CREATE:
                create = ev
            try:
                check_auth(ev, auth_state, self.rv, create)
            except AuthError:
                continue
            resolved[(ev["type"], ev["state_key"])] = eid
        return resolved
