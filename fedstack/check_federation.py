"""`fedstack check-federation NAME`: resolve NAME the way our transport does before sending,
and print each step, like the federation testers operators use.

Steps printed: the .well-known and SRV look-ups and what they decided (Host header, SNI,
the name the certificate must match); every target and its addresses (and whether the
SSRF guard lets us connect); for each address, the certificate presented (subject, names,
issuer, validity) and whether it verifies for that name; the key server's answer
(`/_matrix/key/v2/server`, checked as we check it); with `--data-dir` and
`--server-name`, whether a request signed with our key is accepted (anything but 401).

Exit status 0 when NAME is reachable with a valid certificate, its keys verify and (when
asked) our signed request is accepted; 1 otherwise. Uses the transport's own code
(services/transport/discovery.py, outbound.py), so what it prints is what sending does.
"""
from __future__ import annotations

import asyncio
import ssl
import tempfile

from services.transport.discovery import DiscoveryFailed
from services.transport.dns_lookup import LookupFailed
from services.transport.keys import parse_key_response
from services.transport.outbound import FederationClient
from services.transport.servername import InvalidServerName, is_ip_literal
from shared.crypto import SigningKey
from shared.settings import Settings

SIGNED_PATH = "/_matrix/federation/v1/event/$fedstack-check-federation"


def check_federation(args) -> int:
    overrides = {k: v for k, v in (("resolver", args.resolver), ("ca_file", args.ca_file))
                 if v is not None}
    if args.no_verify_tls:
        overrides["verify_tls"] = False
    if args.allow_private_destinations:
        overrides["allow_private_destinations"] = True
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="fedstack-check-")
    settings = Settings.from_env(server_name=args.server_name or "check-federation.invalid",
                                 data_dir=data_dir, **overrides)
    key = SigningKey.load(settings.path("signing_key")) if args.data_dir else SigningKey.generate()
    signed = bool(args.data_dir and args.server_name)
    return asyncio.run(_check(args.name, settings, key, signed))


async def _check(name: str, settings: Settings, key: SigningKey, signed: bool) -> int:
    client = FederationClient(settings, key)
    try:
        ok = await _resolve_and_connect(client, name)
        ok = await _keys(client, name) and ok
        if signed:
            ok = await _signed(client, name) and ok
    finally:
        await client.aclose()
    print("RESULT:", "OK" if ok else "FAILED")
    return 0 if ok else 1


async def _resolve_and_connect(client: FederationClient, name: str) -> bool:
    print(f"server name: {name}")
    try:
        route = await client.discovery.route(name)
    except (InvalidServerName, DiscoveryFailed) as exc:
        for step in getattr(exc, "steps", ()):
            print(f"  {step}")
        print(f"  cannot resolve: {exc}")
        return False
    for step in route.steps or ("IP literal or explicit port: no .well-known, no SRV",):
        print(f"  {step}")
    print(f"  Host header: {route.host_header}; certificate must be valid for: {route.tls_name}; "
          f"SNI: {route.sni or '(none: an IP address)'}")
    reachable = False
    for host, port in route.targets:
        try:
            ips = [host] if is_ip_literal(host) else await client.dns.addresses(host)
        except LookupFailed as exc:
            print(f"  target {host}:{port}: look-up failed: {exc}")
            continue
        print(f"  target {host}:{port}: addresses {', '.join(ips) or '(none)'}")
        for ip in ips:
            if client.policy.refuses(ip):
                print(f"    {ip}: a private address, refused (--allow-private-destinations)")
                continue
            reachable = await _tls(client, ip, port, route) or reachable
    return reachable


async def _tls(client: FederationClient, ip: str, port: int, route) -> bool:
    ctx = client.ssl if client.ssl is not False else _unverified()
    name = route.sni or route.tls_name
    try:
        _r, w = await asyncio.wait_for(asyncio.open_connection(ip, port, ssl=ctx,
                                                              server_hostname=name), 10)
        verdict = "verified" if client.ssl is not False else "NOT verified (--no-verify-tls)"
    except ssl.SSLCertVerificationError as exc:
        print(f"    {ip}:{port}: certificate REFUSED: {exc.verify_message}")
        _r, w = await asyncio.wait_for(asyncio.open_connection(
            ip, port, ssl=_unverified(), server_hostname=name), 10)
        _describe(w)
        w.close()
        return False
    except (OSError, TimeoutError) as exc:
        print(f"    {ip}:{port}: cannot connect: {type(exc).__name__}: {exc}")
        return False
    print(f"    {ip}:{port}: TLS {verdict} for {route.tls_name}")
    _describe(w)
    w.close()
    return True


def _unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _describe(writer) -> None:
    from cryptography import x509
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(n.value) for n in names]
    except x509.ExtensionNotFound:
        sans = []
    print(f"      subject: {cert.subject.rfc4514_string()}; names: {', '.join(sans) or '(none)'}")
    print(f"      issuer: {cert.issuer.rfc4514_string()}")
    print(f"      valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
          f"until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


async def _keys(client: FederationClient, name: str) -> bool:
    resp = await client.request(name, "GET", "/_matrix/key/v2/server", sign=False, timeout_s=15)
    if resp["status"] != 200:
        print(f"key server: FAILED ({resp['status']} {resp['error'] or resp['body']})")
        return False
    keys = parse_key_response(name, resp["body"])
    if keys is None:
        print("key server: answer REFUSED (not for this name, or not self-signed)")
        return False
    print(f"key server: OK, keys {', '.join(sorted(keys['verify_keys']))}, "
          f"valid until {keys['valid_until_ts']} (ms)")
    return True


async def _signed(client: FederationClient, name: str) -> bool:
    resp = await client.request(name, "GET", SIGNED_PATH, timeout_s=30)
    body = resp["body"] if isinstance(resp["body"], dict) else {}
    what = f"{resp['status']} {body.get('errcode', '')} {body.get('error', resp['error'] or '')}"
    if resp["status"] in (0, 401):
        print(f"signed request from {client.server_name}: REFUSED ({what.strip()})")
        return False
    print(f"signed request from {client.server_name}: accepted (answered {what.strip()})")
    return True

