"""Fuzzing fixtures: two whole in-process homeservers (tests/harness.py), "ours" under test
and "theirs" as a real, joined peer whose signing key signs the fuzzed federation requests.

- `world` (one per test module): ours and theirs, a public room of each supported version
  created by alice@ours and joined by bob@theirs, and a subscription on ours;
- the network between them refuses every other server at once (a fuzzed server name must
  never make a request leave the process or wait for a timeout);
- `x_matrix(world, method, uri, content)`: theirs' Authorization header for a request;
- `is_matrix_error(body)`: the `{errcode, error}` shape every refusal must have.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from shared.canonical import CanonicalJSONError
from shared.crypto import SigningKey, encode_base64
from shared.room_versions import get_room_version
from shared.xmatrix import request_signing_json, sign_request
from tests.contract.helpers import DownTransport
from tests.harness import InProcessHomeserver, Receiver

VERSIONS = ("10", "11", "12")


class Network(dict):
    """The harness network, where any server not on it refuses connections."""

    down = DownTransport()

    def get(self, key, default=None):
        return super().get(key) or self.down

    def __contains__(self, key) -> bool:
        return True


@dataclass
class Room:
    room_id: str
    version: str
    state: dict            # (type, state_key) -> event ID
    events: list[dict]     # its state events (with event_id)

    @property
    def rv(self):
        return get_room_version(self.version)


@dataclass
class World:
    ours: InProcessHomeserver
    theirs: InProcessHomeserver
    key: SigningKey                    # theirs' signing key
    rooms: list[Room] = field(default_factory=list)
    subscription_id: str = ""
    client: object = None              # set by tests that talk to ours' transport

    @property
    def origin(self) -> str:
        return self.theirs.server_name

    @property
    def alice(self) -> str:
        return self.ours.user("alice")

    @property
    def bob(self) -> str:
        return self.theirs.user("bob")


@pytest.fixture(scope="module")
async def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    network = Network()
    # no rate limit: the fuzzers send far more than a real peer would
    ours = InProcessHomeserver("ours.test:8448", tmp / "ours", network, Receiver(),
                               federation_rate_burst=0)
    theirs = InProcessHomeserver("theirs.test:8448", tmp / "theirs", network, Receiver())
    await ours.start()
    await theirs.start()
    try:
        w = World(ours, theirs, SigningKey.load(theirs.settings.path("signing_key")))
        for version in VERSIONS:
            room_id = await ours.api.create_room(w.alice, room_version=version, preset="public_chat")
            await theirs.api.join(room_id, w.bob, servers=[ours.server_name])
            events = await ours.api.state(room_id)
            w.rooms.append(Room(room_id, version,
                                {(e["type"], e["state_key"]): e["event_id"] for e in events}, events))
        w.subscription_id = await ours.api.subscribe("http://cb/callback", room_id=w.rooms[0].room_id)
        yield w
    finally:
        await theirs.stop()
        await ours.stop()


def x_matrix(w: World, method: str, uri: str, content) -> str:
    """theirs' X-Matrix header for a request to ours: canonical signing when the content
    allows it, else over the sorted compact encoding Synapse signs non-canonical content
    with; a junk signature when the content cannot be encoded at all (such a body is not
    JSON we accept, and is refused before authentication)."""
    dest = w.ours.server_name
    try:
        return sign_request(method, uri, w.origin, dest, w.key, content)
    except CanonicalJSONError:
        pass
    try:
        message = json.dumps(request_signing_json(method, uri, w.origin, dest, content),
                             ensure_ascii=False, separators=(",", ":"), sort_keys=True,
                             allow_nan=False).encode("utf-8")
        sig = encode_base64(w.key.sign(message))
    except (ValueError, TypeError, RecursionError):
        sig = "junk"
    return f'X-Matrix origin="{w.origin}",destination="{dest}",key="{w.key.key_id}",sig="{sig}"'


def is_matrix_error(body) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("errcode"), str)
            and body["errcode"].startswith("M_") and isinstance(body.get("error"), str))
