"""The transaction service's tables, defined once (SQLAlchemy Core) for both engines: the
Alembic migrations (services/transaction/migrations), `fedstack copy-db` and the tests
build on this metadata; the store_* modules query these tables with plain SQL (see
services/transaction/sql.py for how that SQL reaches each engine).

Invariants:
- Integers are 64-bit on both engines (sqlite's INTEGER; PostgreSQL's BIGINT). An
  autoincrement key is sqlite's `INTEGER PRIMARY KEY AUTOINCREMENT` (never reused, its
  high-water mark in sqlite_sequence) and a PostgreSQL BIGSERIAL (its sequence, never
  rewound either).
- Binary columns (BLOB / BYTEA) hold bytes (JSON as UTF-8); text columns hold str and sort
  byte-wise on both (PostgreSQL: COLLATE "C", as sqlite's BINARY), so ORDER BY and key
  ranges such as `key_id >= 'alg:' AND key_id < 'alg;'` mean the same on both.
- This is the schema of the newest revision. A migration that changes a table changes it
  here too (and the upgrade test compares a migrated database with this metadata).
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, LargeBinary, MetaData,
                        PrimaryKeyConstraint, Table, Text, text)
from sqlalchemy.dialects import postgresql

metadata = MetaData()

TEXT = Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
INT = BigInteger().with_variant(Integer(), "sqlite")      # sqlite: INTEGER is 64-bit already
BLOB = LargeBinary()


def _serial(name: str) -> Column:
    """An autoincrement primary key (see the module invariants)."""
    return Column(name, INT, primary_key=True, autoincrement=True)


def _table(name, *cols, **kw) -> Table:
    return Table(name, metadata, *cols, sqlite_autoincrement=any(
        isinstance(c, Column) and c.autoincrement is True for c in cols), **kw)


received_transactions = _table(
    "received_transactions",
    Column("origin", TEXT, nullable=False), Column("txn_id", TEXT, nullable=False),
    Column("response", BLOB, nullable=False), Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("origin", "txn_id"))
inbox = _table(
    "inbox", _serial("id"), Column("origin", TEXT, nullable=False),
    Column("room_id", TEXT, nullable=False), Column("pdu", BLOB, nullable=False),
    Column("event_id", TEXT))
rooms = _table(
    "rooms", Column("room_id", TEXT, primary_key=True),
    Column("room_version", TEXT, nullable=False),
    Column("extremities", BLOB, nullable=False),          # JSON list of event ids
    Column("current_state_group", INT))
events = _table(
    "events", _serial("stream"),                          # never reused: the live stream's order
    Column("event_id", TEXT, nullable=False, unique=True), Column("room_id", TEXT, nullable=False),
    Column("json", BLOB, nullable=False),
    Column("outlier", INT, nullable=False, server_default=text("0")), Column("rejected", TEXT),
    Column("soft_failed", INT, nullable=False, server_default=text("0")),
    Column("state_group", INT),
    Index("events_room_stream", "room_id", "stream"))
state_groups = _table(
    "state_groups", _serial("id"), Column("room_id", TEXT, nullable=False),
    Column("prev_group", INT), Column("chain_len", INT, nullable=False),
    Column("delta", BLOB, nullable=False))                # JSON [[type, state_key, event_id], ...]
outbox = _table(
    "outbox", _serial("id"), Column("destination", TEXT, nullable=False),
    Column("event_id", TEXT), Column("edu", BLOB),
    Column("txn_id", TEXT),                               # set once in a transaction being sent
    Index("outbox_dest", "destination", "id"))
destinations = _table(
    "destinations", Column("destination", TEXT, primary_key=True),
    Column("retry_at", Float, nullable=False, server_default=text("0.0")),
    Column("retry_interval", Float, nullable=False, server_default=text("0.0")),
    Column("failures", INT, nullable=False, server_default=text("0")))
pending_redactions = _table(                              # accepted redactions awaiting their target
    "pending_redactions", Column("target", TEXT, nullable=False),
    Column("redaction_id", TEXT, nullable=False), Column("room_id", TEXT, nullable=False),
    Column("scope", TEXT),                                # NULL: any sender's event; else that server's
    PrimaryKeyConstraint("target", "redaction_id"))
client_txns = _table(
    "client_txns", Column("sender", TEXT, nullable=False), Column("txn_id", TEXT, nullable=False),
    Column("event_id", TEXT, nullable=False), PrimaryKeyConstraint("sender", "txn_id"))
subscriptions = _table(
    "subscriptions", Column("subscription_id", TEXT, primary_key=True),
    Column("url", TEXT, nullable=False), Column("room_id", TEXT), Column("types", TEXT),
    Column("position", INT, nullable=False), Column("lease_owner", TEXT),
    Column("lease_until", Float), Column("hs_token", TEXT))
counters = _table(
    "counters", Column("name", TEXT, primary_key=True), Column("value", INT, nullable=False))
event_request_ids = _table(                               # store_trace: the request that staged an event
    "event_request_ids", Column("event_id", TEXT, primary_key=True),
    Column("request_id", TEXT, nullable=False), Column("ts", Float, nullable=False),
    Index("event_request_ids_ts", "ts"))
edu_stream = _table(
    "edu_stream", Column("stream", INT, primary_key=True, autoincrement=False),  # from events' sequence
    Column("origin", TEXT, nullable=False), Column("edu_type", TEXT, nullable=False),
    Column("room_id", TEXT), Column("content", BLOB, nullable=False),
    Index("edu_stream_room", "room_id", "stream"))
edu_seen = _table(                                        # EDUs that must not be delivered twice
    "edu_seen", Column("origin", TEXT, nullable=False), Column("edu_type", TEXT, nullable=False),
    Column("dedup", TEXT, nullable=False), Column("ts", BigInteger, nullable=False),
    PrimaryKeyConstraint("origin", "edu_type", "dedup"), Index("edu_seen_ts", "ts"))
devices = _table(                                         # our users' devices
    "devices", Column("user_id", TEXT, nullable=False), Column("device_id", TEXT, nullable=False),
    Column("display_name", TEXT), Column("keys", BLOB), PrimaryKeyConstraint("user_id", "device_id"))
device_streams = _table(                                  # per user: stream_id of its last change
    "device_streams", Column("user_id", TEXT, primary_key=True),
    Column("stream_id", INT, nullable=False))
cross_signing_keys = _table(
    "cross_signing_keys", Column("user_id", TEXT, nullable=False),
    Column("key_type", TEXT, nullable=False), Column("key", BLOB, nullable=False),
    PrimaryKeyConstraint("user_id", "key_type"))
one_time_keys = _table(                                   # key_id is "algorithm:id"
    "one_time_keys", Column("user_id", TEXT, nullable=False), Column("device_id", TEXT, nullable=False),
    Column("key_id", TEXT, nullable=False), Column("key", BLOB, nullable=False),
    PrimaryKeyConstraint("user_id", "device_id", "key_id"))
remote_device_lists = _table(                             # other servers' users: known up to stream_id
    "remote_device_lists", Column("user_id", TEXT, primary_key=True),
    Column("stream_id", INT, nullable=False), Column("resynced_at", Float))
device_list_resyncs = _table(                             # users whose list must be fetched again
    "device_list_resyncs", Column("user_id", TEXT, primary_key=True),
    Column("origin", TEXT, nullable=False), Column("next_try", Float, nullable=False),
    Column("attempts", INT, nullable=False, server_default=text("0")))
profiles = _table(                                        # store_directory: our users' profiles
    "profiles", Column("user_id", TEXT, primary_key=True), Column("displayname", TEXT),
    Column("avatar_url", TEXT))
query_handlers = _table(
    "query_handlers", Column("query_type", TEXT, primary_key=True), Column("url", TEXT, nullable=False))
room_aliases = _table(                                    # our aliases; servers: a JSON list
    "room_aliases", Column("alias", TEXT, primary_key=True), Column("room_id", TEXT, nullable=False),
    Column("servers", TEXT, nullable=False), Index("room_aliases_room", "room_id"))
published_rooms = _table("published_rooms", Column("room_id", TEXT, primary_key=True))
