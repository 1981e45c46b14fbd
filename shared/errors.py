"""Matrix-style errors and the handlers that turn every failure into `{errcode, error}`.

Invariant: no route of any service answers with a traceback or a non-JSON body. Unknown
paths are `404 M_UNRECOGNIZED`, wrong methods `405 M_UNRECOGNIZED`, body shape errors
`400 M_BAD_JSON`, a service of this homeserver that cannot be reached (`LayerUnavailable`)
`503 M_UNKNOWN`, and anything unexpected `500 M_UNKNOWN` (logged, not echoed).
"""
from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.canonical import dumps
from starlette.responses import Response

log = logging.getLogger("fedstack.errors")


class MatrixError(Exception):
    """An error with a Matrix errcode; `extra` fields are merged into the JSON body."""

    def __init__(self, status: int, errcode: str, error: str, **extra):
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def body(self) -> dict:
        return {"errcode": self.errcode, "error": self.error, **self.extra}


class LayerUnavailable(ConnectionError):
    """Another service of this homeserver did not answer an internal call: no replica
    accepted the connection, or the one that did gave no whole answer in time. Raised only
    by `shared.internal.InternalClient`, the one place internal calls are made.

    Every app answers it `503 M_UNKNOWN` ("try again later"; not 502, which our routes use
    for another homeserver's bad answer), with no internal address in the body. It stays
    an OSError (a ConnectionError), so loops that retry on infrastructure failures (the
    pdu relay, callback delivery) keep treating it as one."""

    def __init__(self, method: str, path: str, cause: BaseException):
        super().__init__(f"internal {method} {path.split('?')[0]}: "
                         f"{type(cause).__name__}: {cause}")


def _encode(body) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:   # nested deeper than orjson's 254 levels, or a huge int
        return dumps(body)


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(_encode(body), status_code=status, media_type="application/json",
                    headers=headers)


def error_response(status: int, errcode: str, error: str, **extra) -> Response:
    return json_response({"errcode": errcode, "error": error, **extra}, status)


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so every error leaves the app as a Matrix error body."""

    @app.exception_handler(MatrixError)
    async def _matrix(_req: Request, exc: MatrixError):
        headers = None
        if exc.status == 429 and "retry_after_ms" in exc.extra:
            headers = {"Retry-After": str(max(1, int(exc.extra["retry_after_ms"]) // 1000))}
        return json_response(exc.body(), exc.status, headers)

    @app.exception_handler(LayerUnavailable)
    async def _unavailable(req: Request, exc: LayerUnavailable):
        log.warning("%s %s: %s", req.method, req.url.path, exc)
        return error_response(503, "M_UNKNOWN", "a service of this homeserver is unavailable; "
                              "try again later")

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        errcode = "M_NOT_JSON" if first.get("type") == "json_invalid" else "M_BAD_JSON"
        return error_response(400, errcode, f"invalid request: {where}: {first.get('msg', '')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(404, "M_UNRECOGNIZED", "Unrecognized request")
        if exc.status_code == 405:
            return error_response(405, "M_UNRECOGNIZED", "Method not allowed")
        if exc.status_code == 413:
            return error_response(413, "M_TOO_LARGE", "Request body too large")
        return error_response(exc.status_code, "M_UNKNOWN", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(req: Request, exc: Exception):
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return error_response(500, "M_UNKNOWN", "Internal server error")
