"""X-Matrix request authentication (spec §4).

Invariants:
- The signed object is ``{method, uri, origin, destination[, content]}``; ``content`` is
  present iff the request has a body (never ``"content": {}`` for a GET).
- `sign_request` emits the strict sender form: ``X-Matrix origin="…",destination="…",
  key="…",sig="…"`` (lowercase names, quoted, no spaces after commas).
- `parse_authorization` is lenient as a receiver must be (case-insensitive scheme and
  names, any order, blanks around commas and '=', quoted or bare values, ``\\x`` → ``x``
  inside quotes, unknown parameters ignored; the first occurrence of a name wins) and
  raises XMatrixError unless origin (a valid server name), key and sig are all present.
- `verify_request` checks canonical content strictly; content that cannot be canonical
  (floats, integers beyond ±(2^53−1)) is checked against its sorted compact encoding, as
  Synapse signs it, so one bad value costs its PDU, not the whole transaction.
"""
from __future__ import annotations

import json

from shared.canonical import CanonicalJSONError, check_canonical
from shared.crypto import SigningKey, decode_base64, sign_json, verify_json_signature
from shared.events import is_valid_server_name

_SCHEME = "x-matrix"
_BLANKS = " \t"


class XMatrixError(ValueError):
    """A malformed or incomplete X-Matrix Authorization header."""


def request_signing_json(method, uri, origin, destination, content=None) -> dict:
    """The JSON object that is signed for a request (content only when not None)."""
    obj = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(method, uri, origin, destination, key: SigningKey, content=None) -> str:
    """The full Authorization header value for the request, signed with `key`."""
    signed = sign_json(request_signing_json(method, uri, origin, destination, content), origin, key)
    sig = signed["signatures"][origin][key.key_id]
    return (f'X-Matrix origin="{origin}",destination="{destination}",'
            f'key="{key.key_id}",sig="{sig}"')


# --------------------------------------------------------------------------- parsing

def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


def _quoted(s: str, i: int) -> tuple[str, int]:
    """Value of the quoted string opening at s[i] == '"'; index after the closing quote."""
    out = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            if i + 1 >= len(s):
                break
            out.append(s[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise XMatrixError("unterminated quoted value")


def _bare(s: str, i: int) -> tuple[str, int]:
    j = s.find(",", i)
    j = len(s) if j < 0 else j
    return s[i:j].strip(_BLANKS), j


def _params(s: str) -> dict[str, str]:
    """name -> value for a comma-separated parameter list (first occurrence wins)."""
    params: dict[str, str] = {}
    i = 0
    while True:
        i = _skip(s, i, _BLANKS + ",")
        if i >= len(s):
            return params
        eq = s.find("=", i)
        if eq < 0 or "," in s[i:eq]:
            raise XMatrixError("parameter without '='")
        name = s[i:eq].strip(_BLANKS).lower()
        if not name:
            raise XMatrixError("empty parameter name")
        i = _skip(s, eq + 1, _BLANKS)
        value, i = _quoted(s, i) if i < len(s) and s[i] == '"' else _bare(s, i)
        params.setdefault(name, value)
        i = _skip(s, i, _BLANKS)
        if i < len(s) and s[i] != ",":
            raise XMatrixError("junk after parameter value")


def parse_authorization(header_value: str) -> dict:
    """{origin, destination (or None), key, sig} from an ``X-Matrix …`` header value."""
    if isinstance(header_value, bytes):
        header_value = header_value.decode("latin-1")
    if not isinstance(header_value, str):
        raise XMatrixError("header is not a string")
    value = header_value.strip(_BLANKS)
    scheme, rest = value[:len(_SCHEME)], value[len(_SCHEME):]
    if scheme.lower() != _SCHEME or (rest and rest[0] not in _BLANKS):
        raise XMatrixError("not an X-Matrix Authorization header")
    params = _params(rest)
    for name in ("origin", "key", "sig"):
        if not params.get(name):
            raise XMatrixError(f"missing {name}")
    if not is_valid_server_name(params["origin"]):
        raise XMatrixError("origin is not a valid server name")
    return {"origin": params["origin"], "destination": params.get("destination"),
            "key": params["key"], "sig": params["sig"]}


def verify_request(method, uri, origin, destination, content, key_id, sig, verify_key) -> bool:
    """True iff `sig` by `key_id` signs the request object of §4. Never raises.

    Content that is not canonical JSON (a float or an out-of-range integer inside some
    PDU or EDU) is checked against the sorted compact encoding Synapse's signer writes for
    it, so that one bad value in one PDU costs that PDU (refused by its own checks), not
    the whole transaction. Only the check is lenient: what we sign is always canonical."""
    obj = request_signing_json(method, uri, origin, destination, content)
    obj["signatures"] = {origin: {key_id: sig}}
    if verify_json_signature(obj, origin, key_id, verify_key):
        return True
    try:
        check_canonical(content)
        return False           # canonical content: the strict check was the right one
    except CanonicalJSONError:
        pass
    try:
        raw = decode_base64(sig)
        if len(raw) != 64:
            return False
        message = json.dumps(request_signing_json(method, uri, origin, destination, content),
                             ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                             allow_nan=False).encode("utf-8")
        verify_key.verify(message, raw)
        return True
    except Exception:  # noqa: BLE001 - anything wrong = not signed
        return False
