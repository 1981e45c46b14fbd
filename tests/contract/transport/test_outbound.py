"""Outbound: the internal `/request` route signs with X-Matrix what a remote can verify
against our published key, reports failures as status 0 instead of raising, refuses
private addresses unless allowed, and `/keys` serves only verified remote keys."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from shared.contracts import transport as c
from tests.contract.helpers import FakeRemote, key_response, make_settings
from tests.contract.transport.conftest import REMOTE, FakePdu, FakeTransaction, build_transport

FED = "/_matrix/federation"


async def trust_our_key(remote: FakeRemote, public_client, server_name: str) -> None:
    """The remote learns our key the way any server does: from our key endpoint."""
    body = (await public_client.get("/_matrix/key/v2/server")).json()
    remote.peer_keys[server_name] = {k: v["key"] for k, v in body["verify_keys"].items()}


async def test_outbound_put_is_signed_and_verifies_at_the_remote(service_client, public_client,
                                                                 remote, service):
    await trust_our_key(remote, public_client, service.settings.server_name)
    remote.routes[("PUT", FED + "/v1/send/out-1")] = (200, {"pdus": {"$x": {}}})
    body = {"origin": "hs.test", "origin_server_ts": 1, "pdus": [{"k": "é ☃"}]}
    resp = await service_client.post(c.REQUEST, json={
        "destination": REMOTE, "method": "PUT", "path": FED + "/v1/send/out-1", "body": body})
    assert resp.status_code == 200, resp.text
    assert c.FederationResponse.model_validate(resp.json()) == c.FederationResponse(
        status=200, body={"pdus": {"$x": {}}}, error=None)
    [req] = remote.requests
    assert req["signature_ok"], "the remote could not verify our X-Matrix signature"
    assert req["origin"] == "hs.test" and req["body"] == body
    assert req["host"] == "remote.test:8448"      # a bare server name means port 8448


async def test_outbound_get_with_query_signs_the_full_uri(service_client, public_client, remote, service):
    await trust_our_key(remote, public_client, service.settings.server_name)
    path = FED + "/v1/backfill/%21room%3Aremote.test"
    remote.routes[("GET", "/_matrix/federation/v1/backfill/!room:remote.test")] = (200, {"pdus": []})
    resp = await service_client.post(c.REQUEST, json={
        "destination": REMOTE, "method": "GET", "path": path,
        "query": [["v", "$a b"], ["v", "$c"], ["limit", "10"]]})
    assert resp.json()["status"] == 200, resp.text
    [req] = remote.requests
    assert req["signature_ok"]
    assert req["uri"].startswith(path + "?") and req["body"] is None
    assert httpx.QueryParams(req["uri"].split("?", 1)[1]).multi_items() == [
        ("v", "$a b"), ("v", "$c"), ("limit", "10")]


async def test_remote_error_status_and_body_are_reported(service_client, public_client, remote, service):
    await trust_our_key(remote, public_client, service.settings.server_name)
    remote.routes[("GET", FED + "/v1/event/$gone")] = (404, {"errcode": "M_NOT_FOUND", "error": "x"})
    resp = await service_client.post(c.REQUEST, json={
        "destination": REMOTE, "method": "GET", "path": FED + "/v1/event/$gone"})
    assert resp.status_code == 200
    assert resp.json()["status"] == 404
    assert resp.json()["body"]["errcode"] == "M_NOT_FOUND"


async def test_unreachable_destination_is_status_0_not_an_error(service_client, inprocess):
    """("down.test" is a fake destination that refuses connections.)"""
    resp = await service_client.post(c.REQUEST, json={
        "destination": "down.test", "method": "GET", "path": FED + "/v1/version"})
    assert resp.status_code == 200
    assert resp.json()["status"] == 0 and resp.json()["error"]


async def test_request_to_ourselves_is_refused(service_client, service):
    resp = await service_client.post(c.REQUEST, json={
        "destination": service.settings.server_name, "method": "GET", "path": FED + "/v1/version"})
    assert resp.json()["status"] == 0 and resp.json()["error"]


async def test_remote_keys_are_fetched_and_verified(service_client, remote):
    resp = await service_client.get(c.KEYS.format(server_name=REMOTE))
    assert resp.status_code == 200, resp.text
    keys = c.ServerKeys.model_validate(resp.json())
    assert keys.server_name == REMOTE
    assert keys.verify_keys == {remote.key.key_id: remote.key.public_key_base64}
    assert keys.valid_until_ts > time.time() * 1000


async def test_unverifiable_or_unreachable_keys_are_404(service_client, remote):
    remote.key_body = key_response("evil.test", remote.key)     # names another server
    for name in (REMOTE, "down.test"):
        resp = await service_client.get(c.KEYS.format(server_name=name))
        assert resp.status_code == 404, resp.text
        assert resp.json()["errcode"] == "M_NOT_FOUND"


class _Listener:
    """A loopback TCP listener that counts connections (and closes them)."""

    def __init__(self):
        self.connections = 0

    async def __aenter__(self):
        async def on_conn(_reader, writer):
            self.connections += 1
            writer.close()
        self.server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


@pytest.mark.parametrize("allow_private", [False, True])
async def test_private_destinations_refused_unless_allowed(tmp_path, inprocess, allow_private):
    settings = make_settings(tmp_path, allow_private_destinations=allow_private,
                             federation_timeout_s=5)
    remote = FakeRemote(REMOTE)
    app = build_transport(settings, FakeTransaction(), FakePdu(), remote)
    async with _Listener() as listener, app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                     headers={"x-fedstack-secret": settings.secret()}) as client:
            for host in ("127.0.0.1", "localhost"):
                t0 = time.monotonic()
                resp = await client.post(c.REQUEST, json={
                    "destination": f"{host}:{listener.port}", "method": "GET",
                    "path": FED + "/v1/version"})
                assert resp.status_code == 200
                assert resp.json()["status"] == 0 and resp.json()["error"]  # no TLS there
                assert time.monotonic() - t0 < 5
            for dest in ("10.11.12.13:8448", "[::1]:8448", "169.254.1.1"):
                if allow_private:
                    break
                resp = await client.post(c.REQUEST, json={
                    "destination": dest, "method": "GET", "path": FED + "/v1/version"})
                assert resp.json()["status"] == 0 and resp.json()["error"]
    if allow_private:
        assert listener.connections == 2, "allowed private destinations were not contacted"
    else:
        assert listener.connections == 0, "a private destination was contacted"

