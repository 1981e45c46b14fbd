"""Matrix canonical JSON (spec §2) and strict parsing of request bodies.

Invariants:
- `canonical_json(obj)` returns exactly the bytes of the reference encoding
  ``json.dumps(obj, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()``
  for every value it accepts, and accepts only JSON values made of dict (str keys), list,
  tuple, str, bool, None and integers in [-(2**53)+1, 2**53-1]. Anything else (floats, big
  ints, non-str keys, lone surrogates, cycles, other types) raises `CanonicalJSONError`.
  orjson is the fast path; it is byte-identical to the reference for the accepted values
  (same key order: UTF-8 byte order == code point order; same escapes: only ``"``, ``\\``
  and < U+0020, short forms ``\\b \\t \\n \\f \\r``, else lowercase ``\\u00xx``). Where orjson
  refuses (str-subclass keys, nesting > 255, lone surrogates) the reference encoder decides.
- `parse_json_body(data)` returns the value ``json.loads`` would return for a strict RFC 8259
  document, or raises `BadJSON`; it never raises anything else.
"""
from __future__ import annotations

import json
import math

import orjson

MAX_SAFE_INT = 2**53 - 1
MIN_SAFE_INT = -(2**53) + 1


class CanonicalJSONError(ValueError):
    """The value cannot be encoded as Matrix canonical JSON."""


class BadJSON(ValueError):
    """A request body that is not acceptable JSON; `errcode` is M_NOT_JSON or M_BAD_JSON."""

    def __init__(self, errcode: str, message: str):
        super().__init__(message)
        self.errcode = errcode
        self.message = message


# --------------------------------------------------------------------------- checking

def _bad_int(v: int) -> bool:
    return v > MAX_SAFE_INT or v < MIN_SAFE_INT


def _check_other(v) -> None:
    """Values whose type is not exactly one of the JSON builtins (subclasses, floats, ...)."""
    if isinstance(v, float):
        raise CanonicalJSONError("floats are not allowed in canonical JSON")
    if isinstance(v, bool) or isinstance(v, str) or v is None:
        return
    if isinstance(v, int):
        if _bad_int(v):
            raise CanonicalJSONError(f"integer out of range: {v}")
        return
    if isinstance(v, (dict, list, tuple)):
        _check_container(v)
        return
    raise CanonicalJSONError(f"type not allowed in canonical JSON: {type(v).__name__}")


def _check_container(c) -> None:
    """Recursive over containers only; scalars are checked inline for speed."""
    if isinstance(c, dict):
        for k in c:
            if type(k) is not str and not isinstance(k, str):
                raise CanonicalJSONError(f"object key is not a string: {k!r}")
        values = c.values()
    else:
        values = c
    for x in values:
        t = type(x)
        if t is str or t is bool or x is None:
            continue
        if t is int:
            if x > MAX_SAFE_INT or x < MIN_SAFE_INT:
                raise CanonicalJSONError(f"integer out of range: {x}")
            continue
        if t is dict or t is list:
            _check_container(x)
            continue
        _check_other(x)


def check_canonical(obj) -> None:
    """Raise CanonicalJSONError if `obj` holds a float, an out-of-range int, a non-str key,
    an unsupported type, or is nested too deeply / cyclic (anywhere, recursively)."""
    try:
        t = type(obj)
        if t is dict or t is list:
            _check_container(obj)
        elif t is int:
            if _bad_int(obj):
                raise CanonicalJSONError(f"integer out of range: {obj}")
        elif not (t is str or t is bool or obj is None):
            _check_other(obj)
    except RecursionError:
        raise CanonicalJSONError("JSON nested too deeply (or cyclic)") from None


# --------------------------------------------------------------------------- encoding

def _reference_dumps(obj) -> bytes:
    """The reference encoder from the spec (slow path)."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"),
                          sort_keys=True, allow_nan=False).encode("utf-8")
    except (ValueError, TypeError, RecursionError) as exc:  # incl. UnicodeEncodeError
        raise CanonicalJSONError(f"cannot encode as canonical JSON: {exc}") from None


def canonical_json(obj) -> bytes:
    """Matrix canonical JSON bytes of `obj` (see module invariants)."""
    check_canonical(obj)
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return _reference_dumps(obj)


def dumps(obj) -> bytes:
    """Fast compact non-canonical JSON for internal use (floats allowed, keys unsorted)."""
    try:
        return orjson.dumps(obj)
    except orjson.JSONEncodeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------------- parsing

# orjson silently turns integers outside the 64-bit range into floats; any integer token
# of 19+ digits might be one, so such documents take the exact (json module) path.
# Found by mapping every digit to "D" and everything else to " " and looking for 19 D's:
# 20x cheaper than the regex \d{19} (sre tries each digit position; a 30 KB /send body of
# 50 PDUs cost 1 ms, five times its orjson parse).
_DIGIT_MAP = bytes(0x44 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_DIGITS_19 = b"D" * 19


def _has_long_digits(data: bytes) -> bool:
    """True iff `data` holds a run of 19 or more ASCII digits."""
    return _DIGITS_19 in data.translate(_DIGIT_MAP)


class _NonFinite(Exception):
    pass


def _reject_constant(name: str):
    raise BadJSON("M_NOT_JSON", f"{name} is not valid JSON")


def _parse_float(s: str) -> float:
    f = float(s)
    if math.isinf(f):
        raise _NonFinite(s)
    return f


def _has_lone_surrogate(value) -> bool:
    """Iterative walk: True if any str (key or value) holds an unpaired surrogate."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def _slow_parse(data: bytes):
    """Exact parse with the json module, made strict; raises BadJSON only."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except BadJSON:
        raise
    except _NonFinite as exc:
        raise BadJSON("M_BAD_JSON", f"number out of range: {str(exc)[:40]}") from None
    except RecursionError:
        raise BadJSON("M_NOT_JSON", "JSON nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits
        raise BadJSON("M_NOT_JSON", f"Content not JSON: {str(exc)[:100]}") from None
    if _has_lone_surrogate(value):
        raise BadJSON("M_NOT_JSON", "Content not JSON: lone surrogate in string")
    return value


def parse_json_body(data: bytes) -> object:
    """Strictly parse a request body (any JSON value; floats allowed, the caller decides).

    M_NOT_JSON: not UTF-8, BOM, not JSON, NaN/Infinity/-Infinity, lone surrogate escapes,
    nesting too deep, integers with more digits than `int()` accepts.
    M_BAD_JSON: a number literal that overflows a double (e.g. ``1e400``).
    Integers beyond 64 bits are returned exactly as Python ints (like json.loads), so a
    caller's `check_canonical` rejects them just as any other out-of-range int.
    Never raises anything but BadJSON.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJSON("M_NOT_JSON", "Content not JSON: lone surrogate") from None
    elif isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise BadJSON("M_NOT_JSON", "Content not JSON: body is not bytes")
    if not _has_long_digits(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # let the exact parser classify (and decide) the document
    return _slow_parse(data)
