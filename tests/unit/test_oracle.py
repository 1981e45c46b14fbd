"""matrix-org's own libraries as the oracle for shared/canonical.py and shared/crypto.py.

`canonicaljson` (2.x) and `signedjson` are what Synapse hashes and signs with. For generated
values these tests assert that our encoder gives byte-identical output wherever
`canonicaljson.encode_canonical_json` and we both accept, that we refuse whatever it refuses,
and that our signatures are the very bytes `signedjson` produces (Ed25519 is deterministic)
and verify both ways.

Where we legitimately differ, the difference is asserted exactly. canonicaljson 2.x is only
the stdlib encoder (sort_keys, compact, ensure_ascii=False, allow_nan=False), so it ACCEPTS
three things the spec's canonical JSON (integers only, in [-(2**53)+1, 2**53-1]) does not:
  1. finite floats, written as ``float.__repr__`` (``1.0``, ``-0.0``, ``1e+16``);
  2. integers of any size outside that range, written in full;
  3. object keys that are int / float / bool / None, turned into strings first
     (``"1"``, ``"1.5"``, ``"true"``, ``"null"``) -- mixed with str keys it fails to sort.
We refuse all three with CanonicalJSONError. Consequently signedjson signs such objects
and verifies them; we refuse to sign them, and refuse to verify them (not canonical = not
signed). Nesting depth is bounded by the interpreter's recursion limit for both; we never
accept a depth it refuses. One quirk of signedjson.sign_json: it drops an ``"unsigned": None``
member from the object it signs (it pops ``unsigned`` with default None and restores only
non-None values); we leave the object's members alone. The signature is the same.
"""
from __future__ import annotations

import copy
import decimal
import enum
import io
import sys
import uuid

import canonicaljson
import pytest
import signedjson.key
import signedjson.sign
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.canonical import CanonicalJSONError, canonical_json
from shared.crypto import SigningKey, encode_base64, sign_json, verify_json_signature

# The spec's range, written out here (not imported) so that the oracle does not lean on the
# code under test.
MAX_SAFE_INT, MIN_SAFE_INT = 2**53 - 1, -(2**53) + 1
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def theirs(value) -> bytes:
    return canonicaljson.encode_canonical_json(value)


def refused_by_theirs(value) -> bool:
    try:
        theirs(value)
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        return True
    return False


# ------------------------------------------------------------------------ strategies

# Escaping and ordering stress: every C0 control, DEL, C1, separators, BOM, the last BMP
# code points before/after the surrogate block, and non-BMP (UTF-16 order differs there).
TRICKY = [chr(c) for c in range(0x20)] + [
    " ", '"', "\\", "/", "\x7f", "\x80", "\x9f", "\u2028", "\u2029", "\ufeff", "\ud7ff",
    "\ue000", "\uffff", "\ufffd", "\U00010000", "\U0001f600", "\U000e0001", "\U0010ffff",
    "a", "é", "\u0301", "日"]
chars = st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=["Cs"]))
texts = st.text(alphabet=chars, max_size=10)
# Short keys from the tricky set make prefixes and near-collisions common (ordering).
keys = st.one_of(texts, st.text(alphabet=st.sampled_from(TRICKY), max_size=3))
BOUNDARY_INTS = [MAX_SAFE_INT, MIN_SAFE_INT, MAX_SAFE_INT - 1, MIN_SAFE_INT + 1, 0, -1, 1]
ints = st.one_of(st.integers(MIN_SAFE_INT, MAX_SAFE_INT), st.sampled_from(BOUNDARY_INTS))
scalars = st.one_of(st.none(), st.booleans(), ints, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25)


@st.composite
def embedded(draw, poisons):
    """(value, stand_in): a JSON value with a drawn poison at a drawn depth (maybe the
    root), amid generated siblings; stand_in is the same tree with the poison's stand-in."""
    value, stand_in = draw(poisons)
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            siblings = draw(st.lists(json_values, max_size=3))
            i = draw(st.integers(0, len(siblings)))
            value = siblings[:i] + [value] + siblings[i:]
            stand_in = siblings[:i] + [stand_in] + siblings[i:]
        else:
            siblings = draw(st.dictionaries(keys, json_values, max_size=3))
            k = draw(keys)
            value, stand_in = {**siblings, k: value}, {**siblings, k: stand_in}
    return value, stand_in


class Rendered:
    """Stand-in for a poison leaf: canonicaljson writes `text` where it stands."""

    def __init__(self, text: str):
        self.text = text
        self.token = "@@" + uuid.uuid4().hex  # a unique string our encoder can place


class Colour(enum.Enum):
    RED = "red"


# ---------------------------------------------------------------- canonical JSON: agree

@SETTINGS
@given(json_values)
def test_same_bytes_as_canonicaljson(value):
    assert canonical_json(value) == theirs(value)


@SETTINGS
@given(st.dictionaries(keys, ints, min_size=2, max_size=10))
def test_same_key_order_as_canonicaljson(d):
    assert canonical_json(d) == theirs(d)


@pytest.mark.parametrize("value", [
    {"\uffff": 1, "\U00010000": 2, "\ue000": 3, "\ud7ff": 4},  # UTF-16 order would differ
    {"".join(TRICKY): "".join(TRICKY)},
    [MAX_SAFE_INT, MIN_SAFE_INT, -0, True, False, None, "", [], {}, [[]], {"": {}}],
    {"a": {"b": {"c": {"d": [1, (2, 3), {"e": None}]}}}},
], ids=["astral-vs-bmp-order", "all-escapes", "boundaries", "nesting"])
def test_same_bytes_on_known_hard_cases(value):
    assert canonical_json(value) == theirs(value)


def test_same_bytes_for_subclasses_both_accept():
    class Str(str):
        pass

    class Level(enum.IntEnum):
        MOD = 50

    class Member(enum.StrEnum):
        JOIN = "join"

    value = {Str("k"): Str("v"), Member.JOIN: [Level.MOD, Member.JOIN], "t": (1, "x")}
    assert canonical_json(value) == theirs(value) == b'{"join":[50,"join"],"k":"v","t":[1,"x"]}'


# ----------------------------------------------------------- canonical JSON: both refuse

HARD_POISONS = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf")]),
    st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"]),           # lone surrogates
    st.sampled_from([b"x", bytearray(b"x"), {1, 2}, frozenset(), 1j, object(),
                     decimal.Decimal("1"), Colour.RED]),
    st.sampled_from([{"\ud800": 1}, {(1,): 1}, {frozenset(): 1}, {b"k": 1},
                     {1: "int key", "a": "str key"}, {None: 1, "a": 2}]),
).map(lambda p: (p, p))


@SETTINGS
@given(embedded(HARD_POISONS))
def test_both_refuse(pair):
    value, _ = pair
    assert refused_by_theirs(value)
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_both_refuse_cycles(kind):
    value: list | dict = [] if kind == "list" else {}
    if kind == "list":
        value.append([1, value])
    else:
        value["a"] = {"b": value}
    assert refused_by_theirs(value)
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)


def _nest(depth: int):
    v: object = 0
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


def _first_refused(encode, limit: int) -> int:
    """Smallest nesting depth in [1, limit] that `encode` refuses (limit + 1 if none)."""
    lo, hi = 1, limit + 1
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            encode(_nest(mid))
            lo = mid + 1
        except (CanonicalJSONError, TypeError, ValueError, RecursionError):
            hi = mid
    return lo


def test_nesting_depth_bounded_and_never_deeper_than_canonicaljson():
    assert canonical_json(_nest(200)) == theirs(_nest(200))
    limit = 4 * sys.getrecursionlimit()
    ours, other = _first_refused(canonical_json, limit), _first_refused(theirs, limit)
    assert 200 < ours <= other <= limit  # both bounded; we accept no depth it refuses


# ----------------------------------------------------- canonical JSON: we are stricter

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
FLOAT_POISONS = st.one_of(finite_floats, st.sampled_from([0.0, -0.0, 1.0, 1e16, 5e-324])).map(
    lambda f: (f, Rendered(repr(f))))
BIG_INTS = st.one_of(st.integers(min_value=MAX_SAFE_INT + 1), st.integers(max_value=MIN_SAFE_INT - 1),
                     st.sampled_from([2**53, -(2**53), 2**63, -(2**63) - 1, 2**64, 10**40]))
INT_POISONS = BIG_INTS.map(lambda n: (n, Rendered(str(n))))


def _json_key(k) -> str:
    """The string canonicaljson (the stdlib encoder) makes of a non-str scalar key."""
    if k is True or k is False or k is None:
        return {True: "true", False: "false", None: "null"}[k]
    return repr(k) if isinstance(k, float) else str(int(k))


# A one-member object with a non-str key; its stand-in has the key canonicaljson makes of it.
KEY_POISONS = st.tuples(st.one_of(st.integers(), finite_floats, st.booleans(), st.none()),
                        json_values).map(lambda kv: ({kv[0]: kv[1]}, {_json_key(kv[0]): kv[1]}))


def _expected_theirs(stand_in_tree) -> bytes:
    """canonicaljson's bytes: ours for the stand-in tree with the Rendered leaf's text
    written where its token is."""
    found: list[Rendered] = []

    def swap(v):
        if isinstance(v, Rendered):
            found.append(v)
            return v.token
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [swap(x) for x in v]
        return v

    out = canonical_json(swap(stand_in_tree))
    for r in found:
        token = f'"{r.token}"'.encode()
        assert out.count(token) == 1
        out = out.replace(token, r.text.encode())
    return out


@SETTINGS
@given(embedded(st.one_of(FLOAT_POISONS, INT_POISONS, KEY_POISONS)))
def test_we_refuse_exactly_what_canonicaljson_accepts_beyond_the_spec(pair):
    value, stand_in = pair
    with pytest.raises(CanonicalJSONError):
        canonical_json(value)
    assert theirs(value) == _expected_theirs(stand_in)


def test_the_three_differences_by_example():
    for value, their_bytes in [(1.0, b"1.0"), (-0.0, b"-0.0"), (2**53, b"9007199254740992"),
                               (-(2**53), b"-9007199254740992"), ({1: 2}, b'{"1":2}'),
                               ({1.5: 2}, b'{"1.5":2}'), ({True: 2}, b'{"true":2}'),
                               ({None: 2}, b'{"null":2}')]:
        assert theirs(value) == their_bytes
        with pytest.raises(CanonicalJSONError):
            canonical_json(value)


# ------------------------------------------------------------------------- signed JSON

seeds = st.binary(min_size=32, max_size=32)
versions = st.from_regex(r"[a-zA-Z0-9_]{1,8}", fullmatch=True)
names = st.sampled_from(["example.org", "matrix.org", "[::1]:8448", "日本.example"])
other_sigs = st.dictionaries(st.sampled_from(["other.example", "third.example"]),
                             st.dictionaries(st.sampled_from(["ed25519:x", "ed25519:0"]),
                                             texts, min_size=1, max_size=2), max_size=2)
unsigned_values = st.one_of(st.just(None), st.dictionaries(keys, json_values, max_size=3))


@st.composite
def signables(draw):
    obj = draw(st.dictionaries(keys, json_values, max_size=6))
    obj.pop("signatures", None)
    obj.pop("unsigned", None)
    sigs = draw(other_sigs)
    if sigs:
        obj["signatures"] = sigs
    if draw(st.booleans()):
        obj["unsigned"] = draw(unsigned_values)
    return obj


def _key_pair(seed: bytes, version: str):
    ours = SigningKey(seed, version)
    other = signedjson.key.decode_signing_key_base64("ed25519", version, encode_base64(seed))
    return ours, other, signedjson.key.get_verify_key(other)


def _verifies_theirs_way(obj, name, verify_key) -> bool:
    try:
        signedjson.sign.verify_signed_json(obj, name, verify_key)
    except signedjson.sign.SignatureVerifyException:
        return False
    return True


@SETTINGS
@given(signables(), names, seeds, versions)
def test_signatures_identical_and_verify_both_ways(obj, name, seed, version):
    ours_key, their_key, their_verify = _key_pair(seed, version)
    assert ours_key.public_key_base64 == signedjson.key.encode_verify_key_base64(their_verify)
    key_id = f"ed25519:{version}"

    mine = sign_json(copy.deepcopy(obj), name, ours_key)
    other = signedjson.sign.sign_json(copy.deepcopy(obj), name, their_key)
    assert mine["signatures"][name][key_id] == other["signatures"][name][key_id]
    # The whole signed objects agree, but for signedjson dropping "unsigned": None.
    assert other == {k: v for k, v in mine.items() if not (k == "unsigned" and v is None)}

    assert verify_json_signature(other, name, key_id, ours_key.public_key_base64)
    assert _verifies_theirs_way(mine, name, their_verify)
    # `unsigned` is outside the signature for both.
    mine["unsigned"], other["unsigned"] = {"age": 1}, {"age": 2}
    assert verify_json_signature(other, name, key_id, ours_key.public_key_base64)
    assert _verifies_theirs_way(mine, name, their_verify)


@SETTINGS
@given(signables(), names, seeds, versions, keys, scalars)
def test_both_reject_a_tampered_object(obj, name, seed, version, k, v):
    ours_key, their_key, their_verify = _key_pair(seed, version)
    key_id = f"ed25519:{version}"
    signed = sign_json(copy.deepcopy(obj), name, ours_key)
    if k in ("signatures", "unsigned") or (k in signed and signed[k] == v):
        k, v = "tampered", ["yes"] if signed.get("tampered") != ["yes"] else ["no"]
    signed[k] = v
    assert not verify_json_signature(signed, name, key_id, ours_key.public_key_base64)
    assert not _verifies_theirs_way(signed, name, their_verify)


@SETTINGS
@given(embedded(st.one_of(FLOAT_POISONS, INT_POISONS)), seeds)
def test_signedjson_signs_beyond_the_spec_we_refuse_and_do_not_verify(pair, seed):
    value, _ = pair
    obj = {"content": value}
    ours_key, their_key, their_verify = _key_pair(seed, "a_1")
    other = signedjson.sign.sign_json(copy.deepcopy(obj), "example.org", their_key)
    assert _verifies_theirs_way(other, "example.org", their_verify)
    with pytest.raises(CanonicalJSONError):
        sign_json(copy.deepcopy(obj), "example.org", ours_key)
    assert not verify_json_signature(other, "example.org", "ed25519:a_1", ours_key.public_key_base64)


# ---------------------------------------------------------------------- keys and base64

@settings(max_examples=50, deadline=None)
@given(versions)
def test_generated_signedjson_key_is_ours_too(version):
    their_key = signedjson.key.generate_signing_key(version)
    seed_b64 = signedjson.key.encode_signing_key_base64(their_key)
    ours = SigningKey.from_seed(seed_b64, version)
    assert ours.seed == bytes(their_key)
    assert ours.sign(b"msg") == their_key.sign(b"msg").signature


@settings(max_examples=50, deadline=None)
@given(seeds, versions)
def test_key_file_lines_interchange(seed, version):
    ours = SigningKey(seed, version)
    (read,) = signedjson.key.read_signing_keys([ours.to_line()])
    assert (bytes(read), read.version, read.alg) == (seed, version, "ed25519")
    buf = io.StringIO()
    signedjson.key.write_signing_keys(buf, [read])
    assert buf.getvalue() == ours.to_line()
    assert SigningKey.from_line(buf.getvalue()).seed == seed
