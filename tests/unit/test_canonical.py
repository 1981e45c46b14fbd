"""Canonical JSON (spec §2) and strict body parsing."""
from __future__ import annotations

import enum
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.canonical import (BadJSON, CanonicalJSONError, canonical_json, check_canonical,
                              dumps, parse_json_body)

MAX = 2**53 - 1
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
MORE = settings(SETTINGS, max_examples=150)


def reference(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


# Characters that stress escaping and ordering: controls, DEL, line/paragraph separators,
# BOM, BMP private use / U+FFFF vs astral (sort differently in UTF-16 and code points).
TRICKY = ["\x00", "\x01", "\x08", "\t", "\n", "\x0b", "\x0c", "\r", "\x1f", " ", '"', "\\",
          "/", "\x7f", "\x80", "\u2028", "\u2029", "\ufeff", "\ue000", "\uffff", "\ufffd",
          "\U00010000", "\U0001f600", "\U0010ffff", "é", "e", "\u0301", "日"]
chars = st.one_of(st.sampled_from(TRICKY), st.characters(exclude_categories=["Cs"]))
texts = st.text(alphabet=chars, max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-MAX, MAX), texts,
                    st.sampled_from([MAX, -MAX, 0]))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(texts, inner, max_size=6)),
    max_leaves=30)


# --------------------------------------------------------------------------- canonical_json

@MORE
@given(json_values)
def test_canonical_matches_reference(value):
    assert canonical_json(value) == reference(value)


@SETTINGS
@given(st.dictionaries(texts, st.integers(0, 9), min_size=2, max_size=8))
def test_key_order_is_code_point_order(d):
    out = canonical_json(d)
    keys = list(json.loads(out))
    assert keys == sorted(d)  # Python str ordering is code point ordering
    assert out == reference(d)


@pytest.mark.parametrize("value,expected", [
    ({}, b"{}"),
    ({"one": 1, "two": "Two"}, b'{"one":1,"two":"Two"}'),
    ({"b": "2", "a": "1"}, b'{"a":"1","b":"2"}'),
    ({"auth": {"success": True, "mxid": "@john.doe:example.com", "profile": {
        "display_name": "John Doe", "three_pids": [
            {"medium": "email", "address": "john.doe@example.org"},
            {"medium": "msisdn", "address": "123456789"}]}}},
     b'{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",'
     b'"three_pids":[{"address":"john.doe@example.org","medium":"email"},'
     b'{"address":"123456789","medium":"msisdn"}]},"success":true}}'),
    ({"a": "日本語"}, '{"a":"日本語"}'.encode()),
    ({"本": 2, "日": 1}, '{"日":1,"本":2}'.encode()),
    ({"a": "\u65E5"}, '{"a":"日"}'.encode()),
    ({"a": None}, b'{"a":null}'),
    ({"a": -0}, b'{"a":0}'),
    ("\x00\x08\t\n\x0c\r\x1f\x7f", b'"\\u0000\\b\\t\\n\\f\\r\\u001f\x7f"'),
    ("\u2028\U0001f600", '"\u2028\U0001f600"'.encode()),
    ({"\uffff": 1, "\U00010000": 2}, '{"\uffff":1,"\U00010000":2}'.encode()),
    ([True, False, MAX, -MAX], b"[true,false,9007199254740991,-9007199254740991]"),
    ((1, "a"), b'[1,"a"]'),
])
def test_canonical_examples(value, expected):
    assert canonical_json(value) == expected


@pytest.mark.parametrize("bad", [
    1.0, {"a": 1.5}, [0.0], {"a": [{"b": float("nan")}]},
    2**53, -(2**53), {"a": 2**64}, [2**100],
    {1: "x"}, {None: 1}, {"a": {(1, 2): 1}},
    {"a": object()}, {"a": b"bytes"}, {"a": {1, 2}},
    "\ud800", {"\udc00": 1},
])
def test_canonical_rejects(bad):
    with pytest.raises(CanonicalJSONError):
        canonical_json(bad)


def test_canonical_rejects_cycles_and_deep_nesting():
    cyclic: dict = {}
    cyclic["a"] = cyclic
    with pytest.raises(CanonicalJSONError):
        canonical_json(cyclic)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(CanonicalJSONError):
        canonical_json(deep)


def test_canonical_fallback_paths_match_reference():
    class S(str):
        pass
    class E(enum.IntEnum):
        A = 3
    value = {S("b"): 1, "a": 2}  # orjson refuses str-subclass keys
    assert canonical_json(value) == b'{"a":2,"b":1}'
    value = {"e": E.A, "s": S("x"), "t": (1, [2])}  # subclasses as values
    assert canonical_json(value) == reference(value) == b'{"e":3,"s":"x","t":[1,[2]]}'
    with pytest.raises(CanonicalJSONError):
        canonical_json({"e": E.A, "big": type("I", (int,), {})(2**60)})
    nested: list = [1]
    for _ in range(300):  # deeper than orjson's limit, shallower than Python's
        nested = [nested]
    assert canonical_json(nested) == reference(nested)


@SETTINGS
@given(st.one_of(st.integers(min_value=MAX + 1), st.integers(max_value=-MAX - 1), st.floats()))
def test_check_canonical_rejects_numbers(n):
    with pytest.raises(CanonicalJSONError):
        check_canonical({"x": [n]})
    with pytest.raises(CanonicalJSONError):
        canonical_json({"x": [n]})


def test_check_canonical_accepts_bools_and_bounds():
    check_canonical({"t": True, "f": False, "n": None, "i": [MAX, -MAX, 0], "s": "x"})
    check_canonical(7)
    check_canonical("x")


def test_dumps_is_compact_json():
    assert json.loads(dumps({"a": [1, 1.5, "é"]})) == {"a": [1, 1.5, "é"]}
    assert b" " not in dumps({"a": [1, 2]})


# --------------------------------------------------------------------------- parse_json_body

@pytest.mark.parametrize("body", [
    b"", b"{", b"{'a':1}", b"NaN", b"[Infinity]", b'{"a":-Infinity}', b'"\\ud800"',
    b'"\\udc00\\ud800"', b'{"\\udfff":1}', b"\xff\xfe", b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}",
    b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b"[" + b"9" * 5000 + b"]",
    b"{} x", b"[1,]", b'"\x01"', b"\x0c{}",
])
def test_parse_not_json(body):
    with pytest.raises(BadJSON) as info:
        parse_json_body(body)
    assert info.value.errcode == "M_NOT_JSON"


def test_parse_overflowing_float_is_bad_json():
    with pytest.raises(BadJSON) as info:
        parse_json_body(b'{"a": 1e400}')
    assert info.value.errcode == "M_BAD_JSON"


@pytest.mark.parametrize("body,expected", [
    (b"{}", {}),
    (b' {"a" : [1, 2.5, null, true]} ', {"a": [1, 2.5, None, True]}),
    (b'"\\ud83d\\ude00"', "\U0001f600"),
    (b"18446744073709551615", 2**64 - 1),
    (b"[123456789012345678901234567890]", [123456789012345678901234567890]),
    (b"-9223372036854775809", -(2**63) - 1),
    (b'{"a":"1234567890123456789012","b":1}', {"a": "1234567890123456789012", "b": 1}),
    (b'{"a":1,"a":2}', {"a": 2}),
    (bytearray(b"[1]"), [1]),
    ('{"a":"é"}', {"a": "é"}),
])
def test_parse_accepts(body, expected):
    result = parse_json_body(body)
    assert result == expected
    assert type(result) is type(expected)


def test_parse_big_ints_exact_then_rejected_by_canonical_check():
    value = parse_json_body(b'{"n": 123456789012345678901234567890}')
    assert value["n"] == 123456789012345678901234567890
    with pytest.raises(CanonicalJSONError):
        check_canonical(value)


@MORE
@given(st.binary(max_size=64))
def test_parse_arbitrary_bytes_only_raises_badjson(data):
    try:
        parse_json_body(data)
    except BadJSON as exc:
        assert exc.errcode in ("M_NOT_JSON", "M_BAD_JSON")


json_with_floats = st.recursive(
    st.one_of(scalars, st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20)


@SETTINGS
@given(json_with_floats, st.data())
def test_parse_valid_json_same_as_json_loads(value, data):
    text = json.dumps(value, ensure_ascii=data.draw(st.booleans()))
    assert parse_json_body(text.encode("utf-8")) == json.loads(text)


@SETTINGS
@given(json_values, st.integers(0, 200), st.binary(min_size=1, max_size=4))
def test_parse_mutated_json_only_raises_badjson(value, pos, junk):
    data = bytearray(json.dumps(value).encode())
    pos = min(pos, len(data))
    data[pos:pos] = junk
    try:
        parse_json_body(bytes(data))
    except BadJSON as exc:
        assert exc.errcode in ("M_NOT_JSON", "M_BAD_JSON")


def test_badjson_carries_errcode_and_message():
    exc = BadJSON("M_BAD_JSON", "nope")
    assert isinstance(exc, ValueError)
    assert exc.errcode == "M_BAD_JSON" and str(exc) == "nope"


@given(st.binary(max_size=200) | st.text(alphabet="0123456789 x", max_size=60).map(str.encode))
def test_long_digit_scan_agrees_with_the_regex(data):
    """The fast digit-run scan that picks the exact parser finds exactly what \\d{19} finds."""
    import re
    from shared.canonical import _has_long_digits
    assert _has_long_digits(data) == bool(re.search(rb"[0-9]{19}", data))


@pytest.mark.parametrize("digits", [18, 19, 25])
def test_integers_near_64_bits_parse_exactly(digits):
    from shared.canonical import parse_json_body
    n = int("9" * digits)
    assert parse_json_body(b'{"a": [%d, -%d]}' % (n, n)) == {"a": [n, -n]}
