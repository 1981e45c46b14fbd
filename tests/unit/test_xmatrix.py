"""X-Matrix request signing, header parsing and verification (spec §4)."""
from __future__ import annotations

import pytest

from shared.crypto import SigningKey
from shared.xmatrix import (XMatrixError, parse_authorization, request_signing_json,
                            sign_request, verify_request)

KEY = SigningKey.from_seed("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1", "1")
URI = "/_matrix/federation/v1/state_ids/%21r%3Adomain?event_id=%24abc"
SPEC_SIG = "jX4x1C1ftfVc4C523ycR4XvPCkCrWSPyaj1AGVq89xhGrpBHzAyU4E5rdZcZhaiqrlBBHcEpte57mDSnCkHDBw"


def test_request_signing_json():
    assert request_signing_json("GET", "/x", "o", "d") == {
        "method": "GET", "uri": "/x", "origin": "o", "destination": "d"}
    assert request_signing_json("PUT", "/x", "o", "d", {}) == {
        "method": "PUT", "uri": "/x", "origin": "o", "destination": "d", "content": {}}


def test_spec_vector():
    header = sign_request("GET", URI, "domain", "remote.example:8448", KEY)
    assert header == ('X-Matrix origin="domain",destination="remote.example:8448",'
                      f'key="ed25519:1",sig="{SPEC_SIG}"')
    assert verify_request("GET", URI, "domain", "remote.example:8448", None, "ed25519:1",
                          SPEC_SIG, KEY.verify_key)


def test_round_trip_with_content():
    content = {"pdus": [{"a": "é"}], "edus": []}
    header = sign_request("PUT", "/_matrix/federation/v1/send/1", "o.example", "d.example",
                          KEY, content)
    auth = parse_authorization(header)
    assert auth["origin"] == "o.example" and auth["destination"] == "d.example"
    assert auth["key"] == "ed25519:1"
    args = ("PUT", "/_matrix/federation/v1/send/1", "o.example", "d.example")
    assert verify_request(*args, content, auth["key"], auth["sig"], KEY.verify_key)
    assert not verify_request(*args, {"pdus": []}, auth["key"], auth["sig"], KEY.verify_key)
    assert not verify_request(*args, None, auth["key"], auth["sig"], KEY.verify_key)


def test_verify_request_refusals():
    args = ("GET", URI, "domain", "remote.example:8448")
    good = (*args, None, "ed25519:1", SPEC_SIG, KEY.verify_key)
    assert verify_request(*good)
    # GET signed without content must not verify with "content": {}
    assert not verify_request(*args, {}, "ed25519:1", SPEC_SIG, KEY.verify_key)
    assert not verify_request("PUT", *args[1:], None, "ed25519:1", SPEC_SIG, KEY.verify_key)
    assert not verify_request("GET", URI + "&x=1", *args[2:], None, "ed25519:1", SPEC_SIG,
                              KEY.verify_key)
    assert not verify_request("GET", URI, "domain", "other.example", None, "ed25519:1",
                              SPEC_SIG, KEY.verify_key)
    assert not verify_request(*args, None, "ed25519:1", SPEC_SIG,
                              SigningKey.generate().verify_key)
    assert not verify_request(*args, None, "ed25519:1", "garbage!", KEY.verify_key)
    assert not verify_request(*args, None, "ed25519:1", SPEC_SIG[:-2], KEY.verify_key)
    assert not verify_request(*args, {"f": 1.5}, "ed25519:1", SPEC_SIG, KEY.verify_key)


EXPECTED = {"origin": "origin.example", "destination": "dest.example:8448",
            "key": "ed25519:a_1", "sig": "ABC+/d"}


@pytest.mark.parametrize("header", [
    'X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:a_1",sig="ABC+/d"',
    'X-Matrix origin=origin.example,destination=dest.example:8448,key=ed25519:a_1,sig=ABC+/d',
    'x-matrix ORIGIN="origin.example", Destination="dest.example:8448" ,\tKey="ed25519:a_1" , SIG="ABC+/d"',
    'X-Matrix  sig="ABC+/d",key="ed25519:a_1",destination="dest.example:8448",origin="origin.example"',
    'X-Matrix origin="orig\\in.example",destination="dest.example:8448",key="ed25519:a_1",sig="ABC\\+/d"',
    'X-Matrix\torigin = "origin.example",destination="dest.example:8448",key="ed25519:a_1",sig="ABC+/d",',
    'X-Matrix origin="origin.example",unknown="a,b=c",destination="dest.example:8448",'
    'key="ed25519:a_1",sig="ABC+/d",other=bare',
    '  X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:a_1",sig="ABC+/d"  ',
    'X-Matrix origin="origin.example",,destination="dest.example:8448",key="ed25519:a_1",sig="ABC+/d"',
    b'X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:a_1",sig="ABC+/d"',
])
def test_parse_lenient(header):
    assert parse_authorization(header) == EXPECTED


def test_parse_without_destination_and_first_wins():
    auth = parse_authorization('X-Matrix origin="[::1]:8448",key="ed25519:x",sig="s",origin="b"')
    assert auth == {"origin": "[::1]:8448", "destination": None, "key": "ed25519:x", "sig": "s"}


def test_parse_escaped_quote_and_comma_in_value():
    auth = parse_authorization('X-Matrix origin="o.example",key="k\\"x,y",sig=s')
    assert auth["key"] == 'k"x,y' and auth["sig"] == "s"


@pytest.mark.parametrize("header", [
    "", "Bearer abc", "X-Matrix", "X-Matrixorigin=o,key=k,sig=s",
    'Basic origin="o",key="k",sig="s"',
    'X-Matrix key="ed25519:1",sig="s"',
    'X-Matrix origin="o.example",sig="s"',
    'X-Matrix origin="o.example",key="ed25519:1"',
    'X-Matrix origin="o.example",key="ed25519:1",sig=""',
    'X-Matrix origin="",key="ed25519:1",sig="s"',
    'X-Matrix origin="bad origin",key="ed25519:1",sig="s"',
    'X-Matrix origin="o.example:99999999",key="ed25519:1",sig="s"',
    'X-Matrix origin="o.example",key="ed25519:1",sig="s',
    'X-Matrix origin="o.example",key="ed25519:1",sig="s\\',
    'X-Matrix origin="o.example" junk,key="ed25519:1",sig="s"',
    'X-Matrix origin="o.example",key,sig="s"',
    'X-Matrix origin="o.example",="x",key="k",sig="s"',
    None,
])
def test_parse_refusals(header):
    with pytest.raises(XMatrixError):
        parse_authorization(header)


def test_xmatrix_error_is_value_error():
    assert issubclass(XMatrixError, ValueError)
