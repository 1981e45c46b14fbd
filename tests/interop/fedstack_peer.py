"""The fedstack side of the interop tests: one homeserver as real processes (as `fedstack up`
starts them), driven through its messaging API, plus helpers that look at the Synapse peer.

Network rule: everything binds and talks to 127.0.0.1 only.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import httpx

from tests.interop.synapse_peer import SynapseAPIError, SynapsePeer
from tests.processes import CallbackServer, api_headers, api_url, start_homeserver


class FedstackPeer:
    def __init__(self, hs, callbacks: CallbackServer):
        self.hs = hs
        self.callbacks = callbacks
        self.server_name: str = hs.settings.server_name
        self.url = api_url(hs)
        self._http = httpx.Client(timeout=60, trust_env=False, headers=api_headers(hs))

    @classmethod
    def start(cls, data_dir: Path, callbacks: CallbackServer) -> "FedstackPeer":
        return cls(start_homeserver(data_dir), callbacks)

    def stop(self) -> None:
        self.hs.stop()

    def restart_all(self) -> None:
        self.hs.start()

    # -- messaging API -------------------------------------------------------------------
    def api(self, method: str, path: str, expect: int = 200, **kw):
        resp = self._http.request(method, self.url + path, **kw)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def create_room(self, creator: str, version: str = "12", preset: str = "public_chat",
                    name: str | None = None) -> str:
        body = {"creator": creator, "room_version": version, "preset": preset}
        if name:
            body["name"] = name
        return self.api("POST", "/v1/rooms", json=body)["room_id"]

    def join(self, room_id: str, user_id: str, servers: list[str]) -> str:
        return self.api("POST", f"/v1/rooms/{room_id}/join",
                        json={"user_id": user_id, "servers": servers})["event_id"]

    def invite(self, room_id: str, sender: str, user_id: str) -> str:
        return self.api("POST", f"/v1/rooms/{room_id}/invite",
                        json={"sender": sender, "user_id": user_id})["event_id"]

    def leave(self, room_id: str, user_id: str) -> str:
        return self.api("POST", f"/v1/rooms/{room_id}/leave", json={"user_id": user_id})["event_id"]

    def send(self, room_id: str, sender: str, body: str, txn_id: str | None = None) -> str:
        payload = {"sender": sender, "type": "m.room.message",
                   "content": {"msgtype": "m.text", "body": body}}
        if txn_id:
            payload["txn_id"] = txn_id
        return self.api("POST", f"/v1/rooms/{room_id}/events", json=payload)["event_id"]

    def set_state(self, room_id: str, sender: str, type_: str, content: dict,
                  state_key: str = "") -> str:
        return self.api("POST", f"/v1/rooms/{room_id}/events",
                        json={"sender": sender, "type": type_, "content": content,
                              "state_key": state_key})["event_id"]

    def state(self, room_id: str) -> dict[tuple[str, str], dict]:
        st = self.api("GET", f"/v1/rooms/{room_id}/state")["state"]
        return {(e["type"], e["state_key"]): e for e in st}

    def subscribe(self, room_id: str, types=("m.room.message",)) -> str:
        body = {"url": self.callbacks.url, "room_id": room_id}
        if types is not None:
            body["types"] = list(types)
        return self.api("POST", "/v1/subscriptions", json=body)["subscription_id"]

    def delivered(self, sid: str) -> list[dict]:
        return self.callbacks.events(sid)

    def wait_delivered(self, sid: str, predicate: Callable[[list[dict]], bool],
                       timeout: float = 30.0) -> list[dict]:
        return self.callbacks.wait_for(sid, predicate, timeout)

    def wait_state(self, room_id: str, predicate: Callable[[dict], bool], timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.state(room_id)
                if predicate(st):
                    return st
            except AssertionError:
                st = None
            if time.monotonic() > deadline:
                raise AssertionError(f"state of {room_id} never matched: {sorted(st or {})}")
            time.sleep(0.1)


def bodies(events: list[dict]) -> list[str]:
    return [e["content"]["body"] for e in events
            if e.get("type") == "m.room.message" and "body" in e.get("content", {})]


def membership(state: dict, user_id: str) -> str | None:
    ev = state.get(("m.room.member", user_id))
    return ev["content"].get("membership") if ev else None


# -- the Synapse side --------------------------------------------------------------------

def synapse_user(synapse: SynapsePeer, localpart: str) -> tuple[str, str]:
    """(user_id, access token) of a Synapse user, registered on first use."""
    if localpart not in synapse.users:
        synapse.register_user(localpart)
    return synapse.users[localpart]["user_id"], synapse.users[localpart]["access_token"]


def synapse_timeline(synapse: SynapsePeer, token: str, room_id: str, limit: int = 1000) -> list[dict]:
    """The room's events as the Synapse user pages back through them, oldest first."""
    out: list[dict] = []
    frm = None
    while len(out) < limit:
        page = synapse.messages(token, room_id, dir="b", limit=min(500, limit - len(out)), from_=frm)
        chunk = page.get("chunk", [])
        out.extend(chunk)
        if not chunk or not page.get("end"):
            break
        frm = page["end"]
    out.reverse()
    return out


def wait_synapse_bodies(synapse: SynapsePeer, token: str, room_id: str,
                        predicate: Callable[[list[str]], bool], timeout: float = 30.0) -> list[str]:
    """Poll the Synapse user's view (paging back) until `predicate(bodies)` holds."""
    deadline = time.monotonic() + timeout
    got: list[str] = []
    last_err = None
    delay = 0.1
    while True:
        try:
            got = bodies(synapse_timeline(synapse, token, room_id))
            if predicate(got):
                return got
        except (SynapseAPIError, httpx.HTTPError) as exc:
            last_err = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"Synapse view of {room_id} never matched ({len(got)} bodies, "
                                 f"last {got[-5:]}, error {last_err})")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def synapse_state(synapse: SynapsePeer, token: str, room_id: str) -> dict[tuple[str, str], dict]:
    return {(e["type"], e["state_key"]): e for e in synapse.get_state(token, room_id)}


def wait_synapse_state(synapse: SynapsePeer, token: str, room_id: str,
                       predicate: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    last_err = None
    while True:
        try:
            st = synapse_state(synapse, token, room_id)
            if predicate(st):
                return st
        except SynapseAPIError as exc:
            last_err = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"Synapse state of {room_id} never matched ({last_err}): "
                                 f"{sorted(st)}")
        time.sleep(0.2)


def wait_synapse_invite(synapse: SynapsePeer, token: str, room_id: str, timeout: float = 30.0) -> dict:
    """The invite to `room_id` as the Synapse user's /sync shows it."""
    deadline = time.monotonic() + timeout
    since = None
    while True:
        sync = synapse.sync(token, since=since, timeout_ms=1000)
        inv = sync.get("rooms", {}).get("invite", {}).get(room_id)
        if inv is not None:
            return inv
        since = sync.get("next_batch")
        if time.monotonic() > deadline:
            raise AssertionError(f"no invite to {room_id} in /sync")


def wait_backed_off(synapse: SynapsePeer, destination: str, timeout: float = 30.0) -> dict:
    """Wait until Synapse has marked `destination` as down (it is backing off from it)."""
    deadline = time.monotonic() + timeout
    while True:
        d = synapse.destination(destination) or {}
        if d.get("retry_last_ts"):
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"Synapse never backed off from {destination}: {d}")
        time.sleep(0.2)
