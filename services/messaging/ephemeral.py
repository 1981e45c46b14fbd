"""Outbound ephemeral traffic of the domain API: typing, receipts, presence, to-device.

Each call builds the EDU(s) and queues them in the transaction service's per-destination
outbox (`queue_edus`: durable, batched at most 100 EDUs per transaction, with the same
backoff as events), one call for all destinations (all queued or none).

Invariants:
- Only our own users speak (403 M_FORBIDDEN otherwise); typing and receipts only for a
  user joined to the room (403), and they go to every other server with joined members;
  presence goes to every server sharing a room with the user (pdu knows the rooms).
- A private receipt (`m.read.private`) is never queued anywhere.
- To-device: one m.direct_to_device EDU per destination server, holding only that
  server's users; our own users' messages are not queued (the homeserver has them).
"""
from __future__ import annotations

import secrets
import time

from shared.errors import MatrixError
from shared.events import server_of


def _now_ms() -> int:
    return int(time.time() * 1000)


class Ephemeral:
    def __init__(self, pdu, tx, server_name: str):
        self.pdu = pdu
        self.tx = tx
        self.server_name = server_name

    def _require_local(self, user_id: str) -> None:
        if not (user_id.startswith("@") and ":" in user_id and server_of(user_id) == self.server_name):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not a user of {self.server_name}")

    async def _room_destinations(self, room_id: str, user_id: str) -> list[str]:
        self._require_local(user_id)
        found = await self.pdu.room_servers_for(room_id, user_id)
        if not found.get("user_joined"):
            raise MatrixError(403, "M_FORBIDDEN", f"{user_id} is not joined to {room_id}")
        return [s for s in found["servers"] if s != self.server_name]

    async def _queue(self, destinations, edu_type: str, content: dict) -> list[str]:
        dests = sorted(set(destinations) - {self.server_name})
        if dests:
            await self.tx.queue_edus([{"destination": d, "edu_type": edu_type, "content": content}
                                      for d in dests])
        return dests

    async def typing(self, room_id: str, user_id: str, typing: bool) -> list[str]:
        dests = await self._room_destinations(room_id, user_id)
        return await self._queue(dests, "m.typing",
                                 {"room_id": room_id, "user_id": user_id, "typing": typing})

    async def receipt(self, room_id: str, user_id: str, event_id: str, receipt_type: str,
                      thread_id: str | None) -> list[str]:
        dests = await self._room_destinations(room_id, user_id)
        if receipt_type == "m.read.private":
            return []
        data = {"ts": _now_ms()}
        if thread_id is not None:
            data["thread_id"] = thread_id
        content = {room_id: {receipt_type: {user_id: {"event_ids": [event_id], "data": data}}}}
        return await self._queue(dests, "m.receipt", content)

    async def presence(self, user_id: str, presence: str, status_msg: str | None) -> list[str]:
        self._require_local(user_id)
        entry = {"user_id": user_id, "presence": presence, "last_active_ago": 0,
                 "currently_active": presence == "online"}
        if status_msg is not None:
            entry["status_msg"] = status_msg
        return await self._queue(await self.pdu.user_servers(user_id), "m.presence",
                                 {"push": [entry]})

    async def to_device(self, sender: str, type_: str, message_id: str | None,
                        messages: dict) -> tuple[list[str], str]:
        self._require_local(sender)
        message_id = message_id or secrets.token_urlsafe(12)
        by_server: dict[str, dict] = {}
        for user_id, by_device in messages.items():
            if not (user_id.startswith("@") and ":" in user_id):
                raise MatrixError(400, "M_INVALID_PARAM", f"not a user ID: {user_id[:100]}")
            by_server.setdefault(server_of(user_id), {})[user_id] = by_device
        by_server.pop(self.server_name, None)
        if by_server:
            await self.tx.queue_edus([
                {"destination": d, "edu_type": "m.direct_to_device",
                 "content": {"sender": sender, "type": type_, "message_id": message_id,
                             "messages": msgs}}
                for d, msgs in sorted(by_server.items())])
        return sorted(by_server), message_id
