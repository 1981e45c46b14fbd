"""Our users' devices and keys (see shared/contracts/devices.py and store_devices.py).

Invariants: only our own users' devices and keys are stored or answered for; every key
object is canonical JSON (it is signed), else 400 M_BAD_JSON before anything is stored.
"""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.transaction import store_devices as sd
from shared.canonical import CanonicalJSONError, check_canonical
from shared.contracts import devices as c
from shared.errors import MatrixError, json_response
from shared.events import server_of

router = APIRouter(tags=["devices"])


def _svc(request: Request):
    return request.app.state.svc


def _ours(request: Request, user_id: str) -> bool:
    return (user_id.startswith("@") and ":" in user_id
            and server_of(user_id) == _svc(request).settings.server_name)


def _require_ours(request: Request, user_id: str) -> None:
    if not _ours(request, user_id):
        raise MatrixError(400, "M_INVALID_PARAM", "not a user of this server")


def _canonical(value) -> None:
    try:
        check_canonical(value)
    except CanonicalJSONError as exc:
        raise MatrixError(400, "M_BAD_JSON", f"keys are not canonical JSON: {exc}")


async def _notify(request: Request, destinations) -> None:
    _svc(request).sender.notify(set(destinations))


@router.put(c.DEVICE, response_model=c.DeviceChange)
async def put_device(user_id: str, device_id: str, body: c.DeviceIn, request: Request):
    _require_ours(request, user_id)
    _canonical(body.keys)
    out = await _svc(request).db.run(sd.put_device, user_id, device_id, body.display_name,
                                     body.keys, body.destinations)
    await _notify(request, body.destinations)
    return out


@router.delete(c.DEVICE, response_model=c.DeviceChange)
async def delete_device(user_id: str, device_id: str, body: c.DeviceDelete, request: Request):
    _require_ours(request, user_id)
    out = await _svc(request).db.run(sd.delete_device, user_id, device_id, body.destinations)
    await _notify(request, body.destinations)
    return out


@router.put(c.CROSS_SIGNING)
async def put_cross_signing(user_id: str, body: c.CrossSigningIn, request: Request) -> dict:
    _require_ours(request, user_id)
    keys = {t: k for t, k in body.model_dump().items() if t in sd.CROSS_SIGNING and k is not None}
    _canonical(keys)
    await _svc(request).db.run(sd.put_cross_signing, user_id, keys, body.destinations)
    await _notify(request, body.destinations)
    return {}


@router.post(c.ONE_TIME_KEYS, response_model=c.OneTimeKeyCounts)
async def add_one_time_keys(user_id: str, device_id: str, body: c.OneTimeKeysIn, request: Request):
    _require_ours(request, user_id)
    _canonical(body.one_time_keys)
    return await _svc(request).db.run(sd.add_one_time_keys, user_id, device_id, body.one_time_keys)


@router.get(c.USER_DEVICES, response_model=c.UserDevices)
async def user_devices(user_id: str, request: Request):
    _require_ours(request, user_id)
    return json_response(await _svc(request).db.run(sd.user_devices, user_id))


@router.post(c.KEYS_QUERY, response_model=c.KeysQueryResponse)
async def query_keys(body: c.KeysQuery, request: Request):
    """Other servers' users are left out (we hold nothing of them)."""
    wanted = {u: d for u, d in body.device_keys.items() if _ours(request, u)}
    return json_response(await _svc(request).db.run(sd.query_keys, wanted))


@router.post(c.KEYS_CLAIM, response_model=c.KeysClaimResponse)
async def claim_keys(body: c.KeysClaim, request: Request):
    """Each key handed out is deleted in the same commit: never claimed twice."""
    wanted = {u: d for u, d in body.one_time_keys.items() if _ours(request, u)}
    return json_response(await _svc(request).db.run(sd.claim_keys, wanted))
