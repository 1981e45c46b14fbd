"""Settings shared by the four services, read from `FEDSTACK_*` environment variables.

One dataclass for all layers so that `fedstack up`, compose and tests configure a homeserver
the same way. Every field has a documented default; `from_env()` never reads files, and
`internal_secret` is resolved from `internal_secret_path` when not given directly.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    server_name: str = "localhost:8448"          # our Matrix server name
    data_dir: str = "./data"                     # key, certificate, secret, database
    signing_key_path: str = ""                   # default: <data_dir>/signing.key
    tls_cert_path: str = ""                      # default: <data_dir>/tls.crt
    tls_key_path: str = ""                       # default: <data_dir>/tls.key
    db_path: str = ""                            # default: <data_dir>/fedstack.db
    database_url: str = ""                       # transaction service's database; default:
                                                 # sqlite:///<db_path>; or postgresql+psycopg://...
    internal_secret: str = ""                    # default: read <data_dir>/internal_secret
    api_token: str = ""                          # domain API bearer token; default: <data_dir>/api_token
    transport_url: str = "http://127.0.0.1:8101"   # internal URL of the transport service
    transaction_url: str = "http://127.0.0.1:8102"
    pdu_url: str = "http://127.0.0.1:8103"
    messaging_url: str = "http://127.0.0.1:8104"
    verify_tls: bool = True                      # verify remote servers' TLS certificates
    allow_private_destinations: bool = False     # allow federation to loopback/private IPs
    ip_range_allowlist: str = ""                 # networks allowed even so ("127.0.5.0/24,...")
    ca_file: str = ""                            # extra CA bundle trusted for remote servers
    resolver: str = ""                           # nameserver HOST:PORT for SRV and A/AAAA ("": system)
    well_known_min_cache_s: float = 300.0        # shortest caching of a remote .well-known
    well_known_failure_cache_s: float = 3600.0   # a failed .well-known: backoff (from the min) up to this
    delegate_to: str = ""                        # our /.well-known/matrix/server m.server
    public_http_port: int = 0                    # plain-HTTP public listener for a reverse proxy (0: none)
    backoff_min_s: float = 2.0                   # first retry delay for a failing destination
    backoff_max_s: float = 3600.0                # cap of the doubling retry delay
    send_coalesce_ms: float = 3.0                # after a small transaction, gather this long
    federation_timeout_s: float = 30.0           # outbound federation request timeout
    max_body_bytes: int = 12 * 1024 * 1024       # inbound request body cap (413 beyond)
    max_response_bytes: int = 64 * 1024 * 1024   # cap on a remote's answer we read
    federation_rate_per_s: float = 100.0         # per-origin sustained inbound request rate
    federation_rate_burst: int = 1000            # per-origin burst (0: no rate limiting)
    key_validity_s: int = 86400                  # valid_until_ts of our key response
    bind_host: str = "127.0.0.1"                 # where `fedstack serve` listens
    port: int = 0                                # this service's HTTP port (serve)
    federation_port: int = 8448                  # transport's public HTTPS port (serve)

    def path(self, name: str) -> Path:
        """The configured path of `name` (e.g. "signing_key"), or its data-dir default."""
        explicit = getattr(self, f"{name}_path")
        defaults = {"signing_key": "signing.key", "tls_cert": "tls.crt",
                    "tls_key": "tls.key", "db": "fedstack.db"}
        return Path(explicit) if explicit else Path(self.data_dir) / defaults[name]

    def db_url(self) -> str:
        """The transaction service's database: `database_url`, else the sqlite file."""
        return self.database_url or f"sqlite:///{self.path('db')}"

    def secret(self) -> str:
        """The internal secret: given directly, or read from the data directory."""
        if self.internal_secret:
            return self.internal_secret
        p = Path(self.data_dir) / "internal_secret"
        return p.read_text().strip() if p.exists() else ""

    def token(self) -> str:
        """The domain API token: given directly, or read from the data directory."""
        if self.api_token:
            return self.api_token
        p = Path(self.data_dir) / "api_token"
        return p.read_text().strip() if p.exists() else ""

    @classmethod
    def from_env(cls, env: dict | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get("FEDSTACK_" + f.name.upper())
            if raw is None:
                continue
            if f.type in ("bool", bool):
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env()` give back these settings."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out["FEDSTACK_" + f.name.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
        return out

    @property
    def local_host(self) -> str:
        """Where this homeserver's own processes reach one another's listeners: `bind_host`
        itself, or loopback when that is a wildcard ("0.0.0.0" or "": 127.0.0.1, "::": ::1).
        A service bound to one address (10.0.0.5, 127.0.8.1) is not listening on 127.0.0.1."""
        host = self.bind_host
        return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host

    def local_url(self, port: int, scheme: str = "http") -> str:
        """`scheme://local_host:port`, an IPv6 address in brackets."""
        host = self.local_host
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)


# Written by `fedstack up`'s supervisor in the data directory: {instance: {restarts, last_exit,
# next_backoff_s}}; read by the messaging service's combined /metrics.
SUPERVISOR_STATE_FILE = "supervisor.json"


def ensure_secret_file(data_dir: str | Path, name: str, *, replace_it: bool = False) -> str:
    """Create `<data_dir>/<name>` (mode 0600) holding a new random token once (or anew with
    `replace_it`, atomically); return its value."""
    p = Path(data_dir) / name
    if replace_it or not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(32))
        tmp.chmod(0o600)
        tmp.replace(p)
    return p.read_text().strip()


def ensure_internal_secret(data_dir: str | Path) -> str:
    """Create `<data_dir>/internal_secret` (mode 0600) once; return its value."""
    return ensure_secret_file(data_dir, "internal_secret")
