"""Server ACLs in a room of three servers: ours, the session's Synapse and a signing fake
remote (tests/fakes/remote.py over real TLS, named `localhost:<port>` so an ACL can tell
it from the two 127.0.0.1 servers: ACLs ignore ports). Synapse's admin denies the fake;
then every federation endpoint of ours answers it 403 M_FORBIDDEN and the events it sends
us are not applied, while Synapse's still are."""
from __future__ import annotations

import asyncio
import secrets
import time
from urllib.parse import quote

import pytest

from tests.fakes.remote import FED, FakeRemote, Target
from tests.interop.fedstack_peer import (FedstackPeer, bodies, membership, synapse_user,
                                         wait_synapse_state)
from tests.interop.synapse_peer import SynapsePeer


def q(s: str) -> str:
    return quote(s, safe="")


@pytest.fixture
def fake(tmp_path):
    remote = FakeRemote(None)
    asyncio.run(remote.start_tls(tmp_path / "fake-tls"))
    remote._name = f"localhost:{remote.port}"   # a name an ACL can deny apart from 127.0.0.1
    yield remote
    asyncio.run(remote.stop())


def test_synapse_admin_denies_a_server_and_we_enforce_it(synapse: SynapsePeer, fedstack: FedstackPeer, fake):
    t = secrets.token_hex(3)
    alice, alice_tok = synapse_user(synapse, "ix-acl-alice")
    room = synapse.create_room(alice_tok, name=f"acl-{t}")
    bob = fedstack.user(f"bob{t}")
    fedstack.join(room, bob, [synapse.server_name])
    sid = fedstack.subscribe(room)
    ours = Target(fedstack.server_name, f"https://127.0.0.1:{fedstack.hs.settings.federation_port}")
    froom = asyncio.run(fake.join(ours, room, "mallory"))   # through us; we forward it to Synapse
    mallory = fake.user("mallory")
    wait_synapse_state(synapse, alice_tok, room, lambda s: membership(s, mallory) == "join")

    acl_id = synapse.send_state(alice_tok, room, "m.room.server_acl", "",
                                {"allow": ["*"], "deny": ["localhost"], "allow_ip_literals": True})
    fedstack.wait_state(room, lambda s: s.get(("m.room.server_acl", ""), {}).get("event_id") == acl_id)

    rid, uid, fake_ev = q(room), q(mallory), q("$" + "A" * 43)
    requests = [
        ("GET", f"{FED}/v1/make_join/{rid}/{uid}", None, [("ver", "12")]),
        ("GET", f"{FED}/v1/make_leave/{rid}/{uid}", None, []),
        ("GET", f"{FED}/v1/make_knock/{rid}/{uid}", None, [("ver", "12")]),
        ("PUT", f"{FED}/v2/send_join/{rid}/{fake_ev}", {}, []),
        ("PUT", f"{FED}/v2/send_leave/{rid}/{fake_ev}", {}, []),
        ("PUT", f"{FED}/v1/send_knock/{rid}/{fake_ev}", {}, []),
        ("PUT", f"{FED}/v2/invite/{rid}/{fake_ev}", {"room_version": "12", "event": {}}, []),
        ("GET", f"{FED}/v1/state/{rid}", None, [("event_id", acl_id)]),
        ("GET", f"{FED}/v1/state_ids/{rid}", None, [("event_id", acl_id)]),
        ("GET", f"{FED}/v1/backfill/{rid}", None, [("v", acl_id), ("limit", "5")]),
        ("GET", f"{FED}/v1/event_auth/{rid}/{q(acl_id)}", None, []),
        ("POST", f"{FED}/v1/get_missing_events/{rid}",
         {"earliest_events": [], "latest_events": [acl_id], "limit": 5}, []),
        ("GET", f"{FED}/v1/event/{q(acl_id)}", None, []),
    ]
    for method, path, body, query in requests:
        r = asyncio.run(fake.request(ours, method, path, body, query=query or None))
        assert (r.status_code, r.json().get("errcode")) == (403, "M_FORBIDDEN"), (path, r.text)

    # the denied server's message is not applied; Synapse's, sent after it, is
    froom.add(fedstack.state(room)[("m.room.server_acl", "")], extremity=True)
    denied_id, denied = froom.message("mallory", f"denied-{t}")
    r = asyncio.run(fake.send_transaction(ours, [denied]))
    assert r.status_code == 200, r.text
    synapse.send_message(alice_tok, room, f"allowed-{t}")
    got = fedstack.wait_delivered(sid, lambda evs: f"allowed-{t}" in bodies(evs))
    time.sleep(0.5)
    assert f"denied-{t}" not in bodies(fedstack.delivered(sid))
    assert denied_id not in [e["event_id"] for e in fedstack.api("GET", f"/v1/rooms/{room}/events",
                                                                 params={"limit": 1000})["events"]]
    assert [e["sender"] for e in got if e["content"].get("body") == f"allowed-{t}"] == [alice]
