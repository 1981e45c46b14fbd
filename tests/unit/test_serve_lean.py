"""shared.routing.serve_lean: hot routes served as plain Starlette routes behave and are
documented exactly as the FastAPI routes they were declared as."""
from __future__ import annotations

import httpx
import pytest
from fastapi import Query, Request
from pydantic import BaseModel

from shared.errors import MatrixError
from shared.internal import SECRET_HEADER
from shared.routing import BodyLimitMiddleware, new_app, serve_lean

SECRET = "s3cret"


class Body(BaseModel):
    sender: str
    n: int = 0


class Answer(BaseModel):
    event_id: str


def _app(lean: bool):
    app = new_app("lean-test", SECRET)
    app.add_middleware(BodyLimitMiddleware, max_bytes=1000)

    @app.post("/_internal/t/v1/rooms/{room_id}/send/{txn_id:text}", response_model=Answer)
    async def send(room_id: str, txn_id: str, body: Body, request: Request):
        if body.sender == "@refused:x":
            raise MatrixError(403, "M_FORBIDDEN", "not you")
        return {"event_id": f"{room_id}|{txn_id}|{body.n}", "dropped": "not in Answer"}

    @app.post("/_internal/t/v1/raw")
    async def raw(request: Request):
        body = await request.body()
        if body == b"crash":
            raise RuntimeError("a bug")
        return {"len": len(body), "big": 2 ** 70}

    @app.get("/_internal/t/v1/query")
    async def query(request: Request, limit: int = Query(10, ge=1), room_id: str | None = None):
        return {"limit": limit, "room_id": room_id}

    @app.get("/_internal/t/v1/many")
    async def many(request: Request, v: list[str] = Query(...)):
        return {"v": v}

    if lean:
        serve_lean(app, send, raw, query)
    return app, many


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                             base_url="http://t",
                             headers={SECRET_HEADER: SECRET})


@pytest.mark.parametrize("lean", [False, True])
async def test_lean_route_answers_as_the_fastapi_route(lean):
    app, _ = _app(lean)
    served_lean = [r.path for r in getattr(app.build_middleware_stack(), "routes", [])]
    assert served_lean == (["/_internal/t/v1/rooms/{room_id}/send/{txn_id:text}",
                            "/_internal/t/v1/raw", "/_internal/t/v1/query"] if lean else [])
    async with _client(app) as c:
        r = await c.post("/_internal/t/v1/rooms/%21r%3Ax/send/a%2Fb%0Ac", json={"sender": "@a:x", "n": 7})
        assert r.status_code == 200 and r.json() == {"event_id": "!r:x|a/b\nc|7"}
        r = await c.post("/_internal/t/v1/rooms/r/send/t", json={"sender": 5})
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
        assert "body.sender" in r.json()["error"]
        r = await c.post("/_internal/t/v1/rooms/r/send/t", json={"n": 1})
        assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
        r = await c.post("/_internal/t/v1/rooms/r/send/t", content=b"{not json",
                         headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"
        r = await c.post("/_internal/t/v1/rooms/r/send/t", json={"sender": "@refused:x"})
        assert r.status_code == 403 and r.json() == {"errcode": "M_FORBIDDEN", "error": "not you"}
        r = await c.post("/_internal/t/v1/raw", content=b"abc")
        assert r.status_code == 200 and r.content == b'{"len":3,"big":1180591620717411303424}'
        r = await c.post("/_internal/t/v1/raw", content=b"crash")
        assert r.status_code == 500 and r.json() == {"errcode": "M_UNKNOWN",
                                                     "error": "Internal server error"}
        r = await c.post("/_internal/t/v1/raw", content=b"x" * 1001)
        assert r.status_code == 413 and r.json()["errcode"] == "M_TOO_LARGE"
        r = await c.get("/_internal/t/v1/query")
        assert r.status_code == 200 and r.json() == {"limit": 10, "room_id": None}
        r = await c.get("/_internal/t/v1/query?limit=3&room_id=%21r&limit=4")
        assert r.status_code == 200 and r.json() == {"limit": 4, "room_id": "!r"}
        for bad in ("0", "x", "1.5"):
            r = await c.get("/_internal/t/v1/query", params={"limit": bad})
            assert r.status_code == 400 and r.json()["errcode"] == "M_BAD_JSON"
            assert "query.limit" in r.json()["error"]
        r = await c.get("/_internal/t/v1/rooms/r/send/t")
        assert r.status_code == 405 and r.json()["errcode"] == "M_UNRECOGNIZED"
        r = await c.post("/_internal/t/v1/raw", content=b"abc", headers={SECRET_HEADER: "wrong"})
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"


async def test_openapi_document_is_unchanged_by_serving_lean():
    declared, _ = _app(False)
    lean, _ = _app(True)
    assert lean.openapi() == declared.openapi()
    op = lean.openapi()["paths"]["/_internal/t/v1/rooms/{room_id}/send/{txn_id}"]["post"]
    assert {p["name"] for p in op["parameters"]} == {"room_id", "txn_id"}
    assert "requestBody" in op
    async with _client(lean) as c:
        assert (await c.get("/openapi.json")).json() == declared.openapi()


def test_routes_fastapi_must_parse_are_refused():
    app, many = _app(False)
    with pytest.raises(ValueError, match="lean"):
        serve_lean(app, many)

    async def stranger(request: Request):
        return {}
    with pytest.raises(ValueError, match="stranger"):
        serve_lean(app, stranger)
