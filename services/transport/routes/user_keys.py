"""Federation device and key queries: `/user/devices/{userId}`, `/user/keys/query`,
`/user/keys/claim`. Authenticated (X-Matrix) and rate-limited like every other request,
then answered by the transaction service, which holds our users' devices and keys
(shared/contracts/devices.py); its answer is passed through as it is.

Invariant: a body that is not of the spec's shape is 400 M_BAD_JSON here, and nothing
is asked of the layers behind.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from shared.canonical import dumps
from shared.contracts import devices as c
from shared.errors import MatrixError
from shared.routing import body_doc, read_json

FED = "/_matrix/federation/v1"
router = APIRouter(tags=["federation"])


def _answer(status: int, body) -> Response:
    return Response(dumps(body if body is not None else {}), status_code=status,
                    media_type="application/json")


async def _authenticated(request: Request, body):
    svc = request.app.state.svc
    origin = await svc.authenticate(request, body)
    svc.origin_seen(origin)
    return svc


def _shape(model, body) -> dict:
    try:
        return model.model_validate(body).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise MatrixError(400, "M_BAD_JSON", f"invalid request: {where}: {first.get('msg', '')}")


@router.get(FED + "/user/devices/{user_id}", response_model=c.UserDevices)
async def user_devices(user_id: str, request: Request):
    svc = await _authenticated(request, None)
    return _answer(*await svc.transaction.user_devices(user_id))


@router.post(FED + "/user/keys/query", response_model=c.KeysQueryResponse,
             openapi_extra=body_doc(c.KeysQuery))
async def keys_query(request: Request):
    body = await read_json(request)
    svc = await _authenticated(request, body)
    wanted = _shape(c.KeysQuery, body)["device_keys"]
    return _answer(*await svc.transaction.query_keys(wanted))


@router.post(FED + "/user/keys/claim", response_model=c.KeysClaimResponse,
             openapi_extra=body_doc(c.KeysClaim))
async def keys_claim(request: Request):
    body = await read_json(request)
    svc = await _authenticated(request, body)
    wanted = _shape(c.KeysClaim, body)["one_time_keys"]
    return _answer(*await svc.transaction.claim_keys(wanted))
