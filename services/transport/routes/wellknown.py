"""`GET /.well-known/matrix/server`: how other servers find our federation API when our
server name is delegated (`delegate_to`, e.g. "matrix.example.org:443"; spec step 3 of
resolving server names, from the other side).

Invariants:
- With `delegate_to` set, the answer is `{"m.server": delegate_to}` with
  `Cache-Control: public, max-age=CACHE_S` (resolvers cache it; the spec caps them at
  48 h); without it, 404 M_NOT_FOUND, so resolvers go on to SRV and port 8448.
- `delegate_to` must be a server name (hostname[:port]): a bad one stops the app from
  being built, rather than publishing a delegation every resolver refuses.
- Unauthenticated, and served by the public listeners (HTTPS, and the plain-HTTP one a
  reverse proxy forwards to).
"""
from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from services.transport.servername import parse_server_name
from shared.canonical import dumps
from shared.errors import MatrixError

PATH = "/.well-known/matrix/server"
CACHE_S = 24 * 3600


def router(settings) -> APIRouter:
    delegate = settings.delegate_to
    if delegate:
        parse_server_name(delegate)          # InvalidServerName: refuse to start
    r = APIRouter()

    @r.get(PATH, tags=["discovery"])
    async def well_known_server():
        if not delegate:
            raise MatrixError(404, "M_NOT_FOUND", "this server is not delegated")
        return Response(dumps({"m.server": delegate}), media_type="application/json",
                        headers={"Cache-Control": f"public, max-age={CACHE_S}"})
    return r
