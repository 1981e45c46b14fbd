"""The domain API's ephemeral traffic: typing, receipts, presence, to-device (see
services/messaging/ephemeral.py for what goes where)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contracts import messaging as c

router = APIRouter(tags=["ephemeral"])


def _eph(request: Request):
    return request.app.state.svc.ephemeral


@router.post(c.TYPING, response_model=c.EphemeralResponse)
async def typing(room_id: str, body: c.TypingRequest, request: Request):
    return {"destinations": await _eph(request).typing(room_id, body.user_id, body.typing)}


@router.post(c.RECEIPTS, response_model=c.EphemeralResponse)
async def receipt(room_id: str, body: c.ReceiptRequest, request: Request):
    return {"destinations": await _eph(request).receipt(room_id, body.user_id, body.event_id,
                                                        body.receipt_type, body.thread_id)}


@router.put(c.PRESENCE, response_model=c.EphemeralResponse)
async def presence(user_id: str, body: c.PresenceRequest, request: Request):
    return {"destinations": await _eph(request).presence(user_id, body.presence, body.status_msg)}


@router.post(c.TO_DEVICE, response_model=c.EphemeralResponse)
async def to_device(body: c.ToDeviceRequest, request: Request):
    dests, message_id = await _eph(request).to_device(body.sender, body.type, body.message_id,
                                                      body.messages)
    return {"destinations": dests, "message_id": message_id}
