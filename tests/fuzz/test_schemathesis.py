"""Schemathesis against every operation of the four checked-in OpenAPI documents.

Each service is the real app of one in-process homeserver ("ours", tests/fuzz/conftest.py:
its neighbours are its own real layers, its federation peer a real joined homeserver,
every other server refuses connections). Cases come from `schemathesis` (positive and
negative generation from openapi/<service>.json) and are sent through an httpx ASGI
transport in this event loop, with the internal secret; public federation requests are
mostly signed with X-Matrix by the peer, so they get past authentication.

To reach past "unknown room" and "not a local user", some cases get known identifiers in
place of generated ones (a room of each version, its events, alice@ours, bob@theirs,
theirs' server name, a subscription).

The check, for every response: not a 5xx (schemathesis' `not_a_server_error`), and every
error answer is a Matrix error `{errcode, error}`. One exception: the operations that
must reach other homeservers (GATEWAY: joining or leaving through them, inviting their
users, backfilling) answer 502 M_UNKNOWN when none of them could be reached or answered
sensibly, as Synapse does; in this world every server but theirs refuses connections.
Bounded: MAX_EXAMPLES cases per operation (40, times FUZZ_SCALE from the environment for a
longer run by hand).
"""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from shared.canonical import BadJSON, parse_json_body
from shared.contracts import pdu as pdu_c
from shared.internal import SECRET_HEADER
from tests.fuzz.conftest import World, is_matrix_error, x_matrix

MAX_EXAMPLES = max(1, int(40 * float(os.environ.get("FUZZ_SCALE", "1"))))
SERVICES = ("transport", "transaction", "pdu", "messaging")
OPENAPI = Path(__file__).resolve().parents[2] / "openapi"
SCHEMAS = {s: schemathesis.openapi.from_path(str(OPENAPI / f"{s}.json")) for s in SERVICES}
OPERATIONS = [pytest.param(s, op.method.upper(), op.path, id=f"{s} {op.method.upper()} {op.path}")
              for s in SERVICES for op in (r.ok() for r in SCHEMAS[s].get_all_operations())]
GATEWAY = {(service, "POST", f"{prefix}/rooms/{{room_id}}/{action}")
           for service, prefix in (("messaging", "/v1"), ("pdu", "/_internal/pdu/v1"))
           for action in ("join", "leave", "invite", "backfill")}
# and those that ask another server for what it holds (profiles, aliases, public rooms,
# space hierarchies) or knock through it (issue #14)
GATEWAY |= {("messaging", "GET", "/v1/public_rooms"), ("messaging", "GET", "/v1/rooms/{room_id}/hierarchy"),
            ("messaging", "GET", "/v1/profile/{user_id}"), ("messaging", "GET", "/v1/directory/{room_alias}"),
            ("messaging", "POST", "/v1/rooms/{room_id}/knock"), ("pdu", "POST", "/_internal/pdu/v1/rooms/{room_id}/knock")}
_STRATEGIES: dict = {}


def matrix_error_body(ctx, response, case):
    """A schemathesis check: an error answer is a JSON Matrix error."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except Exception:  # noqa: BLE001
            body = None
        if not is_matrix_error(body):
            raise AssertionError(f"{response.status_code} answer is not a Matrix error: "
                                 f"{response.content[:300]!r}")


def no_server_error_but_gateway(ctx, response, case):
    """`not_a_server_error`, except for a 502 (the remote servers failed us)."""
    if response.status_code != 502:
        return not_a_server_error(ctx, response, case)
    return None


def _app(w: World, service: str):
    return {"transport": w.ours.transport_app, "transaction": w.ours.tx_app,
            "pdu": w.ours.pdu_app, "messaging": w.ours.messaging_app}[service]


# --------------------------------------------------------------------------- hints

def _hints(w: World) -> dict[str, st.SearchStrategy]:
    """Known identifiers by the parameter or body field names they can stand in for."""
    rooms = st.sampled_from([r.room_id for r in w.rooms])
    events = st.sampled_from([e["event_id"] for r in w.rooms for e in r.events])
    local, users = st.just(w.alice), st.sampled_from([w.alice, w.bob])
    servers = st.sampled_from([w.origin, w.ours.server_name])
    return {"room_id": rooms, "event_id": events, "redacts": events,
            "user_id": users, "sender": local, "creator": local,
            "origin": servers, "destination": servers, "server_name": servers,
            "subscription_id": st.just(w.subscription_id),
            "event_ids": st.lists(events, min_size=1, max_size=3),
            "servers": st.lists(servers, min_size=1, max_size=2),
            "room_version": st.sampled_from(["10", "11", "12"])}


def _apply_hints(case, w: World, data) -> None:
    hints = _hints(w)
    for name in list(case.path_parameters):
        if name in hints and data.draw(st.integers(0, 9), label=f"keep {name}") < 9:
            case.path_parameters[name] = data.draw(hints[name], label=name)
    if isinstance(case.body, dict):
        for name in list(case.body):
            if name in hints and data.draw(st.integers(0, 9), label=f"keep {name}") < 9:
                case.body[name] = data.draw(hints[name], label=name)


def _bound_long_polls(case) -> None:
    timeout = case.query.get("timeout_ms") if isinstance(case.query, dict) else None
    try:
        if timeout is not None and int(timeout) > 50:   # a long poll: wait 50 ms at most
            case.query["timeout_ms"] = 50
    except (TypeError, ValueError):
        pass


# --------------------------------------------------------------------------- sending

def _request(case) -> requests.PreparedRequest:
    kwargs = case.as_transport_kwargs(base_url="http://ours.test")
    kwargs.pop("cookies", None)
    return requests.Request(**kwargs).prepare()


async def _send(w: World, service: str, case, sign: bool) -> httpx.Response:
    prepared = _request(case)
    headers = {k: v for k, v in prepared.headers.items()
               if k.lower() not in ("content-length", "connection", "accept-encoding")}
    headers[SECRET_HEADER] = w.ours.settings.secret()
    headers["authorization"] = f"Bearer {w.ours.settings.token()}"   # the domain API's token
    body = prepared.body.encode("utf-8") if isinstance(prepared.body, str) else prepared.body
    transport = httpx.ASGITransport(app=_app(w, service), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        request = client.build_request(prepared.method, prepared.url, content=body, headers=headers)
        if sign and request.url.path.startswith(pdu_c.FEDERATION):     # as the transport does
            request.headers[pdu_c.ORIGIN_HEADER] = w.origin
        if sign and request.url.path.startswith("/_matrix/federation/"):
            try:
                content = parse_json_body(body) if body else None
            except BadJSON:
                content = None
            request.headers["authorization"] = x_matrix(
                w, request.method, request.url.raw_path.decode("ascii"), content)
        return await client.send(request)


@pytest.fixture
async def repaired(world):
    """The world as each operation should find it, whatever the ones before did: alice in
    every room (she may have left), and a subscription (it may have been deleted)."""
    for room in world.rooms:
        try:
            await world.ours.api.join(room.room_id, world.alice)
        except Exception:  # noqa: BLE001 - she is creator: she stays unless she left
            pass
    if not any(s["subscription_id"] == world.subscription_id
               for s in await world.ours.tx.list_subscriptions()):
        world.subscription_id = await world.ours.api.subscribe("http://cb/callback",
                                                               room_id=world.rooms[0].room_id)
    return world


@pytest.mark.parametrize("service,method,path", OPERATIONS)
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
async def test_no_server_error_and_matrix_errors(repaired, service, method, path, data):
    world = repaired
    operation = SCHEMAS[service][path][method]
    strategy = _STRATEGIES.get((service, method, path))
    if strategy is None:
        strategy = _STRATEGIES[(service, method, path)] = operation.as_strategy()
    case = data.draw(strategy, label="case")
    # (hypothesis prefers small draws: the usual choice is the small one)
    if data.draw(st.integers(0, 3), label="no hints") < 3:
        _apply_hints(case, world, data)
    _bound_long_polls(case)
    sign = data.draw(st.integers(0, 3), label="unsigned") < 3
    response = await _send(world, service, case, sign)
    try:
        errcode = response.json().get("errcode", "")
    except Exception:  # noqa: BLE001 - not JSON (the checks say so)
        errcode = "?"
    event(f"{response.status_code} {errcode}")
    no_5xx = no_server_error_but_gateway if (service, method, path) in GATEWAY else not_a_server_error
    case.validate_response(response, checks=[no_5xx, matrix_error_body])
