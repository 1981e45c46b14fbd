"""X-Matrix verification of inbound federation requests.

Invariant: a request reaches a handler only if one of its X-Matrix headers carries a valid
signature, by a current key of `origin` (one of its `verify_keys`, whose valid_until_ts has
not passed; old_verify_keys never authenticate requests), over {method, raw uri, origin,
destination, content} with destination = our server name. Otherwise 401 M_UNAUTHORIZED;
Authorization headers of other schemes count as absent; 400 M_UNAUTHORIZED when every
X-Matrix header is unparseable, as Synapse does. A key ID the cached keys of `origin` lack
makes the keystore fetch them again (at most once a minute per server): a rotated key
authenticates at once.
"""
from __future__ import annotations

import time

from shared.crypto import verify_key_from_base64
from shared.errors import MatrixError
from shared.xmatrix import XMatrixError, parse_authorization, verify_request


def raw_uri(scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    path = path.split(b"?", 1)[0]   # some servers' raw_path carries the query too
    qs = scope.get("query_string") or b""
    uri = path.decode("latin-1")
    return uri + ("?" + qs.decode("latin-1") if qs else "")


async def authenticate(scope, headers, content, server_name: str, keystore) -> str:
    """The verified origin of the request, or MatrixError."""
    values = [v for k, v in headers if k.lower() == "authorization"
              and v.lstrip(" \t")[:8].lower() == "x-matrix"]
    if not values:   # none, or only other schemes (Bearer, Basic...): not authenticated
        raise MatrixError(401, "M_UNAUTHORIZED", "Missing X-Matrix Authorization header")
    uri = raw_uri(scope)
    method = scope["method"]
    last_error = "no valid signature"
    parsed_any = False
    for value in values:
        try:
            auth = parse_authorization(value)
        except XMatrixError as exc:
            last_error = f"malformed Authorization header: {exc}"
            continue
        parsed_any = True
        dest = auth.get("destination")
        if dest is not None and dest != server_name:
            raise MatrixError(401, "M_UNAUTHORIZED", "Request was not meant for this server")
        keys = await keystore.get(auth["origin"], [auth["key"]])   # refetched if unknown
        b64 = (keys or {}).get("verify_keys", {}).get(auth["key"])
        if b64 is not None and keys["valid_until_ts"] < time.time() * 1000:
            last_error = f"key {auth['key']} of {auth['origin']} has expired"
            continue
        if b64 is None:
            last_error = f"unknown key {auth['key']} of {auth['origin']}"
            continue
        if verify_request(method, uri, auth["origin"], server_name, content, auth["key"],
                          auth["sig"], verify_key_from_base64(b64)):
            return auth["origin"]
        last_error = "invalid signature"
    if not parsed_any:
        raise MatrixError(400, "M_UNAUTHORIZED", last_error)
    raise MatrixError(401, "M_UNAUTHORIZED", last_error)
