"""Who may call the domain API (the API token), and the proof callbacks carry (issue #16).

- every route of the messaging API answers 401 M_MISSING_TOKEN without a token and
  M_UNKNOWN_TOKEN with another one, before doing anything; /health and the docs are open;
- a token file rotated on disk takes over without a restart;
- a JSON body is JSON whatever its Content-Type (curl -d sends a form type);
- each callback carries `Authorization: Bearer <hs_token>` of its subscription and an
  HMAC-SHA256 signature over the body, which a receiver verifies (a tampered body fails).
"""
from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from shared.contracts import messaging as c
from shared.settings import ensure_secret_file
from tests.contract.helpers import wait_until

ROOM = "!room:hs.test"
HOOK = "http://cb.test/hook"
OPEN = {"/health", "/docs", "/openapi.json", "/docs/oauth2-redirect"}


def domain_routes(app) -> list[tuple[str, str]]:
    """Every documented operation (the OpenAPI document lists router routes too)."""
    out = []
    for path, ops in app.openapi()["paths"].items():
        if path in OPEN or path.startswith("/dashboard"):
            continue
        for method in ops:
            out.append((method.upper(), path.replace("{", "x").replace("}", "")))
    return out


async def test_every_domain_route_refuses_a_missing_or_wrong_token(service, fake_pdu, fake_tx):
    routes = domain_routes(service.app)
    assert len(routes) >= 14, routes
    async with service.client(token=False) as anon, \
            service.client(token=False) as wrong:
        wrong.headers["authorization"] = "Bearer not-the-token"
        for method, path in routes:
            r = await anon.request(method, path, json={})
            assert (r.status_code, r.json()["errcode"]) == (401, "M_MISSING_TOKEN"), (method, path, r.text)
            r = await wrong.request(method, path, json={})
            assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN"), (method, path, r.text)
        other_scheme = await anon.get(c.SUBSCRIPTIONS, headers={"authorization": "Basic abc"})
        assert other_scheme.status_code == 401
    assert not fake_pdu.calls and not [s for s in fake_tx.subs], "a refused request reached a layer"


async def test_health_and_docs_need_no_token(service):
    async with service.client(token=False) as anon:
        assert (await anon.get("/health")).status_code == 200
        assert (await anon.get("/openapi.json")).status_code == 200


async def test_the_right_token_is_let_in(service_client):
    r = await service_client.post(c.SUBSCRIPTIONS, json={"url": HOOK, "room_id": ROOM})
    assert r.status_code == 200, r.text


async def test_a_rotated_token_file_takes_over_without_restart(service, inprocess):
    old = service.settings.token()
    async with service.client(token=False) as client:
        client.headers["authorization"] = f"Bearer {old}"
        assert (await client.post(c.SUBSCRIPTIONS, json={"url": HOOK})).status_code == 200
        new = ensure_secret_file(service.settings.data_dir, "api_token", replace_it=True)
        assert new != old
        time.sleep(1.1)   # the file is looked at once a second at most
        r = await client.post(c.SUBSCRIPTIONS, json={"url": HOOK})
        assert (r.status_code, r.json()["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        client.headers["authorization"] = f"Bearer {new}"
        assert (await client.post(c.SUBSCRIPTIONS, json={"url": HOOK})).status_code == 200


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
async def test_a_json_body_is_json_whatever_its_content_type(service_client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    r = await service_client.post(c.SUBSCRIPTIONS, content=b'{"url": "http://cb.test/hook"}',
                                  headers=headers)
    assert r.status_code == 200, r.text


def verify(hs_token: str, body: bytes, signature: str, max_age_s: int = 300) -> bool:
    """The receiver's check, as the README shows it."""
    fields = dict(part.split("=", 1) for part in signature.split(","))
    mac = hmac.new(hs_token.encode(), fields["t"].encode() + b"." + body, hashlib.sha256)
    return (hmac.compare_digest(mac.hexdigest(), fields["v1"])
            and abs(time.time() - int(fields["t"])) <= max_age_s)


async def test_callbacks_carry_the_subscription_token_and_a_valid_signature(
        service_client, fake_tx, receiver):
    r = await service_client.post(c.SUBSCRIPTIONS, json={"url": HOOK, "room_id": ROOM})
    sub = r.json()
    assert sub["hs_token"]
    fake_tx.append(ROOM, [{"type": "m.room.message", "event_id": "$e1", "content": {"body": "x"}}])
    await wait_until(lambda: receiver.accepted(), timeout=5, what="a callback")
    raw, headers = receiver.attempts[0][0], receiver.headers[0]
    assert headers["authorization"] == f"Bearer {sub['hs_token']}"
    assert verify(sub["hs_token"], raw, headers["x-fedstack-signature"])
    assert not verify(sub["hs_token"], raw.replace(b'"x"', b'"y"'), headers["x-fedstack-signature"])
    assert not verify("another-token", raw, headers["x-fedstack-signature"])
