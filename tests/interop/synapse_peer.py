"""A real Synapse homeserver on loopback, as an interop peer for tests and benchmarks.

See /work/shared/docs/synapse-peer.md for what this is modelled on.

Usage::

    python = ensure_synapse_venv()            # once; cached under <repo>/.cache/synapse-venv
    peer = SynapsePeer.start(tmp_path / "hs1")
    tok = peer.register_user("alice")
    room = peer.create_room(tok)
    peer.send_message(tok, room, "hello")
    peer.stop()

Network rule: everything here binds and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import copy
import datetime
import fcntl
import hashlib
import hmac
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

import httpx

__all__ = [
    "SYNAPSE_PIN",
    "SynapseAPIError",
    "SynapsePeer",
    "SynapseStartError",
    "default_venv_path",
    "ensure_synapse_venv",
]

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Version spec tried first; if pip cannot satisfy it the newest release is installed.
SYNAPSE_PIN = "matrix-synapse==1.163.*"

_MARKER_NAME = ".fedstack-synapse-complete"

LOOPBACK = "127.0.0.1"


# ---------------------------------------------------------------------------
# venv
# ---------------------------------------------------------------------------


def default_venv_path() -> Path:
    """`$FEDSTACK_SYNAPSE_VENV` if set, else `<repo>/.cache/synapse-venv`."""
    env = os.environ.get("FEDSTACK_SYNAPSE_VENV")
    if env:
        return Path(env)
    return REPO_ROOT / ".cache" / "synapse-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    # Our own source tree must not leak into Synapse's interpreter.
    for k in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(k, None)
    # Loopback only: never let a proxy setting route Synapse's or our traffic.
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            env.pop(k)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    # Synapse computes a "git-aware" version string by running git in its package
    # directory, which lies inside our work tree (.cache/): `git describe --dirty`
    # could even refresh the index. Make every such git call fail instead.
    env["GIT_DIR"] = "/nonexistent-fedstack-no-git"
    env.setdefault("SYNAPSE_VERSION_STRING", "fedstack-synapse-peer")
    return env


def _synapse_env(venv: Path) -> dict[str, str]:
    env = _clean_env()
    try:
        ver = (venv / _MARKER_NAME).read_text().strip()
    except OSError:
        ver = ""
    env["SYNAPSE_VERSION_STRING"] = ver or "unknown"
    return env


def _venv_ok(venv: Path) -> bool:
    py = _venv_python(venv)
    if not (venv / _MARKER_NAME).is_file() or not py.exists():
        return False
    try:
        r = subprocess.run(
            [str(py), "-c", "import synapse, yaml"],
            cwd=str(venv),
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def ensure_synapse_venv(path: Path | None = None) -> Path:
    """Create (if missing or broken) a venv with matrix-synapse; return its python.

    The venv is kept between runs; a marker file written last tells it is complete.
    Concurrent callers are serialised with a lock file next to the venv.
    """
    venv = Path(path) if path is not None else default_venv_path()
    venv = venv.absolute()
    if _venv_ok(venv):
        return _venv_python(venv)

    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / (venv.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _venv_ok(venv):  # someone else finished it while we waited
                return _venv_python(venv)
            if venv.exists():
                shutil.rmtree(venv)
            env = _clean_env()
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)], check=True, env=env
            )
            py = str(_venv_python(venv))
            log = venv / "pip-install.log"
            with open(log, "w") as out:
                pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
                r = subprocess.run(
                    pip + [SYNAPSE_PIN, "pyyaml"], stdout=out, stderr=subprocess.STDOUT, env=env
                )
                if r.returncode != 0:
                    out.write(f"\n# {SYNAPSE_PIN} not installable; installing newest\n")
                    out.flush()
                    r = subprocess.run(
                        pip + ["matrix-synapse", "pyyaml"],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
            if r.returncode != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"pip install matrix-synapse failed:\n{tail}")
            ver = subprocess.run(
                [
                    py,
                    "-c",
                    "import importlib.metadata as m, synapse, yaml;"
                    " print(m.version('matrix-synapse'))",
                ],
                cwd=str(venv),
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            (venv / _MARKER_NAME).write_text(ver + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return _venv_python(venv)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


class SynapseStartError(RuntimeError):
    """Synapse did not become healthy; the message carries the log tail."""


class SynapseAPIError(RuntimeError):
    """A non-2xx answer from Synapse's client or admin API."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        self.errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {path} -> {status}: {body!r}"[:2000])


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_self_signed_cert(cert_path: Path, key_path: Path, common_name: str = LOOPBACK) -> None:
    """A self-signed RSA certificate with subjectAltName IP:127.0.0.1 (and DNS:localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _deep_merge(base: dict, extra: dict) -> dict:
    """Merge `extra` into `base` in place: dicts recursively, a None value deletes."""
    for k, v in extra.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


_GENEROUS = {"per_second": 10000, "burst_count": 100000}


def _test_config_overrides() -> dict[str, Any]:
    g = _GENEROUS
    return {
        "report_stats": False,
        "enable_registration": False,
        "federation_verify_certificates": False,
        # Needed for IP-literal destinations (127.0.0.1:PORT); whitelist alone won't do.
        "ip_range_blacklist": [],
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "rc_message": dict(g),
        "rc_registration": dict(g),
        "rc_registration_token_validity": dict(g),
        "rc_login": {"address": dict(g), "account": dict(g), "failed_attempts": dict(g)},
        "rc_admin_redaction": dict(g),
        "rc_joins": {"local": dict(g), "remote": dict(g)},
        "rc_joins_per_room": dict(g),
        "rc_key_requests": dict(g),
        "rc_3pid_validation": dict(g),
        "rc_invites": {"per_room": dict(g), "per_user": dict(g), "per_issuer": dict(g)},
        "rc_third_party_invite": dict(g),
        "rc_media_create": dict(g),
        "rc_presence": {"per_user": dict(g)},
        "rc_delayed_event_mgmt": dict(g),
        "rc_room_creation": dict(g),
        "rc_reports": dict(g),
        "rc_user_directory": dict(g),
        "rc_profile": dict(g),
        # Defaults: sleep after 10 req/s per origin, 3 concurrent, reject over 50.
        "rc_federation": {
            "window_size": 1000,
            "sleep_limit": 100000,
            "sleep_delay": 1,
            "reject_limit": 100000,
            "concurrent": 10000,
        },
        "federation_rr_transactions_per_room_per_second": 10000,
        # Outbound federation retries, short for tests (defaults: 60 s timeout,
        # 10 long / 3 short retries, backoff 10 min doubling up to 7 days).
        "federation": {
            "client_timeout": "20s",
            "max_short_retries": 2,
            "max_long_retries": 3,
            "max_short_retry_delay": "1s",
            "max_long_retry_delay": "2s",
            "destination_min_retry_interval": "1s",
            "destination_retry_multiplier": 2,
            "destination_max_retry_interval": "10s",
        },
    }


def _log_config(log_path: Path, level: str) -> dict[str, Any]:
    # A plain FileHandler (the generated config buffers INFO lines for up to 5 s,
    # which makes grep_log racy).
    return {
        "version": 1,
        "formatters": {
            "precise": {
                "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s"
                " - %(request)s - %(message)s"
            }
        },
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(log_path),
                "encoding": "utf8",
            }
        },
        "loggers": {"synapse.storage.SQL": {"level": "INFO"}},
        "root": {"level": level, "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


# ---------------------------------------------------------------------------
# SynapsePeer
# ---------------------------------------------------------------------------


class SynapsePeer:
    """One Synapse process on loopback: a TLS federation listener and an HTTP client one.

    Attributes: server_name, fed_port, client_port, fed_url, client_url, workdir,
    config_path, log_path, pid, python, registration_shared_secret, users.
    """

    CONFIG_NAME = "homeserver.yaml"

    def __init__(
        self,
        workdir: Path,
        *,
        python: Path,
        server_name: str,
        fed_port: int,
        client_port: int,
        health_timeout: float = 60.0,
        die_with_parent: bool = True,
    ):
        self.workdir = Path(workdir).absolute()
        self.python = Path(python)
        self.server_name = server_name
        self.fed_port = fed_port
        self.client_port = client_port
        self.fed_url = f"https://{LOOPBACK}:{fed_port}"
        self.client_url = f"http://{LOOPBACK}:{client_port}"
        self.config_path = self.workdir / self.CONFIG_NAME
        self.log_path = self.workdir / "homeserver.log"
        self.stdout_path = self.workdir / "synapse.stdout.log"
        self.health_timeout = health_timeout
        self.die_with_parent = die_with_parent
        self.registration_shared_secret = ""
        self.users: dict[str, dict[str, str]] = {}
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._http: httpx.Client | None = None
        self._admin_token: str | None = None
        self._txn = 0

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        server_name: str | None = None,
        room_version: str | None = None,
        extra_config: dict | None = None,
        log_level: str = "INFO",
        python: Path | None = None,
        health_timeout: float = 60.0,
        die_with_parent: bool = True,
    ) -> "SynapsePeer":
        """Generate a config in a new `workdir`, start Synapse, wait for /health.

        `extra_config` is deep-merged into the YAML last (a None value deletes a key).
        `die_with_parent`: Synapse gets SIGTERM if the process that started it dies
        (only applied when started from the main thread).
        """
        import yaml  # PyYAML: in the test extras

        workdir = Path(workdir).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        if (workdir / cls.CONFIG_NAME).exists():
            raise FileExistsError(
                f"{workdir} already holds a Synapse config; use a new workdir or restart()"
            )
        python = Path(python) if python is not None else ensure_synapse_venv()
        fed_port, client_port = _free_ports(2)
        server_name = server_name or f"{LOOPBACK}:{fed_port}"
        peer = cls(
            workdir,
            python=python,
            server_name=server_name,
            fed_port=fed_port,
            client_port=client_port,
            health_timeout=health_timeout,
            die_with_parent=die_with_parent,
        )
        env = _synapse_env(python.parent.parent)

        r = subprocess.run(
            [
                str(python),
                "-m",
                "synapse.app.homeserver",
                "--server-name",
                server_name,
                "--config-path",
                str(peer.config_path),
                "--data-directory",
                str(workdir),
                "--generate-config",
                "--report-stats=no",
            ],
            cwd=str(workdir),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode != 0:
            raise SynapseStartError(f"synapse --generate-config failed:\n{r.stdout}\n{r.stderr}")

        cert, key = workdir / "tls.crt", workdir / "tls.key"
        write_self_signed_cert(cert, key)
        log_cfg = workdir / "log.config.yaml"
        log_cfg.write_text(yaml.safe_dump(_log_config(peer.log_path, log_level)))

        cfg = yaml.safe_load(peer.config_path.read_text())
        peer.registration_shared_secret = secrets.token_hex(24)
        cfg.update(
            {
                "server_name": server_name,
                "pid_file": str(workdir / "homeserver.pid"),
                "listeners": [
                    {
                        "port": fed_port,
                        "bind_addresses": [LOOPBACK],
                        "type": "http",
                        "tls": True,
                        "x_forwarded": False,
                        "resources": [{"names": ["federation", "keys"], "compress": False}],
                    },
                    {
                        "port": client_port,
                        "bind_addresses": [LOOPBACK],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        "resources": [{"names": ["client"], "compress": False}],
                    },
                ],
                "tls_certificate_path": str(cert),
                "tls_private_key_path": str(key),
                "database": {
                    "name": "sqlite3",
                    "args": {"database": str(workdir / "homeserver.db")},
                },
                "media_store_path": str(workdir / "media_store"),
                "log_config": str(log_cfg),
                "registration_shared_secret": peer.registration_shared_secret,
            }
        )
        _deep_merge(cfg, _test_config_overrides())
        if room_version is not None:
            cfg["default_room_version"] = str(room_version)
        if extra_config:
            _deep_merge(cfg, extra_config)
        peer.registration_shared_secret = cfg.get("registration_shared_secret", "")
        peer.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

        peer._launch()
        return peer

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _launch(self) -> None:
        env = _synapse_env(self.python.parent.parent)
        preexec = (
            _set_pdeathsig
            if self.die_with_parent and threading.current_thread() is threading.main_thread()
            else None
        )
        out = open(self.stdout_path, "ab")
        t0 = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                [str(self.python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                cwd=str(self.workdir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group
                preexec_fn=preexec,
            )
        finally:
            out.close()
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.kill()
            raise
        self.startup_seconds = time.monotonic() - t0

    def _wait_healthy(self, t0: float) -> None:
        deadline = t0 + self.health_timeout
        last_err: Exception | None = None
        ok = {"client": False, "federation": False}
        with httpx.Client(verify=False, trust_env=False, timeout=2.0) as c:
            while time.monotonic() < deadline:
                if self._proc is None or self._proc.poll() is not None:
                    rc = self._proc.returncode if self._proc else None
                    raise SynapseStartError(
                        f"Synapse exited with code {rc} during start-up\n{self.log_tail()}"
                    )
                for which, url in (("client", self.client_url), ("federation", self.fed_url)):
                    if ok[which]:
                        continue
                    try:
                        r = c.get(url + "/health")
                        ok[which] = r.status_code == 200 and r.text.strip() == "OK"
                    except httpx.HTTPError as e:
                        last_err = e
                if all(ok.values()):
                    return
                time.sleep(0.1)
        raise SynapseStartError(
            f"Synapse not healthy after {self.health_timeout:.0f}s ({ok}, last error "
            f"{last_err!r})\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 60) -> str:
        parts = []
        for p in (self.stdout_path, self.log_path):
            try:
                lines = p.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                continue
            parts.append(f"--- {p.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def _signal(self, sig: int) -> None:
        if self._proc is None:
            return
        try:
            os.kill(self._proc.pid, sig)
        except ProcessLookupError:
            pass

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID; SIGKILL if still alive after `timeout` s. Idempotent."""
        self._close_http()
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL by PID (a crash, as far as Synapse can tell)."""
        self._close_http()
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            self._proc.wait(timeout=10)

    def restart(self) -> None:
        """stop() then start again: same workdir, ports, server name, database, keys."""
        self.stop()
        self._launch()

    def __enter__(self) -> "SynapsePeer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SynapsePeer {self.server_name} client={self.client_url} pid={self.pid}>"

    # -- logs ----------------------------------------------------------------

    def grep_log(self, *words: str) -> list[str]:
        """Lines of the Synapse log containing every one of `words` (case-sensitive)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [ln for ln in text.splitlines() if all(w in ln for w in words)]

    # -- HTTP ----------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.client_url, trust_env=False, timeout=30.0)
        return self._http

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """A client-port request; returns the decoded JSON, raises SynapseAPIError on non-2xx."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kw: dict[str, Any] = {}
        if timeout is not None:
            kw["timeout"] = timeout
        r = self.http.request(method, path, headers=headers, json=json, params=params, **kw)
        try:
            body = r.json()
        except ValueError:
            body = r.text
        if not 200 <= r.status_code < 300:
            raise SynapseAPIError(method, path, r.status_code, body)
        return body

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def register_user(self, localpart: str, admin: bool = False) -> str:
        """Register via the shared-secret admin API; return the access token."""
        password = "pw-" + secrets.token_hex(8)
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.registration_shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([
            nonce.encode(),
            localpart.encode(),
            password.encode(),
            b"admin" if admin else b"notadmin",
        ]))
        body = self.request(
            "POST",
            "/_synapse/admin/v1/register",
            json={
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        self.users[localpart] = {
            "user_id": body["user_id"],
            "access_token": body["access_token"],
            "device_id": body.get("device_id", ""),
            "password": password,
        }
        return body["access_token"]

    @property
    def admin_token(self) -> str:
        """An admin user's token, registered on first use."""
        if self._admin_token is None:
            self._admin_token = self.register_user(
                "fedstack-admin-" + secrets.token_hex(3), admin=True
            )
        return self._admin_token

    # -- client API ----------------------------------------------------------

    def create_room(
        self,
        token: str,
        *,
        preset: str = "public_chat",
        room_version: str | None = None,
        name: str | None = None,
        invite: list[str] | None = None,
        extra: dict | None = None,
    ) -> str:
        body: dict[str, Any] = {"preset": preset}
        if room_version is not None:
            body["room_version"] = str(room_version)
        if name is not None:
            body["name"] = name
        if invite:
            body["invite"] = list(invite)
        if extra:
            body.update(extra)
        return self.request("POST", "/_matrix/client/v3/createRoom", token=token, json=body)[
            "room_id"
        ]

    def join_room(
        self, token: str, room_id_or_alias: str, server_name: str | list[str] | None = None
    ) -> str:
        """Join (remote joins: pass the resident server(s) as `server_name`); return room_id."""
        params = None
        if server_name:
            params = {"server_name": [server_name] if isinstance(server_name, str) else server_name}
        return self.request(
            "POST",
            f"/_matrix/client/v3/join/{_q(room_id_or_alias)}",
            token=token,
            json={},
            params=params,
        )["room_id"]

    def _next_txn(self) -> str:
        self._txn += 1
        return f"fs{time.time_ns()}-{self._txn}"

    def send_message(
        self, token: str, room_id: str, body: str, txn_id: str | None = None
    ) -> str:
        txn_id = txn_id or self._next_txn()
        return self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{_q(txn_id)}",
            token=token,
            json={"msgtype": "m.text", "body": body},
        )["event_id"]

    def send_event(
        self, token: str, room_id: str, type: str, content: dict, txn_id: str | None = None
    ) -> str:
        txn_id = txn_id or self._next_txn()
        return self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/send/{_q(type)}/{_q(txn_id)}",
            token=token,
            json=content,
        )["event_id"]

    def send_state(
        self, token: str, room_id: str, type: str, state_key: str, content: dict
    ) -> str:
        return self.request(
            "PUT",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/state/{_q(type)}/{_q(state_key)}",
            token=token,
            json=content,
        )["event_id"]

    def invite(self, token: str, room_id: str, user_id: str) -> None:
        self.request(
            "POST",
            f"/_matrix/client/v3/rooms/{_q(room_id)}/invite",
            token=token,
            json={"user_id": user_id},
        )

    def leave(self, token: str, room_id: str) -> None:
        self.request(
            "POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", token=token, json={}
        )

    def get_state(self, token: str, room_id: str) -> list:
        return self.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state", token=token)

    def messages(
        self,
        token: str,
        room_id: str,
        dir: str = "b",
        limit: int = 100,
        from_: str | None = None,
    ) -> dict:
        params: dict[str, Any] = {"dir": dir, "limit": limit}
        if from_ is not None:
            params["from"] = from_
        return self.request(
            "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages", token=token, params=params
        )

    def sync(self, token: str, since: str | None = None, timeout_ms: int = 0) -> dict:
        params: dict[str, Any] = {"timeout": timeout_ms}
        if since is not None:
            params["since"] = since
        return self.request(
            "GET",
            "/_matrix/client/v3/sync",
            token=token,
            params=params,
            timeout=timeout_ms / 1000 + 30,
        )

    def wait_for_event(
        self,
        token: str,
        room_id: str,
        predicate: Callable[[dict], bool],
        timeout: float = 30,
    ) -> dict:
        """Poll /messages (newest 100, backwards) until an event satisfies `predicate`.

        Errors such as 403 (not yet joined) are retried until the deadline; then
        TimeoutError, with the last error or the types of the events seen.
        """
        deadline = time.monotonic() + timeout
        last: str = "nothing polled"
        delay = 0.05
        while True:
            try:
                chunk = self.messages(token, room_id, dir="b", limit=100).get("chunk", [])
                for ev in chunk:
                    if predicate(ev):
                        return ev
                last = "seen: " + ", ".join(
                    f"{e.get('type')}/{e.get('sender')}" for e in chunk[:20]
                )
            except (SynapseAPIError, httpx.HTTPError) as e:
                last = f"error: {e}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no matching event in {room_id} on {self.server_name} after "
                    f"{timeout}s ({last})"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def joined_members(self, token: str, room_id: str) -> dict[str, dict]:
        """{user_id: {display_name, avatar_url}} of the joined members."""
        return self.request(
            "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/joined_members", token=token
        )["joined"]

    # -- admin API -----------------------------------------------------------

    def reset_connection(self, destination: str) -> bool:
        """Clear Synapse's backoff for `destination` and wake its federation sender.

        True if a backoff was reset; False if there was nothing to reset (unknown
        destination, or not backed off).
        """
        try:
            self.request(
                "POST",
                f"/_synapse/admin/v1/federation/destinations/{_q(destination)}/reset_connection",
                token=self.admin_token,
                json={},
            )
        except SynapseAPIError as e:
            if e.status in (400, 404):
                return False
            raise
        return True

    def destination(self, destination: str) -> dict | None:
        """Synapse's view of a destination (retry_last_ts, retry_interval, ...), or None."""
        try:
            return self.request(
                "GET",
                f"/_synapse/admin/v1/federation/destinations/{_q(destination)}",
                token=self.admin_token,
            )
        except SynapseAPIError as e:
            if e.status == 404:
                return None
            raise
