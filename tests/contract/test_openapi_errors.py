"""The error answers the four OpenAPI documents list are the ones the services give
(shared/api_doc.py): never FastAPI's 422, a 400 Matrix error `{errcode, error}` wherever an
operation takes parameters or a body, the internal secret's 403 on `/_internal/` routes and
the messaging API token's 401; and a real homeserver (its four processes, on real sockets)
answers invalid requests exactly as its documents say."""
from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest

from services.messaging.auth import OPEN_PATHS
from shared.contracts import messaging as messaging_c
from shared.contracts import pdu as pdu_c
from shared.contracts import transaction as tx_c
from shared.contracts import transport as transport_c
from shared.internal import SECRET_HEADER
from tests.processes import start_homeserver
from tools.export_openapi import SERVICES, document, path_of

MATRIX_ERROR = {"$ref": "#/components/schemas/MatrixError"}
ERRCODE = re.compile(r"^M_[A-Z_]+$")


def _checked_in(service: str) -> dict:
    return json.loads(path_of(service).read_text())


def _operations(doc: dict):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            yield f"{method.upper()} {path}", path, op


def _schema(response: dict):
    return response.get("content", {}).get("application/json", {}).get("schema")


def _problems(service: str, doc: dict) -> list[str]:
    out = []
    schemas = doc.get("components", {}).get("schemas", {})
    out += [f"schema {n} is still listed" for n in ("HTTPValidationError", "ValidationError")
            if n in schemas]
    error = schemas.get("MatrixError", {})
    if error.get("required") != ["errcode", "error"] or any(
            error.get("properties", {}).get(k, {}).get("type") != "string" for k in ("errcode", "error")):
        out.append(f"MatrixError schema is not {{errcode: string, error: string}}: {error}")
    for name, path, op in _operations(doc):
        responses = op["responses"]
        if "422" in responses:
            out.append(f"{name} lists 422")
        wanted = set()
        if op.get("parameters") or op.get("requestBody"):
            wanted.add("400")
        if service != "messaging" and path.startswith("/_internal/"):
            wanted.add("403")
        if service == "messaging" and path not in OPEN_PATHS:
            wanted.add("401")
        for status in sorted(wanted):
            if status not in responses:
                out.append(f"{name} lacks {status}")
            elif _schema(responses[status]) != MATRIX_ERROR:
                out.append(f"{name}: {status} is not a MatrixError body: {responses[status]}")
        for status, response in responses.items():
            if status.startswith("4") and _schema(response) != MATRIX_ERROR:
                out.append(f"{name}: {status} is not a MatrixError body")
    return out


@pytest.mark.parametrize("service", SERVICES)
def test_documents_list_matrix_errors_never_422(service):
    """The checked-in document and the one the app serves now."""
    for where, doc in (("openapi/" + service + ".json", _checked_in(service)),
                       ("the app", document(service))):
        ops = list(_operations(doc))
        assert sum(1 for _, _, op in ops if "400" in op["responses"]) >= 5, (where, "too few 400s")
        problems = _problems(service, doc)
        assert not problems, f"{where}:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- on the wire

@pytest.fixture(scope="module")
def homeserver(tmp_path_factory):
    hs = start_homeserver(tmp_path_factory.mktemp("openapi-errors"))
    try:
        yield hs
    finally:
        hs.stop()


# (service, port name, scheme, method, documented path, concrete path, headers, body,
#  the status and errcode expected)
SECRET = object()     # stands for the homeserver's internal secret header
TOKEN = object()      # for its API token
CASES = [
    ("transport", "federation", "https", "PUT", "/_matrix/federation/v1/send/{txn_id}",
     "/_matrix/federation/v1/send/t1", {}, b"{not json", (400, "M_NOT_JSON")),
    ("transport", "transport", "http", "GET", transport_c.KEYS,
     "/_internal/transport/v1/keys/remote.test?minimum_valid_until_ts=soon", SECRET, None,
     (400, "M_BAD_JSON")),
    ("transport", "transport", "http", "POST", transport_c.REQUEST, transport_c.REQUEST, {},
     b"{}", (403, "M_FORBIDDEN")),
    ("transaction", "transaction", "http", "POST", tx_c.STATE_GROUPS, tx_c.STATE_GROUPS, SECRET,
     b'{"groups": "all"}', (400, "M_BAD_JSON")),
    ("transaction", "transaction", "http", "POST", tx_c.STATE_GROUPS, tx_c.STATE_GROUPS, {},
     b'{"groups": [1]}', (403, "M_FORBIDDEN")),
    ("pdu", "pdu", "http", "POST", pdu_c.ROOMS, pdu_c.ROOMS, SECRET, b'{"preset": "open"}',
     (400, "M_BAD_JSON")),
    ("pdu", "pdu", "http", "POST", pdu_c.INBOUND, pdu_c.INBOUND, SECRET, b"",
     (400, "M_NOT_JSON")),
    ("pdu", "pdu", "http", "POST", pdu_c.ROOMS, pdu_c.ROOMS, {}, b"{}", (403, "M_FORBIDDEN")),
    ("messaging", "messaging", "http", "POST", messaging_c.ROOMS, messaging_c.ROOMS, TOKEN,
     b'{"creator": ', (400, "M_NOT_JSON")),
    ("messaging", "messaging", "http", "POST", messaging_c.ROOMS, messaging_c.ROOMS, {},
     b"{}", (401, "M_MISSING_TOKEN")),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[3]} {c[4]} {c[8][0]}" for c in CASES])
def test_invalid_requests_are_answered_as_documented(homeserver, case):
    service, port, scheme, method, template, path, headers, body, expected = case
    hs = homeserver
    if headers is SECRET:
        headers = {SECRET_HEADER: hs.settings.secret()}
    elif headers is TOKEN:
        headers = {"authorization": f"Bearer {hs.settings.token()}"}
    url = hs.settings.local_url(hs.ports[port], scheme) + path
    r = httpx.request(method, url, content=body, headers={"content-type": "application/json",
                                                          **headers},
                      verify=False, timeout=10)
    answer = r.json()
    assert (r.status_code, answer.get("errcode")) == expected, r.text
    assert ERRCODE.match(answer["errcode"]) and isinstance(answer.get("error"), str), answer

    doc = _checked_in(service)
    documented = doc["paths"][template][method.lower()]["responses"]
    assert str(r.status_code) in documented, (f"{method} {template} answered {r.status_code}, "
                                              f"documented only {sorted(documented)}")
    schema = _schema(documented[str(r.status_code)])
    assert schema == MATRIX_ERROR, schema
    jsonschema.validate(answer, {**schema, "components": doc["components"]})
