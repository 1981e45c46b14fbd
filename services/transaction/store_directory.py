"""Storage of profiles, query handlers, room aliases and published rooms (see
shared/contracts/directory.py). Plain functions run on the database thread.

Invariants: one row per user / query type / alias / room; an alias is put only if it is
free or already names the same room (a compare-and-set inside one call, so two racing
puts of one alias cannot both win); servers of an alias are stored as a JSON list.
"""
from __future__ import annotations

import orjson
from services.transaction.sql import read_only


def put_profile(conn, user_id: str, displayname, avatar_url) -> None:
    conn.execute("INSERT INTO profiles (user_id, displayname, avatar_url) VALUES (?, ?, ?) "
                 "ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, "
                 "avatar_url = excluded.avatar_url", (user_id, displayname, avatar_url))


@read_only
def get_profile(conn, user_id: str) -> dict | None:
    row = conn.execute("SELECT displayname, avatar_url FROM profiles WHERE user_id = ?",
                       (user_id,)).fetchone()
    if row is None:
        return None
    return {k: v for k, v in (("displayname", row[0]), ("avatar_url", row[1])) if v is not None}


def put_query_handler(conn, query_type: str, url: str) -> None:
    conn.execute("INSERT INTO query_handlers (query_type, url) VALUES (?, ?) "
                 "ON CONFLICT (query_type) DO UPDATE SET url = excluded.url", (query_type, url))


@read_only
def get_query_handler(conn, query_type: str) -> str | None:
    row = conn.execute("SELECT url FROM query_handlers WHERE query_type = ?", (query_type,)).fetchone()
    return row[0] if row else None


def put_alias(conn, alias: str, room_id: str, servers: list[str]) -> str | None:
    """None when stored (or already naming room_id); else the room the alias names."""
    row = conn.execute("SELECT room_id FROM room_aliases WHERE alias = ?", (alias,)).fetchone()
    if row is not None and row[0] != room_id:
        return row[0]
    conn.execute("INSERT INTO room_aliases (alias, room_id, servers) VALUES (?, ?, ?) "
                 "ON CONFLICT (alias) DO UPDATE SET servers = excluded.servers",
                 (alias, room_id, orjson.dumps(servers).decode()))
    return None


@read_only
def get_alias(conn, alias: str) -> dict | None:
    row = conn.execute("SELECT room_id, servers FROM room_aliases WHERE alias = ?", (alias,)).fetchone()
    return {"room_id": row[0], "servers": orjson.loads(row[1])} if row else None


def delete_alias(conn, alias: str) -> bool:
    return conn.execute("DELETE FROM room_aliases WHERE alias = ?", (alias,)).rowcount > 0


@read_only
def room_aliases(conn, room_id: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT alias FROM room_aliases WHERE room_id = ? ORDER BY alias",
                                       (room_id,))]


def put_visibility(conn, room_id: str, visibility: str) -> None:
    if visibility == "public":
        conn.execute("INSERT INTO published_rooms (room_id) VALUES (?) ON CONFLICT DO NOTHING", (room_id,))
    else:
        conn.execute("DELETE FROM published_rooms WHERE room_id = ?", (room_id,))


@read_only
def get_visibility(conn, room_id: str) -> str:
    row = conn.execute("SELECT 1 FROM published_rooms WHERE room_id = ?", (room_id,)).fetchone()
    return "public" if row else "private"


@read_only
def published_rooms(conn) -> list[str]:
    return [r[0] for r in conn.execute("SELECT room_id FROM published_rooms ORDER BY room_id")]
