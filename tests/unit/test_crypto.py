"""Base64, signing keys and signed JSON (spec §2, §3)."""
from __future__ import annotations

import os
import stat

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.canonical import CanonicalJSONError
from shared.crypto import (SignatureError, SigningKey, decode_base64, encode_base64, sign_json,
                           verify_json_signature, verify_key_from_base64)

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
SIG_EMPTY = "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"
SIG_ONE_TWO = "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"


@pytest.fixture
def key():
    return SigningKey.from_seed(SEED, "1")


# --------------------------------------------------------------------------- base64

@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=70), st.booleans())
def test_base64_round_trip(data, urlsafe):
    s = encode_base64(data, urlsafe=urlsafe)
    assert "=" not in s
    assert not urlsafe or ("+" not in s and "/" not in s)
    assert decode_base64(s) == data
    assert decode_base64(s + "=" * (-len(s) % 4)) == data


def test_base64_known_values():
    assert encode_base64(b"") == ""
    assert encode_base64(b"f") == "Zg"
    assert encode_base64(b"fo") == "Zm8"
    assert encode_base64(b"foo") == "Zm9v"
    assert encode_base64(b"\xfb\xff", urlsafe=True) == "-_8"
    assert encode_base64(b"\xfb\xff") == "+/8"
    assert decode_base64("-_8") == decode_base64("+/8") == decode_base64("+/8=") == b"\xfb\xff"
    assert decode_base64("Zg==") == decode_base64("Zg") == b"f"


@pytest.mark.parametrize("garbage", ["Z", "Zg=", "Zg===", "Z===", "Zm9v!", "Zm 9v", "Zm9v\n",
                                     "é", "=Zg", "Zg==Zg", None, 12])
def test_base64_rejects_garbage(garbage):
    with pytest.raises(ValueError):
        decode_base64(garbage)


# --------------------------------------------------------------------------- keys

def test_key_ids_and_sign(key):
    assert key.version == "1" and key.key_id == "ed25519:1"
    sig = key.sign(b"hello")
    assert len(sig) == 64
    vk = verify_key_from_base64(key.public_key_base64)
    vk.verify(b"hello", sig)
    assert len(decode_base64(key.public_key_base64)) == 32


def test_generate_is_random_and_versioned():
    a, b = SigningKey.generate(), SigningKey.generate("b_2")
    assert a.version == "a_1" and b.key_id == "ed25519:b_2"
    assert a.public_key_base64 != b.public_key_base64


@pytest.mark.parametrize("version", ["", "a b", "a:1", "é", None])
def test_bad_key_version(version):
    with pytest.raises(ValueError):
        SigningKey.generate(version)


def test_bad_seed_length():
    with pytest.raises(ValueError):
        SigningKey.from_seed(encode_base64(b"x" * 31), "a_1")


def test_save_load_file_format(tmp_path, key):
    path = tmp_path / "signing.key"
    key.save(path)
    # the spec seed has non-zero trailing bits; it is written back in canonical form
    assert path.read_text() == f"ed25519 1 {encode_base64(decode_base64(SEED))}\n"
    assert path.read_text().startswith("ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = SigningKey.load(path)
    assert loaded.key_id == "ed25519:1" and loaded.public_key_base64 == key.public_key_base64
    os.chmod(path, 0o644)
    key.save(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["signing.key"]


def test_load_synapse_file_with_padding_and_blank_lines(tmp_path):
    path = tmp_path / "k"
    path.write_text(f"\ned25519 a_1 {SEED}=\n")
    assert SigningKey.load(path).version == "a_1"


@pytest.mark.parametrize("text", ["", "ed25519 a_1\n", "curve25519 a_1 " + SEED, "ed25519 a_1 !!!"])
def test_load_malformed_file(tmp_path, text):
    path = tmp_path / "k"
    path.write_text(text)
    with pytest.raises(ValueError):
        SigningKey.load(path)


def test_load_or_create(tmp_path):
    path = tmp_path / "k"
    created = SigningKey.load_or_create(path, version="x_9")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = SigningKey.load_or_create(path)
    assert again.key_id == "ed25519:x_9"
    assert again.public_key_base64 == created.public_key_base64
    assert sorted(os.listdir(tmp_path)) == ["k"]


def test_verify_key_from_base64_rejects_wrong_length():
    with pytest.raises(ValueError):
        verify_key_from_base64(encode_base64(b"x" * 31))
    with pytest.raises(ValueError):
        verify_key_from_base64("not base64!")
    assert isinstance(verify_key_from_base64(encode_base64(b"x" * 32)), nacl.signing.VerifyKey)


# --------------------------------------------------------------------------- signed JSON

def test_spec_vector_empty_object(key):
    assert sign_json({}, "domain", key) == {"signatures": {"domain": {"ed25519:1": SIG_EMPTY}}}


def test_spec_vector_one_two(key):
    signed = sign_json({"one": 1, "two": "Two"}, "domain", key)
    assert signed == {"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1": SIG_ONE_TWO}}}


def test_sign_json_mutates_and_keeps_unsigned_and_other_signatures(key):
    obj = {"one": 1, "two": "Two", "unsigned": {"age": 5},
           "signatures": {"other": {"ed25519:x": "abc"}}}
    out = sign_json(obj, "domain", key)
    assert out is obj
    assert obj["unsigned"] == {"age": 5}
    assert obj["signatures"] == {"other": {"ed25519:x": "abc"},
                                 "domain": {"ed25519:1": SIG_ONE_TWO}}


def test_sign_json_rejects_non_canonical(key):
    with pytest.raises(CanonicalJSONError):
        sign_json({"f": 1.5}, "domain", key)


def test_verify_json_signature(key):
    vk = verify_key_from_base64(key.public_key_base64)
    obj = sign_json({"one": 1, "two": "Two"}, "domain", key)
    assert verify_json_signature(obj, "domain", "ed25519:1", vk)
    obj["unsigned"] = {"anything": True}  # not covered by the signature
    assert verify_json_signature(obj, "domain", "ed25519:1", vk)
    assert not verify_json_signature(dict(obj, one=2), "domain", "ed25519:1", vk)
    assert not verify_json_signature(obj, "other", "ed25519:1", vk)
    assert not verify_json_signature(obj, "domain", "ed25519:2", vk)
    other = verify_key_from_base64(SigningKey.generate().public_key_base64)
    assert not verify_json_signature(obj, "domain", "ed25519:1", other)


@pytest.mark.parametrize("obj", [
    {}, {"signatures": None}, {"signatures": {"domain": "x"}},
    {"signatures": {"domain": {"ed25519:1": "!!!"}}},
    {"signatures": {"domain": {"ed25519:1": encode_base64(b"x" * 63)}}},
    {"signatures": {"domain": {"ed25519:1": 5}}},
    {"f": 1.5, "signatures": {"domain": {"ed25519:1": SIG_EMPTY}}},
])
def test_verify_json_signature_never_raises(key, obj):
    assert not verify_json_signature(obj, "domain", "ed25519:1", key.verify_key)


def test_verify_ignores_unknown_algorithm(key):
    obj = {"signatures": {"domain": {"curve25519:1": SIG_EMPTY}}}
    assert not verify_json_signature(obj, "domain", "curve25519:1", key.verify_key)
    assert not verify_json_signature({"signatures": {"domain": {"ed25519:1": SIG_EMPTY}}},
                                     "domain", "ed25519:1", None)


def test_signature_error_is_exception():
    assert issubclass(SignatureError, Exception)
