"""Property-based fuzzing of the hostile-input surface (hypothesis).

- the X-Matrix Authorization parser: arbitrary text/bytes/objects raise XMatrixError and
  nothing else; headers made by `sign_request` (any valid server names, key versions,
  methods, URIs, contents) parse back, in every lenient spelling, and verify;
- event format validation: arbitrary JSON-like values and mutated valid events raise
  EventFormatError and nothing else (known-bad mutations always do); events built by
  `services.pdu.builder.build_event` pass;
- `PUT /_matrix/federation/v1/send/{txnId}` of a whole in-process homeserver (the harness'
  four real apps), signed by a real joined peer: generated malformed transactions are
  answered 200 or a 4xx Matrix error, never 5xx, and a 4xx stores nothing.

Canonical JSON and `parse_json_body` are fuzzed in tests/unit/test_canonical.py; its
strategies are reused here. Every test is bounded by `max_examples` (times FUZZ_SCALE from
the environment, default 1, for a longer run by hand).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

# from_regex imports (and pytest rewrites) hypothesis' regex module on first use; compiling
# it mid-run beside other threads once hit CPython 3.11's "AST constructor recursion depth
# mismatch" (cpython#106905). Building the strategy here makes that happen at collection.
st.from_regex("a", fullmatch=True).validate()

from services.pdu.builder import build_event
from shared.crypto import SigningKey, encode_base64
from shared.events import (MAX_NESTING, EventFormatError, check_content_hash, compute_event_id,
                           is_valid_server_name, validate_event_format, verify_event_signature)
from shared.room_versions import DEFAULT_ROOM_VERSION, get_room_version
from shared.xmatrix import XMatrixError, parse_authorization, sign_request, verify_request
from tests.fuzz.conftest import VERSIONS, Room, World, is_matrix_error, x_matrix
from tests.unit.test_canonical import json_values as canonical_values

SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


FAST = settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEND = settings(max_examples=examples(150), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

MAX = 2**53 - 1

# --------------------------------------------------------------------------- strategies

surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
tricky_chars = st.sampled_from(['"', "\\", ",", "=", " ", "\t", ":", "!", "$", "@", "\x00",
                                "\n", "\u2028", "\ufeff", "\U0001f600", "é"])
any_text = st.text(st.one_of(st.characters(), tricky_chars, surrogate), max_size=16)
huge_ints = st.one_of(st.integers(min_value=MAX + 1), st.integers(max_value=-MAX - 1),
                      st.sampled_from([2**53, -(2**53), 2**63, 2**64, -(2**63) - 1, 10**30, 10**300]))
numbers = st.one_of(st.integers(-MAX, MAX), huge_ints, st.floats(),
                    st.sampled_from([0.0, -0.0, 1e308, 5e-324]))
scalars = st.one_of(st.none(), st.booleans(), numbers, any_text)
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=15)
small_json = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(any_text, inner, max_size=3)),
    max_leaves=5)

# The same, as any JSON parser gives them: no lone surrogates, no NaN or infinities (bodies
# that are not JSON are fuzzed separately, and in tests/unit/test_canonical.py).
wire_text = st.text(st.one_of(st.characters(exclude_categories=["Cs"]), tricky_chars), max_size=16)
finite = st.floats(allow_nan=False, allow_infinity=False)
wire_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-MAX, MAX), huge_ints, finite, wire_text),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(wire_text, inner, max_size=5)),
    max_leaves=15)

EVENT_KEYS = ["type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
              "depth", "prev_events", "auth_events", "origin_server_ts", "unsigned",
              "event_id", "redacts", "origin", "membership"]
event_like = st.dictionaries(st.one_of(st.sampled_from(EVENT_KEYS), any_text), small_json,
                             max_size=10)
wire_event_like = st.dictionaries(st.one_of(st.sampled_from(EVENT_KEYS), wire_text),
                                  wire_json, max_size=10)

# Valid identifiers (spec appendices): server names, key versions, user/room IDs.
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
hostname = st.text(ALNUM + ".-", min_size=1, max_size=40)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
server_names = st.tuples(st.one_of(hostname, ipv4, ipv6),
                         st.one_of(st.just(""), st.integers(0, 99999).map(lambda p: f":{p}"))
                         ).map("".join)
key_versions = st.text(ALNUM + "_", min_size=1, max_size=16)
signing_keys = st.builds(SigningKey, st.binary(min_size=32, max_size=32), key_versions)
localparts = st.text("abcdefghijklmnopqrstuvwxyz0123456789._=-/+", min_size=1, max_size=20)
opaque = st.text(ALNUM + "_-", min_size=43, max_size=43)
event_types = st.one_of(st.sampled_from(["m.room.message", "m.room.topic", "m.room.name",
                                         "m.reaction", "org.example.custom"]),
                        st.from_regex(r"[a-z][a-z0-9._]{0,30}", fullmatch=True))


# --------------------------------------------------------------------------- X-Matrix

@FAST
@given(st.one_of(any_text, st.text(max_size=200), st.binary(max_size=200),
                 any_text.map(lambda s: "X-Matrix " + s),
                 st.lists(st.one_of(st.sampled_from(["origin", "destination", "key", "sig", "ORIGIN",
                                                     "=", ",", '"', "\\", " ", "\t", "x-matrix"]),
                                    any_text), max_size=25).map(lambda xs: "X-Matrix " + "".join(xs)),
                 st.none(), st.integers(), st.lists(st.text(max_size=3), max_size=2)))
def test_parse_authorization_only_raises_xmatrix_error(value):
    try:
        auth = parse_authorization(value)
    except XMatrixError:
        return
    assert set(auth) == {"origin", "destination", "key", "sig"}
    assert auth["key"] and auth["sig"] and isinstance(auth["origin"], str)
    assert auth["destination"] is None or isinstance(auth["destination"], str)
    assert is_valid_server_name(auth["origin"])     # it is used to fetch keys


def _relaxed(header: str, data) -> str:
    """The same header as a lenient receiver must accept it: scheme and parameter names in
    any case, blanks around ',' and '=', parameters in any order, bare values where they
    need no quotes, and unknown parameters added."""
    params = header[len("X-Matrix "):].split('",')
    pairs = [p.rstrip('"').split('="', 1) for p in params]
    pairs += data.draw(st.lists(st.tuples(st.sampled_from(["foo", "realm", "x"]),
                                          st.from_regex(r"[a-z0-9]{0,8}", fullmatch=True)),
                                max_size=2))
    pairs = data.draw(st.permutations(pairs))
    blank = st.sampled_from(["", " ", "\t", "  "])
    out = []
    for name, value in pairs:
        name = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
        quoted = data.draw(st.booleans()) or not value
        v = f'"{value}"' if quoted else value
        out.append(f"{data.draw(blank)}{name}{data.draw(blank)}={data.draw(blank)}{v}{data.draw(blank)}")
    scheme = data.draw(st.sampled_from(["X-Matrix", "x-matrix", "X-MATRIX"]))
    return f"{data.draw(blank)}{scheme} " + ",".join(out)


@FAST
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE"]),
       uri=st.from_regex(r"/_matrix/[A-Za-z0-9%/._~!$&'()*+;=:@?-]{0,60}", fullmatch=True),
       origin=server_names, destination=server_names, key=signing_keys,
       content=st.one_of(st.none(), canonical_values), data=st.data())
def test_sign_request_round_trips(method, uri, origin, destination, key, content, data):
    header = sign_request(method, uri, origin, destination, key, content)
    sig = header.rsplit('sig="', 1)[1].rstrip('"')
    expected = {"origin": origin, "destination": destination, "key": key.key_id, "sig": sig}
    assert parse_authorization(header) == expected
    assert parse_authorization(header.encode("latin-1")) == expected
    assert parse_authorization(_relaxed(header, data)) == expected
    assert verify_request(method, uri, origin, destination, content, key.key_id, sig, key.verify_key)
    # ...and only that request: another destination or URI does not verify
    assert not verify_request(method, uri + "x", origin, destination, content, key.key_id, sig,
                              key.verify_key)
    assert not verify_request(method, uri, origin, destination + "x", content, key.key_id, sig,
                              key.verify_key)


@FAST
@given(content=json_like, origin=server_names, key=signing_keys)
def test_verify_request_never_raises_on_any_content(content, origin, key):
    """Lenient verification (non-canonical content) returns a bool for any content."""
    sig = encode_base64(key.sign(b"something else"))
    assert verify_request("PUT", "/x", origin, "ours.test", content, key.key_id, sig,
                          key.verify_key) is False


# --------------------------------------------------------------------------- event format

@st.composite
def built_events(draw):
    """(event, room version, key, server name): a valid signed event from build_event."""
    version = draw(st.sampled_from(VERSIONS))
    rv = get_room_version(version)
    server = draw(server_names)
    key = draw(signing_keys)
    sender = f"@{draw(localparts)}:{server}"
    etype = draw(st.one_of(event_types, st.just("m.room.create")))
    if etype == "m.room.create" and rv.room_id_is_create_id:
        room_id = None
    elif rv.room_id_is_create_id:
        room_id = "!" + draw(opaque)
    else:
        room_id = f"!{draw(localparts)}:{draw(server_names)}"
    state_key = draw(st.one_of(st.none(), st.just(""), localparts))
    content = draw(st.dictionaries(st.text(max_size=10), canonical_values, max_size=4))
    prev = [{"event_id": "$" + draw(opaque), "depth": draw(st.integers(0, MAX - 1))}
            for _ in range(draw(st.integers(0, 3)))]
    ev = build_event(rv=rv, server_name=server, key=key, room_id=room_id, sender=sender,
                     type=etype, content=content, state_key=state_key, prev=prev, state={})
    return ev, rv, key, server


@FAST
@given(built_events())
def test_built_events_are_valid(built):
    ev, rv, key, server = built
    assume(len(json.dumps(ev)) < 60000)
    validate_event_format(ev, rv)
    assert compute_event_id(ev, rv) == ev["event_id"]
    on_the_wire = {k: v for k, v in ev.items() if k != "event_id"}   # what was hashed and is sent
    assert check_content_hash(on_the_wire)
    assert verify_event_signature(ev, rv, server, {key.key_id: key.verify_key})


@FAST
@given(st.one_of(json_like, event_like), st.sampled_from(VERSIONS))
def test_validate_arbitrary_values_only_raises_event_format_error(value, version):
    try:
        validate_event_format(value, get_room_version(version))
    except EventFormatError:
        pass


REQUIRED = ["type", "sender", "origin_server_ts", "content", "depth", "prev_events",
            "auth_events", "hashes", "signatures"]


def _content(ev: dict) -> dict:
    if not isinstance(ev.get("content"), dict):
        ev["content"] = {}
    return ev["content"]


@st.composite
def mutations(draw, ev: dict, rv, wire: bool = False) -> tuple[dict, bool]:
    """One mutation of an event, in place: (the event, whether it must now be refused).
    `wire`: only what JSON can carry (no lone surrogates, NaN, or nesting beyond parsers)."""
    values, floats, keys = (wire_json, finite, wire_text) if wire else (json_like, st.floats(), any_text)
    kind = draw(st.sampled_from([
        "drop", "retype", "any_key", "content", "hashes", "signatures", "lists", "long_id",
        "number", "oversize", "depth", "room_id", "deep", "event_id"] + ["surrogate"] * (not wire)))
    if kind == "drop":
        k = draw(st.sampled_from(REQUIRED))
        ev.pop(k, None)
        return ev, True
    if kind == "retype":     # a required field (or state_key, event_id) of the wrong type
        k = draw(st.sampled_from(REQUIRED + ["state_key", "event_id"]))
        wrong = {"type": st.one_of(st.integers(), st.none(), st.lists(st.text(), max_size=1)),
                 "sender": st.one_of(st.integers(), st.just("no-at-sign"), st.just("@x"),
                                     st.just("@:server"), st.just("@a:bad server")),
                 "origin_server_ts": st.one_of(floats, st.text(max_size=3), st.booleans(), st.none()),
                 "content": st.one_of(st.lists(st.none(), max_size=1), st.text(max_size=3), st.none()),
                 "depth": st.one_of(st.integers(max_value=-1), floats, st.booleans(), st.text(max_size=2)),
                 "prev_events": st.one_of(st.dictionaries(st.text(max_size=2), st.none(), max_size=1),
                                          st.lists(st.integers(), min_size=1, max_size=2)),
                 "auth_events": st.one_of(st.text(max_size=2), st.lists(st.none(), min_size=1, max_size=2)),
                 "hashes": st.one_of(st.just({}), st.just({"sha256": 1}), st.lists(st.none(), max_size=1)),
                 "signatures": st.one_of(st.lists(st.none(), max_size=1), st.text(max_size=2), st.none()),
                 "state_key": st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=2), max_size=1)),
                 "event_id": st.one_of(huge_ints, st.integers(-MAX, MAX), floats, st.none(),
                                       st.just({"$": 1}), st.lists(wire_text, max_size=1)),
                 }[k]
        ev[k] = draw(wrong)
        return ev, True
    if kind == "any_key":
        ev[draw(st.one_of(st.sampled_from(EVENT_KEYS), keys))] = draw(values)
        return ev, False
    if kind in ("content", "hashes", "signatures"):
        if not isinstance(ev.get(kind), dict):
            ev[kind] = {}
        ev[kind][draw(st.one_of(st.sampled_from(["body", "sha256", "membership", "ed25519:a"]), keys))] = \
            draw(values)
        return ev, False
    if kind == "lists":      # too many (or odd) prev/auth events
        k, limit = draw(st.sampled_from([("prev_events", 20), ("auth_events", 10)]))
        n = draw(st.integers(0, 2 * limit + 5))
        ev[k] = ["$" + draw(opaque) for _ in range(n)]
        return ev, n > limit
    if kind == "long_id":    # an identifier over 255 bytes
        k = draw(st.sampled_from(["type", "sender", "state_key", "room_id"]))
        pad = "x" * draw(st.integers(256, 400))
        ev[k] = {"sender": f"@{pad}:s.test", "room_id": f"!{pad}:s.test"}.get(k, pad)
        return ev, True
    if kind == "surrogate":  # a lone surrogate somewhere: never valid Unicode
        s = draw(st.text(max_size=3)) + draw(surrogate)
        where = draw(st.sampled_from(["content", "type", "state_key", "key"]))
        if where == "content":
            _content(ev)["body"] = s
        elif where == "key":
            _content(ev)[s] = 1
        else:
            ev[where] = s
        return ev, True
    if kind == "number":     # a float or out-of-range integer anywhere
        bad = draw(st.one_of(floats, huge_ints))
        where = draw(st.sampled_from(["content", "nested", "origin_server_ts", "unsigned"]))
        if where == "content":
            _content(ev)["n"] = bad
        elif where == "nested":
            _content(ev)["a"] = [{"b": [bad]}]
        elif where == "unsigned":
            ev["unsigned"] = {"age": bad}
        else:
            ev["origin_server_ts"] = bad
        return ev, True
    if kind == "oversize":
        _content(ev)["pad"] = "x" * draw(st.integers(65536, 70000))
        return ev, True
    if kind == "deep":        # n arrays in content: the deepest is at level n + 2
        n = draw(st.one_of(st.integers(MAX_NESTING - 5, MAX_NESTING + 5), st.integers(1, 300),
                           *([] if wire else [st.integers(900, 1200), st.integers(20_000, 30_000)])))
        deep: object = 1
        for _ in range(n):
            deep = [deep]
        _content(ev)["deep"] = deep
        return ev, n + 2 > MAX_NESTING
    if kind == "event_id":   # never trusted, but carried along: a string or refused
        ev["event_id"] = draw(st.one_of(st.just("$" + draw(opaque)), wire_text, huge_ints, floats,
                                        st.none(), st.lists(wire_text, max_size=2)))
        return ev, not isinstance(ev["event_id"], str)
    if kind == "depth":
        ev["depth"] = draw(st.one_of(st.integers(0, MAX), huge_ints))
        return ev, ev["depth"] > MAX
    # room_id
    if rv.room_id_is_create_id and ev.get("type") == "m.room.create":
        ev["room_id"] = draw(st.text(max_size=50))
        return ev, True
    ev["room_id"] = draw(st.one_of(st.text(max_size=50).filter(lambda s: not s.startswith("!")),
                                   st.integers(), st.none(), st.just("!nocolon"),
                                   st.just("$" + "A" * 43)))
    return ev, True


@FAST
@given(built_events(), st.data())
def test_validate_mutated_events_only_raises_event_format_error(built, data):
    ev, rv, _key, _server = built
    for _ in range(data.draw(st.integers(1, 3))):
        ev, must_fail = data.draw(mutations(ev, rv))
        try:
            validate_event_format(ev, rv)
        except EventFormatError:
            continue
        assert not must_fail, "a known-bad mutation was accepted"


# --------------------------------------------------------------------------- /send

FED = "/_matrix/federation"


@pytest.fixture(scope="module")
async def federation(world):
    """`world` and a client to ours' transport app, as theirs reaches it over the network
    (an exception in any app is answered 500, as a real server would)."""
    transport = httpx.ASGITransport(app=world.ours.transport_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=f"https://{world.ours.server_name}") as client:
        world.client = client
        yield world


def _authorization(fed: World, uri: str, content) -> str:
    return x_matrix(fed, "PUT", uri, content)


def _encode(body) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def _put_send(fed: World, txn_id: str, raw: bytes, content, auth: str | None = None):
    req = fed.client.build_request("PUT", f"{FED}/v1/send/{quote(txn_id, safe='')}", content=raw,
                                   headers={"content-type": "application/json"})
    uri = req.url.raw_path.decode("ascii")
    req.headers["authorization"] = auth if auth is not None else _authorization(fed, uri, content)
    return await fed.client.send(req)


def _check_answer(resp: httpx.Response) -> object:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:500]}"
    assert 200 <= resp.status_code < 300 or 400 <= resp.status_code < 500, resp.status_code
    body = resp.json()
    if resp.status_code >= 400:
        assert is_matrix_error(body), body
    else:
        assert isinstance(body, dict) and isinstance(body.get("pdus"), dict), body
        for entry in body["pdus"].values():
            assert entry == {} or (set(entry) == {"error"} and isinstance(entry["error"], str)), entry
    return body


async def _assert_nothing_stored(fed: World, txn_id: str, event_ids) -> None:
    """After a 4xx: the txnId is free (an empty transaction under it is processed as new),
    and none of the PDUs we built is stored."""
    empty = {"origin": fed.origin, "origin_server_ts": int(time.time() * 1000), "pdus": []}
    retry = await _put_send(fed, txn_id, json.dumps(empty).encode(), empty)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {"pdus": {}}, "the refused transaction was stored"
    if event_ids:
        assert await fed.ours.tx.get_events(list(event_ids)) == {}


def _fresh_event(fed: World, room: Room, nonce: str) -> dict:
    prev = [e for e in room.events if e["state_key"] == fed.bob]      # bob's join
    ev = build_event(rv=room.rv, server_name=fed.origin, key=fed.key, room_id=room.room_id,
                     sender=fed.bob, type="m.room.message",
                     content={"msgtype": "m.text", "body": nonce}, state_key=None,
                     prev=prev, state=room.state)
    ev.pop("event_id")
    return ev


@st.composite
def pdu_lists(draw, fed: World):
    """A list of PDUs: junk, event-shaped junk, valid events of ours' rooms and mutated ones.
    Returns (pdus, built) where built lists (event, must_fail) for the events made here."""
    pdus, built = [], []
    for _ in range(draw(st.integers(0, 8))):
        what = draw(st.sampled_from(["junk", "shaped", "valid", "mutated", "mutated"]))
        if what == "junk":
            pdus.append(draw(wire_json))
        elif what == "shaped":
            pdus.append(draw(wire_event_like))
        else:
            room = draw(st.sampled_from(fed.rooms))
            ev, must_fail = _fresh_event(fed, room, uuid.uuid4().hex), False
            if what == "mutated":
                ev, must_fail = draw(mutations(ev, room.rv, wire=True))
            pdus.append(ev)
            built.append((ev, room, must_fail))
    if draw(st.integers(0, 9)) == 0:      # over the 50-PDU limit
        pdus = pdus + [pdus[0] if pdus else {}] * draw(st.integers(51, 60))
    return pdus, built


@st.composite
def transactions(draw, fed: World):
    """(body, built): a transaction, sometimes with parts missing or of the wrong type,
    too many PDUs or EDUs, or extra keys."""
    def sometimes(usual, odd):
        return draw(odd) if draw(st.integers(1, 6)) == 1 else usual

    pdus, built = draw(pdu_lists(fed))
    if draw(st.integers(1, 8)) == 1:
        pdus, built = draw(wire_json), []
    body = {"origin": sometimes(fed.origin, wire_json),
            "origin_server_ts": sometimes(int(time.time() * 1000), st.one_of(huge_ints, finite, wire_json)),
            "pdus": pdus}
    edus = draw(st.one_of(
        st.none(), st.none(), st.none(), st.just([]),
        st.lists(st.one_of(wire_json, st.fixed_dictionaries(
            {"edu_type": st.one_of(st.sampled_from(["m.typing", "m.receipt", "m.presence"]), wire_json),
             "content": wire_json})), max_size=4),
        wire_json, st.just([{"edu_type": "m.typing", "content": {}}] * 101)))
    if edus is not None:
        body["edus"] = edus
    if draw(st.integers(1, 8)) == 1:
        k = draw(st.sampled_from(["origin", "origin_server_ts", "pdus"]))
        del body[k]
        if k == "pdus":
            built = []
    body.update(draw(st.dictionaries(wire_text.filter(lambda k: k not in body), wire_json, max_size=2)))
    return body, built


def _txn_id(data) -> str:
    # (not "\n": starlette's path convertor does not match it, so the route is 404)
    prefix = data.draw(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"),
                               max_size=8))
    return prefix + uuid.uuid4().hex


@SEND
@given(data=st.data())
async def test_send_malformed_transactions(federation, data):
    fed = federation
    body, built = data.draw(st.one_of(transactions(fed), transactions(fed), transactions(fed),
                                      wire_json.map(lambda v: (v, []))))
    txn_id = _txn_id(data)
    resp = await _put_send(fed, txn_id, _encode(body), body)
    answer = _check_answer(resp)
    event(f"{resp.status_code} {answer.get('errcode', '')}")
    if resp.status_code == 200:
        entries = list(answer["pdus"].values())
        event(f"PDUs staged: {sum(1 for e in entries if not e) > 0}")
    expected: dict[str, list[bool]] = {}     # event ID -> must it be refused, per PDU
    known = {r.room_id: r.rv for r in fed.rooms}
    for ev, _room, must_fail in built:
        room_id = ev.get("room_id")
        if not isinstance(room_id, str):
            continue                         # no room: the PDU gets no entry
        try:
            event_id = compute_event_id(ev, known.get(room_id, get_room_version(DEFAULT_ROOM_VERSION)))
        except Exception:  # noqa: BLE001 - unhashable: no entry either
            continue
        expected.setdefault(event_id, []).append(must_fail or room_id not in known)
    if resp.status_code >= 400:
        await _assert_nothing_stored(fed, txn_id, list(expected))
        return
    for event_id, fails in expected.items():
        if len(fails) == 1:   # entries of PDUs sharing an ID overwrite each other
            assert event_id in answer["pdus"], event_id
            if fails[0]:
                assert "error" in answer["pdus"][event_id], "a known-bad PDU was staged"


@settings(SEND, max_examples=examples(60))
@given(raw=st.one_of(st.binary(max_size=300), any_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
                     st.sampled_from([b"", b"{", b"[]", b"null", b'{"pdus": NaN}', b'{"pdus": [1e400]}',
                                      b'{"pdus": [' + b"9" * 5000 + b"]}", b"[" * 10000 + b"]" * 10000,
                                      b'{"pdus": "\\ud800"}', b"\xef\xbb\xbf{}"])),
       data=st.data())
async def test_send_bodies_that_are_not_json(federation, raw, data):
    txn_id = _txn_id(data)
    # (signed for another request: such a body is refused before the signature is checked)
    resp = await _put_send(federation, txn_id, raw, None,
                           auth=_authorization(federation, "/x", None))
    _check_answer(resp)
    if resp.status_code >= 400:
        await _assert_nothing_stored(federation, txn_id, ())


@settings(SEND, max_examples=examples(100))
@given(header=st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=120),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=120).map(lambda s: "X-Matrix " + s),
    st.builds(lambda o, k, s: f'X-Matrix origin="{o}",key="{k}",sig="{s}"',
              st.one_of(st.just("theirs.test:8448"), server_names),
              st.one_of(st.just("ed25519:a_1"), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                                      exclude_characters='"\\'), max_size=20)),
              st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
                      max_size=90))),
       data=st.data())
async def test_send_arbitrary_authorization_is_refused(federation, header, data):
    fed = federation
    body = {"origin": fed.origin, "origin_server_ts": 1, "pdus": [_fresh_event(fed, fed.rooms[0], "x")]}
    txn_id = _txn_id(data)
    resp = await _put_send(fed, txn_id, json.dumps(body).encode(), body, auth=header)
    _check_answer(resp)
    assert resp.status_code in (400, 401), (resp.status_code, resp.text)
    await _assert_nothing_stored(fed, txn_id, ())
