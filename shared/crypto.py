"""Unpadded base64, Ed25519 server signing keys and signed JSON (spec §2, §3).

Invariants:
- `encode_base64` never emits padding; `decode_base64` accepts padded or unpadded input in
  the standard or URL-safe alphabet and raises ValueError on anything else.
- A `SigningKey` is a 32-byte Ed25519 seed plus a key version matching ``[a-zA-Z0-9_]+``;
  its `key_id` is ``"ed25519:" + version``. Key files use the Synapse format
  ``ed25519 <version> <unpadded b64 seed>\\n`` and are written with mode 0600.
- `sign_json` signs the canonical JSON of the object without ``signatures``/``unsigned``;
  `verify_json_signature` checks exactly that and never raises.
"""
from __future__ import annotations

import base64
import binascii
import os
import re

import nacl.signing

from shared.canonical import canonical_json

_VERSION_RE = re.compile(r"[a-zA-Z0-9_]+\Z")
_URLSAFE_TO_STD = str.maketrans("-_", "+/")


class SignatureError(Exception):
    """A signature is missing, malformed or does not verify."""


# --------------------------------------------------------------------------- base64

def encode_base64(b: bytes, urlsafe: bool = False) -> str:
    """Unpadded base64 (standard alphabet, or URL-safe `-`/`_` if `urlsafe`)."""
    enc = base64.urlsafe_b64encode(b) if urlsafe else base64.b64encode(b)
    return enc.rstrip(b"=").decode("ascii")


def decode_base64(s: str) -> bytes:
    """Decode padded/unpadded, standard/URL-safe base64; ValueError on garbage."""
    if isinstance(s, (bytes, bytearray)):
        try:
            s = bytes(s).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("base64 must be ASCII") from None
    if not isinstance(s, str):
        raise ValueError(f"base64 must be a string, not {type(s).__name__}")
    body = s.rstrip("=")
    pad = len(s) - len(body)
    if pad > 2 or (pad and len(s) % 4) or len(body) % 4 == 1:
        raise ValueError("invalid base64 length or padding")
    body = body.translate(_URLSAFE_TO_STD)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from None


# --------------------------------------------------------------------------- keys

def verify_key_from_base64(s: str) -> nacl.signing.VerifyKey:
    """A nacl VerifyKey from an unpadded base64 32-byte Ed25519 public key (ValueError)."""
    raw = decode_base64(s)
    if len(raw) != 32:
        raise ValueError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
    return nacl.signing.VerifyKey(raw)


class SigningKey:
    """An Ed25519 server signing key with its key version (e.g. ``a_1``)."""

    def __init__(self, seed: bytes, version: str = "a_1"):
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise ValueError(f"invalid key version: {version!r}")
        if len(seed) != 32:
            raise ValueError("Ed25519 seed must be 32 bytes")
        self.version = version
        self._key = nacl.signing.SigningKey(bytes(seed))

    def __repr__(self) -> str:
        return f"SigningKey({self.key_id!r}, public={self.public_key_base64!r})"

    @property
    def key_id(self) -> str:
        return "ed25519:" + self.version

    @property
    def seed(self) -> bytes:
        return bytes(self._key)

    @property
    def verify_key(self) -> nacl.signing.VerifyKey:
        return self._key.verify_key

    @property
    def public_key_base64(self) -> str:
        return encode_base64(bytes(self._key.verify_key))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte detached Ed25519 signature of `data`."""
        return self._key.sign(bytes(data)).signature

    @classmethod
    def generate(cls, version: str = "a_1") -> "SigningKey":
        return cls(os.urandom(32), version)

    @classmethod
    def from_seed(cls, seed_b64: str, version: str = "a_1") -> "SigningKey":
        return cls(decode_base64(seed_b64), version)

    # ---- Synapse key file format

    def to_line(self) -> str:
        return f"ed25519 {self.version} {encode_base64(self.seed)}\n"

    @classmethod
    def from_line(cls, text: str) -> "SigningKey":
        """Parse the first non-empty line of a key file (ValueError if malformed)."""
        for line in text.splitlines():
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or parts[0] != "ed25519":
                raise ValueError("signing key file: expected 'ed25519 <version> <seed>'")
            return cls.from_seed(parts[2], parts[1])
        raise ValueError("signing key file is empty")

    @classmethod
    def load(cls, path) -> "SigningKey":
        with open(os.fspath(path), encoding="ascii") as f:
            return cls.from_line(f.read())

    def _write_private(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, self.to_line().encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def save(self, path) -> None:
        """Atomically (re)write the key file with mode 0600."""
        path = os.fspath(path)
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        self._write_private(tmp)
        os.replace(tmp, path)

    @classmethod
    def load_or_create(cls, path, version: str = "a_1") -> "SigningKey":
        """Load the key at `path`, or create it; concurrent creators agree on one key."""
        path = os.fspath(path)
        if os.path.exists(path):
            return cls.load(path)
        key = cls.generate(version)
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.new"
        key._write_private(tmp)
        try:
            os.link(tmp, path)  # atomic create-if-absent
        except FileExistsError:
            return cls.load(path)
        finally:
            os.unlink(tmp)
        return key


# --------------------------------------------------------------------------- signed JSON

def _signable(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def sign_json(obj: dict, signing_name: str, key: SigningKey) -> dict:
    """Sign `obj` in place (spec §2) and return it.

    The canonical JSON of `obj` without ``signatures`` and ``unsigned`` is signed and the
    signature merged into ``obj["signatures"][signing_name][key.key_id]``; ``unsigned`` is
    left untouched. Raises CanonicalJSONError if `obj` is not canonical-encodable.
    """
    sig = key.sign(canonical_json(_signable(obj)))
    signatures = obj.setdefault("signatures", {})
    signatures.setdefault(signing_name, {})[key.key_id] = encode_base64(sig)
    return obj


def _as_verify_key(verify_key):
    if isinstance(verify_key, (bytes, bytearray)):
        return nacl.signing.VerifyKey(bytes(verify_key))
    if isinstance(verify_key, str):
        return verify_key_from_base64(verify_key)
    if isinstance(verify_key, SigningKey):
        return verify_key.verify_key
    return verify_key


def verify_json_signature(obj: dict, signing_name: str, key_id: str, verify_key) -> bool:
    """True iff ``obj["signatures"][signing_name][key_id]`` is a valid Ed25519 signature over
    the canonical JSON of `obj` without ``signatures``/``unsigned``. Never raises."""
    try:
        if not key_id.startswith("ed25519:"):
            return False
        sig = decode_base64(obj["signatures"][signing_name][key_id])
        if len(sig) != 64:
            return False
        _as_verify_key(verify_key).verify(canonical_json(_signable(obj)), sig)
        return True
    except Exception:  # noqa: BLE001 - any failure (bad sig, bad b64, bad key) = unsigned
        return False
