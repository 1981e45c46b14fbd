"""One federation /send is followed through the four services of the receiving homeserver
by one request id: created by its transport (the edge), sent as X-Request-ID on the
internal hops, kept with the staged PDU in the database across the relay -> pdu and
stream -> messaging hops. The log lines are the JSON objects `shared.logs` writes."""
from __future__ import annotations

import io
import logging

import orjson
import pytest

from shared.logs import JsonFormatter, TextFormatter, formatter
from tests.harness import InProcessHomeserver, Receiver


@pytest.fixture
def json_lines():
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("fedstack")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [orjson.loads(line) for line in buf.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old)


async def test_one_send_has_one_request_id_in_all_four_services(tmp_path, json_lines):
    network: dict = {}
    a = InProcessHomeserver("a.test:8448", tmp_path / "a", network, Receiver())
    b = InProcessHomeserver("b.test:8448", tmp_path / "b", network, Receiver())
    await a.start()
    await b.start()
    try:
        alice, bob = a.user("alice"), b.user("bob")
        room = await a.api.create_room(alice, preset="public_chat")
        await b.api.join(room, bob, servers=[a.server_name])
        sid = await b.api.subscribe("http://cb/callback", room_id=room, types=["m.room.message"])
        sent = await a.api.send(room, alice, "m.room.message", {"body": "traced", "msgtype": "m.text"})
        event_id = sent["event_id"] if isinstance(sent, dict) else sent
        await b.receiver.wait_for(lambda e: any(x["event_id"] == event_id for x in e),
                                  subscription_id=sid)
    finally:
        await a.stop()
        await b.stop()
    lines = json_lines()
    # B's transport received A's transaction: its request id is the one to follow
    edge = [l for l in lines if l["service"] == "transport" and "from a.test:8448" in l["msg"]]
    assert edge, "no transport line for A's transaction"
    ids = {l["request_id"] for l in edge}
    rid = next(r for r in ids
               if any(event_id in l["msg"] and l.get("request_id") == r for l in lines
                      if l["service"] == "pdu"))
    followed = [l for l in lines if l.get("request_id") == rid]
    services = {l["service"] for l in followed}
    assert services >= {"transport", "transaction", "pdu", "messaging"}, followed
    assert any(l["service"] == "transaction" and "staged transaction" in l["msg"] for l in followed)
    assert any(l["service"] == "pdu" and event_id in l["msg"] and "accepted" in l["msg"]
               for l in followed)
    assert any(l["service"] == "messaging" and event_id in l["msg"] for l in followed)
    # the id was made at the edge: A's side of the same event has other ids
    assert all(l.get("request_id") != rid for l in lines
               if "from b.test:8448" in l["msg"])


def test_log_formats():
    rec = logging.LogRecord("fedstack.pdu.inbound", logging.INFO, __file__, 1, "hello %s",
                            ("x",), None)
    rec.request_id = "abc123"
    obj = orjson.loads(JsonFormatter().format(rec))
    assert obj["service"] == "pdu" and obj["msg"] == "hello x" and obj["request_id"] == "abc123"
    assert obj["level"] == "info" and obj["logger"] == "fedstack.pdu.inbound"
    assert TextFormatter("pdu").format(rec).endswith("hello x [abc123]")
    assert isinstance(formatter(fmt="text"), TextFormatter)
    assert isinstance(formatter(fmt="json"), JsonFormatter)
    with pytest.raises(ValueError):
        formatter(fmt="yaml")
