"""Logs: one JSON object per line (or plain text), each with the request id it belongs to.

Invariants:
- The request id lives in a contextvar (`request_id`): set for each request by the
  service's front layer (`shared.routing`, `accept_request_id`), sent on every internal hop
  as `X-Request-ID` (`shared.internal.InternalClient`), and stored with an inbound PDU's
  inbox row and its event (transaction service), so the relay -> pdu and stream ->
  messaging hops carry the id of the /send that brought the event. `grep <id>` over the
  four services' logs follows one event.
- An id is created at the edge: a federation request (`/_matrix/...`: a remote's header
  is never trusted) or a domain API call without a well-formed `X-Request-ID` of its own.
- `FEDSTACK_LOG_FORMAT=json` (the default) or `text`; `FEDSTACK_LOG_LEVEL` (warning).
  A record's own `request_id` (logging's `extra`) wins over the contextvar's.
"""
from __future__ import annotations

import contextvars
import logging
import os
import re
import secrets
import time

import orjson

HEADER = "x-request-id"
HEADER_BYTES = HEADER.encode()
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("fedstack_request_id",
                                                                       default=None)
_VALID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


def new_request_id() -> str:
    return secrets.token_hex(8)


def accept_request_id(scope) -> str:
    """The request id of an incoming request: the caller's `X-Request-ID` on an internal or
    domain API route when it is well formed, else a new one."""
    rid = None
    if not scope["path"].startswith("/_matrix/"):
        for k, v in scope["headers"]:
            if k == HEADER_BYTES:
                if _VALID.fullmatch(v):
                    rid = v.decode()
                break
    return rid if rid is not None else new_request_id()


def _service_of(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fedstack" else parts[0]


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, service, logger, msg, request_id, exc."""

    def __init__(self, service: str | None = None):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(),
               "service": self.service or _service_of(record.name),
               "logger": record.name, "msg": record.getMessage()}
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, service: str | None = None):
        super().__init__(f"%(asctime)s {service or '-'} %(name)s %(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None) or request_id.get()
        return f"{line} [{rid}]" if rid else line


def formatter(service: str | None = None, fmt: str | None = None) -> logging.Formatter:
    fmt = (fmt or os.environ.get("FEDSTACK_LOG_FORMAT") or "json").lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"FEDSTACK_LOG_FORMAT must be json or text, not {fmt!r}")
    return JsonFormatter(service) if fmt == "json" else TextFormatter(service)


def configure(service: str, level: str | None = None, fmt: str | None = None) -> None:
    """The process's root logger: one stderr handler in the chosen format and level."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(service, fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get("FEDSTACK_LOG_LEVEL") or "warning").upper())
    for name in ("uvicorn", "uvicorn.error"):   # uvicorn's own lines in the same format
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
