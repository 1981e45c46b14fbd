"""A certificate authority for the tests: a root, an intermediate, and leaf certificates
for any DNS names and IP addresses, so every test runs with TLS verification on.

`bundle` is the root's PEM (what `ca_file` / `--ca-file` trusts); `issue()` writes a leaf's
full chain (leaf, then the intermediate, as Let's Encrypt's fullchain.pem) and its key.
"""
from __future__ import annotations

import datetime
import ipaddress
import itertools
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_PEM = serialization.Encoding.PEM


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer, public_key, signer, *, ca: bool, sans=None, days=30):
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                            critical=False)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(signer, hashes.SHA256())


class TestCA:
    __test__ = False          # not a pytest class

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._root_key = ec.generate_private_key(ec.SECP256R1())
        root = _cert(_name("fedstack test root CA"), _name("fedstack test root CA"),
                     self._root_key.public_key(), self._root_key, ca=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._inter = _cert(_name("fedstack test intermediate CA"), root.subject,
                            self._key.public_key(), self._root_key, ca=True)
        self.bundle = str(self.dir / "ca.pem")
        Path(self.bundle).write_bytes(root.public_bytes(_PEM))
        self._n = itertools.count(1)

    def issue(self, *names: str, days: int = 30) -> tuple[str, str]:
        """(full-chain cert path, key path) for a leaf valid for `names` (DNS or IP)."""
        sans = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = _cert(_name(names[0]), self._inter.subject, key.public_key(), self._key,
                     ca=False, sans=sans, days=days)
        k = next(self._n)
        cert_path, key_path = self.dir / f"leaf{k}.crt", self.dir / f"leaf{k}.key"
        cert_path.write_bytes(leaf.public_bytes(_PEM) + self._inter.public_bytes(_PEM))
        key_path.write_bytes(key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert_path), str(key_path)
