"""The domain API's devices and keys (see services/messaging/devices.py)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contracts import messaging as c
from shared.errors import json_response

router = APIRouter(tags=["devices"])


def _devices(request: Request):
    return request.app.state.svc.devices


@router.put(c.DEVICE, response_model=c.DeviceChange)
async def put_device(user_id: str, device_id: str, body: c.DeviceRequest, request: Request):
    return await _devices(request).put_device(user_id, device_id, body.display_name, body.keys)


@router.delete(c.DEVICE, response_model=c.DeviceChange)
async def delete_device(user_id: str, device_id: str, request: Request):
    return await _devices(request).delete_device(user_id, device_id)


@router.put(c.CROSS_SIGNING)
async def put_cross_signing(user_id: str, body: c.CrossSigningRequest, request: Request) -> dict:
    return await _devices(request).put_cross_signing(user_id, body.model_dump())


@router.post(c.ONE_TIME_KEYS, response_model=c.OneTimeKeyCounts)
async def upload_one_time_keys(user_id: str, device_id: str, body: c.OneTimeKeysRequest,
                               request: Request):
    return await _devices(request).add_one_time_keys(user_id, device_id, body.one_time_keys)


@router.post(c.KEYS_QUERY, response_model=c.KeysQueryResponse)
async def query_keys(body: c.KeysQueryRequest, request: Request):
    """Device and cross-signing keys of any server's users; `failures` names the servers
    that did not answer."""
    return json_response(await _devices(request).query_keys(body.device_keys))


@router.post(c.KEYS_CLAIM, response_model=c.KeysClaimResponse)
async def claim_keys(body: c.KeysClaimRequest, request: Request):
    """One one-time key per (user, device) of the given algorithm; each key is handed out
    once only."""
    return json_response(await _devices(request).claim_keys(body.one_time_keys))
