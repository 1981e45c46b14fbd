"""The server ACL matcher (shared/server_acl.py) against the spec's rules."""
from __future__ import annotations

import time

import pytest

from shared.server_acl import ServerAcl, glob_matches, is_ip_literal, strip_port


@pytest.mark.parametrize("name,host", [
    ("evil.com", "evil.com"), ("evil.com:8448", "evil.com"), ("evil.com:1234", "evil.com"),
    ("1.2.3.4:80", "1.2.3.4"), ("[::1]:8448", "[::1]"), ("[::1]", "[::1]"), ("a.b:", "a.b:"),
])
def test_strip_port(name, host):
    assert strip_port(name) == host


@pytest.mark.parametrize("host,ip", [
    ("1.2.3.4", True), ("[::1]", True), ("[2001:db8::1]", True), ("example.com", False),
    ("1.2.3.4.example", False), ("[not-ip]", False), ("::1", True),
])
def test_is_ip_literal(host, ip):
    assert is_ip_literal(host) is ip


@pytest.mark.parametrize("glob,name,match", [
    ("*", "", True), ("*", "anything.example", True), ("?", "a", True), ("?", "", False),
    ("?", "ab", False), ("*.evil.com", "a.evil.com", True), ("*.evil.com", "evil.com", False),
    ("*evil.com", "evil.com", True), ("ev?l.com", "evil.com", True), ("ev?l.com", "eviil.com", False),
    ("a*b*c", "abc", True), ("a*b*c", "axxbyyc", True), ("a*b*c", "axxbyy", False),
    ("evil.com", "evil.com.au", False), ("e.il.com", "evil.com", False),   # '.' is literal
    ("[a]", "a", False), ("[a]", "[a]", True), ("**", "x", True),
])
def test_glob(glob, name, match):
    assert glob_matches(glob, name) is match


def test_no_allow_denies_everyone():
    assert not ServerAcl({}).allows("good.example")
    assert not ServerAcl({"allow": []}).allows("good.example")
    assert not ServerAcl({"allow": "*"}).allows("good.example")   # not a list: empty


def test_order_deny_before_allow():
    acl = ServerAcl({"allow": ["*"], "deny": ["evil.com", "*.evil.com"]})
    assert acl.allows("good.example")
    assert not acl.allows("evil.com")
    assert not acl.allows("sub.evil.com:8448")
    assert acl.allows("notevil.com")


def test_port_is_never_considered():
    acl = ServerAcl({"allow": ["*"], "deny": ["evil.com"]})
    for name in ("evil.com", "evil.com:8448", "evil.com:1234"):
        assert not acl.allows(name)
    # entries carry no port: one that does matches no server name (ports are stripped)
    assert ServerAcl({"allow": ["*"], "deny": ["evil.com:8448"]}).allows("evil.com:8448")


def test_case_insensitive():
    acl = ServerAcl({"allow": ["Good.Example"], "deny": ["EVIL.*"]})
    assert acl.allows("good.example")
    assert not acl.allows("evil.com")


@pytest.mark.parametrize("value,allowed", [(False, False), (True, True), (None, True), ("false", True),
                                           (0, True)])
def test_allow_ip_literals(value, allowed):
    content = {"allow": ["*"]}
    if value is not None:
        content["allow_ip_literals"] = value
    acl = ServerAcl(content)
    assert acl.allows("1.2.3.4:8448") is allowed
    assert acl.allows("[::1]:8448") is allowed
    assert acl.allows("example.com")


def test_ip_literal_may_still_be_denied_or_allowed_by_list():
    assert not ServerAcl({"allow": ["*"], "deny": ["1.2.3.*"]}).allows("1.2.3.4")
    assert ServerAcl({"allow": ["1.2.3.4"]}).allows("1.2.3.4:8448")
    assert not ServerAcl({"allow": ["1.2.3.4"]}).allows("1.2.3.5")


def test_non_string_entries_ignored():
    acl = ServerAcl({"allow": [1, None, {"a": 1}, ["*"], "good.example"], "deny": [True, 5]})
    assert acl.allows("good.example")
    assert not acl.allows("other.example")
    assert ServerAcl({"allow": ["*"], "deny": "evil.com"}).allows("evil.com")   # deny not a list
    assert not ServerAcl(None).allows("x.example")
    assert not ServerAcl(["*"]).allows("x.example")


def test_memoised_answers_stay_right():
    acl = ServerAcl({"allow": ["*"], "deny": ["evil.com"]})
    for _ in range(3):
        assert not acl.allows("evil.com") and acl.allows("good.example")


def test_hostile_glob_is_not_exponential():
    """Many stars against a long name that almost matches: a backtracking regex takes
    exponential time here; the matcher stays well under a second."""
    glob = "*a" * 30 + "b"
    name = "a" * 250
    t0 = time.perf_counter()
    assert ServerAcl({"allow": ["*"], "deny": [glob]}).allows(name)
    assert not glob_matches(glob, name)
    assert time.perf_counter() - t0 < 1.0
