"""The `fedstack` command.

- `fedstack up --server-name NAME --data-dir DIR --port P --api-port A` starts one whole
  homeserver as four uvicorn processes on loopback, restarts any that exits (see
  fedstack/supervisor.py) and stops them on Ctrl-C / SIGTERM.
  First start creates the signing key, the TLS certificate and the internal secret in DIR;
  later starts reuse them (and the database), so a homeserver resumes where it stopped.
- `fedstack serve SERVICE` runs one service from `FEDSTACK_*` environment settings (compose).
  The transport reloads its TLS certificate on SIGHUP (`up` passes SIGHUP on to it).
- `fedstack check-federation NAME` resolves NAME as a sender would and prints each step.
- `fedstack migrate --data-dir DIR [--database-url URL]` brings the transaction service's
  database to this code's schema revision (`up` does it too before starting anything);
  a database written by a newer release is refused, exit status 1.
- `fedstack copy-db --from URL --to URL` copies a stopped homeserver's database to another
  (sqlite to PostgreSQL, say): see fedstack/copy_db.py.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from shared.crypto import SigningKey
from shared.server_keys import OLD_KEYS_FILE
from shared.settings import Settings, ensure_internal_secret, ensure_secret_file

SERVICES = ("transaction", "pdu", "transport", "messaging")
FACTORIES = {s: f"services.{s}.app:create_app" for s in SERVICES}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at `host`, for a service to bind a moment later. Chosen at random
    below the kernel's ephemeral range (32768-60999 by default), where port 0 would pick
    it, so that the local port of some outgoing connection cannot take it in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(200):
        port = random.SystemRandom().randint(20000, 32000)   # not the seedable global one
        with socket.socket(family) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(family) as s:      # that range is crowded: let the kernel choose
        s.bind((host, 0))
        return s.getsockname()[1]


def prepare_data_dir(settings: Settings) -> None:
    """Create the signing key, TLS certificate and internal secret once."""
    from shared.tls import ensure_self_signed_cert   # cryptography: 7 MB, not for `serve`
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    SigningKey.load_or_create(settings.path("signing_key"))
    ensure_self_signed_cert(settings.path("tls_cert"), settings.path("tls_key"), settings.server_name)
    if not settings.internal_secret:
        ensure_internal_secret(settings.data_dir)
    if not settings.api_token:
        ensure_secret_file(settings.data_dir, "api_token")


def rotate_key(settings: Settings) -> str:
    """Move the current signing key to `old_signing_keys.json` (public part, expired now)
    and write a new key with the next version; returns the new key id."""
    import json
    path = settings.path("signing_key")
    old = SigningKey.load(path)
    old_file = Path(settings.data_dir) / OLD_KEYS_FILE
    olds = json.loads(old_file.read_text()) if old_file.exists() else {}
    olds[old.key_id] = {"key": old.public_key_base64, "expired_ts": int(time.time() * 1000)}
    old_file.write_text(json.dumps(olds, indent=1))
    n = len(olds) + 1
    new = SigningKey.generate(version=f"a_{n}")
    while new.key_id in olds:
        n += 1
        new = SigningKey.generate(version=f"a_{n}")
    tmp = path.with_suffix(".new")
    new.save(tmp)
    tmp.replace(path)
    return new.key_id


def _uvicorn_config(app, host, port, **kw):
    """No proxy-headers layer: nothing here reads the client address (federation peers are
    identified by their X-Matrix signature), and it is one more layer per request."""
    import uvicorn
    return uvicorn.Config(app, host=host, port=port, log_level=os.environ.get("FEDSTACK_LOG_LEVEL", "warning"),
                          access_log=False, loop="uvloop", http="httptools", ws="none", timeout_graceful_shutdown=3,
                          proxy_headers=False, log_config=None, **kw)   # logging: shared.logs


def serve(service: str, settings: Settings) -> None:
    """Run one service in this process until SIGTERM/SIGINT."""
    import importlib
    import logging

    import uvicorn
    # our own loggers (fedstack.*) at the level uvicorn uses (FEDSTACK_LOG_LEVEL), one
    # JSON object per line or text (FEDSTACK_LOG_FORMAT), each with its request id
    from shared.logs import configure
    configure(service)
    module = importlib.import_module(f"services.{service}.app")
    app = module.create_app(settings)
    configs = [_uvicorn_config(app, settings.bind_host, settings.port)]
    if service == "transport":
        # Public HTTPS federation listener; the internal listener above runs the lifespan.
        configs.append(_uvicorn_config(PublicOnly(app), settings.bind_host, settings.federation_port, lifespan="off",
                                       ssl_certfile=str(settings.path("tls_cert")),
                                       ssl_keyfile=str(settings.path("tls_key"))))
        if settings.public_http_port:   # the same public API in plain HTTP, for a reverse proxy
            configs.append(_uvicorn_config(PublicOnly(app), settings.bind_host, settings.public_http_port,
                                           lifespan="off"))
    servers = [uvicorn.Server(c) for c in configs]

    async def main():
        if service == "transport":
            _reload_tls_on_sighup(configs[1], settings)
        first = asyncio.create_task(servers[0].serve())
        while not servers[0].started and not first.done():
            await asyncio.sleep(0.02)
        rest = [asyncio.create_task(s.serve()) for s in servers[1:]]
        await asyncio.gather(first, *rest)
    try:   # uvicorn applies loop="uvloop" only in Server.run(); we run two servers ourselves
        import uvloop
    except ImportError:
        uvloop = None
    (uvloop.run if uvloop else asyncio.run)(main())


def _reload_tls_on_sighup(config, settings: Settings) -> None:
    """SIGHUP: the public listener loads its certificate chain and key again (a renewed
    Let's Encrypt fullchain.pem, say); connections open stay, nothing restarts. A chain
    or key that does not load leaves the old certificate in place (and is logged)."""
    import logging
    from shared.tls import reload_server_cert
    log = logging.getLogger("fedstack.tls")

    def reload():
        if getattr(config, "ssl", None) is None:   # not listening yet
            return
        try:
            reload_server_cert(config.ssl, str(settings.path("tls_cert")), str(settings.path("tls_key")))
            log.warning("reloaded the TLS certificate from %s", settings.path("tls_cert"))
        except (OSError, ValueError) as exc:   # ssl.SSLError is an OSError
            log.error("TLS certificate not reloaded, the old one stays: %s", exc)
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


class PublicOnly:
    """The transport's public listener: the same app, minus every internal route (and its
    metrics, which are for the homeserver's operator only)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and (scope["path"].startswith("/_internal/")
                                        or scope["path"] == "/metrics"):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body",
                        "body": b'{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}'})
            return
        await self.app(scope, receive, send)


class Homeserver:
    """Four service processes of one homeserver (used by `up` and by the tests)."""

    def __init__(self, settings: Settings, ports: dict[str, int], log_dir: Path | None = None):
        self.settings = settings
        self.ports = ports
        self.procs: dict[str, subprocess.Popen] = {}
        self.log_dir = log_dir

    @classmethod
    def configure(cls, server_name: str, data_dir: str, port: int, api_port: int,
                  replicas: dict[str, int] | None = None, **extra) -> "Homeserver":
        """Ports and settings for one homeserver. `replicas` runs several processes of a
        stateless service (pdu, transport, messaging): callers reach them round-robin;
        each transport replica also serves the federation API on a port of its own.

        The services reach each other (and `wait_healthy` looks for them) at
        `settings.local_host`: the bind host (`bind_host`, FEDSTACK_BIND_HOST), or loopback
        when that is a wildcard; the free ports are chosen on the bind host."""
        replicas = replicas or {}
        if replicas.get("transaction", 1) != 1:
            raise ValueError("the transaction service owns the database: exactly one")
        settings = Settings.from_env(server_name=server_name,
                                     data_dir=str(Path(data_dir).resolve()),
                                     federation_port=port, **extra)
        bind = settings.bind_host or "0.0.0.0"
        ports = {"messaging": api_port, "federation": port}
        for service in SERVICES:
            for k in range(1, replicas.get(service, 1) + 1):
                name = service if k == 1 else f"{service}#{k}"
                ports.setdefault(name, free_port(bind))
                if service == "transport" and k > 1:
                    ports[f"federation#{k}"] = free_port(bind)

        def urls(service):
            return ",".join(settings.local_url(p) for n, p in ports.items()
                            if n.split("#")[0] == service)
        settings = settings.with_(transaction_url=urls("transaction"), pdu_url=urls("pdu"),
                                  transport_url=urls("transport"),
                                  messaging_url=urls("messaging"))
        prepare_data_dir(settings)
        return cls(settings, ports, Path(settings.data_dir) / "logs")

    def instances(self) -> list[str]:
        return [n for s in SERVICES for n in self.ports if n.split("#")[0] == s]

    def start_service(self, instance: str) -> None:
        service, _, k = instance.partition("#")
        env = {**os.environ, **self.settings.to_env(), "FEDSTACK_PORT": str(self.ports[instance])}
        if service == "transport" and k:
            env["FEDSTACK_FEDERATION_PORT"] = str(self.ports[f"federation#{k}"])
        out = None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{instance.replace('#', '-')}.log", "ab")
        self.procs[instance] = subprocess.Popen(
            [sys.executable, "-m", "fedstack.cli", "serve", service], env=env,
            stdout=out, stderr=subprocess.STDOUT if out else None)

    def wait_healthy(self, services=None, timeout: float = 30.0) -> None:
        services = self.instances() if services is None else services
        deadline = time.monotonic() + timeout
        for service in services:
            url = self.settings.local_url(self.ports[service]) + "/health"
            while True:
                proc = self.procs.get(service)
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with {proc.returncode}")
                try:
                    import httpx   # not in `serve`: service processes never load it
                    if httpx.get(url, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service} did not become healthy on {url}")
                time.sleep(0.05)

    def is_healthy(self, instance: str, timeout: float = 0.5) -> bool:
        """One look at the process's /health (stdlib client: no wait, no retry)."""
        import urllib.request
        try:
            with urllib.request.urlopen(self.settings.local_url(self.ports[instance]) + "/health",
                                        timeout=timeout) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self) -> None:
        """Bring the database to the code's schema revision here (so the transaction
        process finds it current and never loads Alembic and SQLAlchemy: 20+ MB), then
        start every process; if one does not come up, stop them all and raise."""
        from services.transaction import migrate
        migrate.ensure_current(self.settings.db_url())
        try:
            for instance in self.instances():
                self.start_service(instance)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop_service(self, service: str, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
        proc = self.procs.pop(service, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def signal_service(self, service: str, sig) -> None:
        """Send `sig` to every running process of `service` (SIGHUP to transport: reload TLS)."""
        for name, proc in self.procs.items():
            if name.split("#")[0] == service and proc.poll() is None:
                proc.send_signal(sig)

    def stop(self) -> None:
        for instance in reversed(self.instances()):
            self.stop_service(instance)

    def describe(self) -> str:
        p, url = self.ports, self.settings.local_url
        return (f"fedstack homeserver {self.settings.server_name} (data in {self.settings.data_dir})\n"
                f"  transport    {url(p['federation'], 'https')}  (federation API, public)\n"
                f"               {url(p['transport'])}  (internal)\n"
                f"  transaction  {url(p['transaction'])}  (internal)\n"
                f"  pdu          {url(p['pdu'])}  (internal)\n"
                f"  messaging    {url(p['messaging'])}  (domain API, docs at /docs)")


def _discovery_options(parser) -> None:
    parser.add_argument("--resolver", metavar="HOST:PORT",
                        help="nameserver for SRV and A/AAAA look-ups (default: the system's)")
    parser.add_argument("--ca-file", metavar="PATH",
                        help="extra CA certificates to trust for other servers (PEM)")


def _database_option(parser) -> None:
    parser.add_argument("--database-url", metavar="URL",
                        help="the transaction service's database (default: $FEDSTACK_DATABASE_URL, "
                        "else sqlite:///DATA_DIR/fedstack.db; or postgresql+psycopg://USER@HOST/DB)")


def migrate_database(settings: Settings) -> int:
    """`fedstack migrate` (and `up` before starting): 0, or 1 with the reason printed."""
    from services.transaction import migrate
    try:
        done = migrate.ensure_current(settings.db_url())
    except migrate.DatabaseTooNew as exc:
        print(f"fedstack: {exc}", file=sys.stderr, flush=True)
        return 1
    if done != "current":
        print(f"database {done} to schema revision {migrate.HEAD}", flush=True)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fedstack")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a whole homeserver (four processes)")
    up.add_argument("--server-name", required=True)
    up.add_argument("--data-dir", required=True)
    up.add_argument("--port", type=int, required=True, help="federation HTTPS port")
    up.add_argument("--api-port", type=int, required=True, help="messaging API port")
    up.add_argument("--allow-private-destinations", action="store_true",
                    help="allow federation to loopback/private addresses (local testing)")
    up.add_argument("--no-verify-tls", action="store_true",
                    help="accept self-signed certificates of other servers (local testing)")
    _discovery_options(up)
    up.add_argument("--delegate-to", metavar="HOST[:PORT]",
                    help="serve /.well-known/matrix/server delegating our name there")
    up.add_argument("--public-http-port", type=int,
                    help="also serve the public API in plain HTTP on this port (for a reverse proxy)")
    up.add_argument("--tls-cert", metavar="PATH",
                    help="certificate chain of the federation listener (full chain; reloaded on SIGHUP)")
    up.add_argument("--tls-key", metavar="PATH", help="its private key")
    _database_option(up)
    mig = sub.add_parser("migrate", help="upgrade the transaction service's database to this "
                         "release's schema (refuses one written by a newer release)")
    mig.add_argument("--data-dir", required=True)
    _database_option(mig)
    cp = sub.add_parser("copy-db", help="copy a stopped homeserver's database to another "
                        "engine (sqlite:///PATH to postgresql+psycopg://...), then check it")
    cp.add_argument("--from", dest="source", required=True, metavar="URL")
    cp.add_argument("--to", dest="dest", required=True, metavar="URL")
    chk = sub.add_parser("check-federation", help="resolve a server name step by step and "
                         "check its TLS, key server and (with --data-dir) our signed requests")
    chk.add_argument("name")
    _discovery_options(chk)
    chk.add_argument("--no-verify-tls", action="store_true")
    chk.add_argument("--allow-private-destinations", action="store_true")
    chk.add_argument("--data-dir", help="our data dir: also send a request signed with our key")
    chk.add_argument("--server-name", help="our server name (with --data-dir)")
    init = sub.add_parser("init", help="create the signing key, TLS certificate and internal secret")
    init.add_argument("--server-name", required=True)
    init.add_argument("--data-dir", required=True)
    rot = sub.add_parser("rotate-key", help="replace the signing key; the old one is then "
                         "served in old_verify_keys (restart pdu and transport afterwards)")
    rot.add_argument("--data-dir", required=True)
    tok = sub.add_parser("rotate-token", help="replace the domain API token in the data "
                         "directory (taken within a second, no restart); prints the new one")
    tok.add_argument("--data-dir", required=True)
    sv = sub.add_parser("serve", help="run one service from FEDSTACK_* settings")
    sv.add_argument("service", choices=SERVICES)
    from fedstack import admin
    admin.add_arguments(sub.add_parser("admin", help="the operator's views and actions over "
                                       "the messaging API (fedstack admin status, destinations, "
                                       "retry NAME, rooms, origins, subscriptions, rotate-token)"))
    args = parser.parse_args(argv)
    if args.cmd == "admin":
        return admin.run(args)
    if args.cmd == "serve":
        serve(args.service, Settings.from_env())
        return 0
    if args.cmd == "check-federation":
        from fedstack.check_federation import check_federation
        return check_federation(args)
    if args.cmd == "rotate-token":
        print(ensure_secret_file(args.data_dir, "api_token", replace_it=True))
        return 0
    if args.cmd == "rotate-key":
        print(rotate_key(Settings(data_dir=args.data_dir)))
        return 0
    if args.cmd == "migrate":
        return migrate_database(Settings.from_env(data_dir=args.data_dir, **(
            {"database_url": args.database_url} if args.database_url else {})))
    if args.cmd == "copy-db":
        from fedstack.copy_db import main as copy_db
        return copy_db(args.source, args.dest)
    if args.cmd == "init":
        settings = Settings(server_name=args.server_name, data_dir=args.data_dir)
        prepare_data_dir(settings)
        print(f"created key, certificate and secret in {args.data_dir}")
        return 0
    extra = {}
    if args.allow_private_destinations:
        extra["allow_private_destinations"] = True
    if args.no_verify_tls:
        extra["verify_tls"] = False
    for opt, field in (("resolver", "resolver"), ("ca_file", "ca_file"), ("delegate_to", "delegate_to"),
                       ("public_http_port", "public_http_port"), ("tls_cert", "tls_cert_path"),
                       ("tls_key", "tls_key_path"), ("database_url", "database_url")):
        if getattr(args, opt) is not None:
            extra[field] = getattr(args, opt)
    hs = Homeserver.configure(args.server_name, args.data_dir, args.port, args.api_port, **extra)
    if migrate_database(hs.settings):
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGHUP, lambda *_: hs.signal_service("transport", signal.SIGHUP))
    from fedstack.supervisor import Supervisor
    status = 0
    try:
        hs.start()
        print(hs.describe(), flush=True)
        supervisor = Supervisor(hs)
        while not stopping:
            supervisor.step()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:   # a process that cannot start at all
        print(f"fedstack up: {exc}; stopping", file=sys.stderr, flush=True)
        status = 1
    finally:
        hs.stop()
        print("stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
