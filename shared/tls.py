"""TLS: the self-signed certificate a new data dir starts with, the client context that
checks remote servers, and reloading our listener's certificate.

Invariants:
- Remote certificates are verified by default, against the system's CAs plus `ca_file`
  when given; which name is checked is the caller's (`server_hostname` per connection:
  see services/transport/discovery.py). Only `verify_tls=False` turns checking off.
- `reload_server_cert` changes a live listener's certificate only if the new chain and
  key load together; otherwise the old one stays and the error is raised.
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path


def ensure_self_signed_cert(cert_path: Path, key_path: Path, server_name: str) -> None:
    """Write a self-signed certificate valid for the server name's host (and loopback)."""
    if cert_path.exists() and key_path.exists():
        return
    # cryptography (7 MB) only here: service processes import this module for the rest
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    host = server_name.rsplit(":", 1)[0] if not server_name.endswith("]") else server_name
    host = host.strip("[]")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        ip = ipaddress.ip_address(host)
        if str(ip) != "127.0.0.1":
            sans.append(x509.IPAddress(ip))
    except ValueError:
        if host != "localhost":
            sans.append(x509.DNSName(host))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def client_context(verify: bool, ca_file: str = "") -> ssl.SSLContext | bool:
    """The SSL setting for outbound federation (aiohttp's `ssl=`): False disables checks."""
    if not verify:
        return False
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def reload_server_cert(ctx: ssl.SSLContext, cert_path: str, key_path: str) -> None:
    """Load a new certificate chain (full chain file: leaf first) and key into a listener's
    context: new connections get it, open ones keep theirs."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.load_cert_chain(cert_path, key_path)       # raises, and `ctx` is untouched
    ctx.load_cert_chain(cert_path, key_path)
