"""TLS and basic auth for the HTTP endpoint, in the shape of Prometheus' exporter-toolkit web config.

The same keys as ``--web.config.file`` of Prometheus exporters, written as TOML (a file given with
``--web-config``, or a ``[web]`` table in the main config)::

    [tls_server_config]
    cert_file = "/etc/opencode-watchdog/tls.crt"
    key_file = "/etc/opencode-watchdog/tls.key"

    [basic_auth_users]
    prometheus = "$2b$12$..."   # bcrypt hash, e.g. from `htpasswd -nBC 12 prometheus`
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import bcrypt

from watchdog.core.settings import ConfigError

# Compared against when the user is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = b"$2b$10$3euPcmQFCiblsZeEu5s7p.9OVHgeHWFDk9nhMqZ0m/3pd/lhwZgES"
_CACHE_SIZE = 256
_KEYS = {"tls_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "min_version"}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Validated web settings: a TLS certificate and key, and users with bcrypt hashes."""

    cert_file: str | None = None
    key_file: str | None = None
    min_version: str = "TLS12"
    users: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def tls(self) -> bool:
        """Whether the endpoint speaks HTTPS."""
        return self.cert_file is not None

    def server_context(self) -> ssl.SSLContext:
        """The TLS context for the listening side."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = _TLS_VERSIONS[self.min_version]
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context


def parse_web_config(where: str, data: Mapping[str, Any]) -> WebConfig:
    """Check a web config table; every problem is a ``ConfigError`` naming ``where`` and the key."""
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: {sorted(unknown)[0]}", "unknown key")
    tls = data.get("tls_server_config", {})
    if not isinstance(tls, dict) or set(tls) - _TLS_KEYS:
        raise ConfigError(
            f"{where}: tls_server_config", "expected a table with cert_file and key_file"
        )
    users = data.get("basic_auth_users", {})
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in users.items()
    ):
        raise ConfigError(
            f"{where}: basic_auth_users", 'expected a table of user = "bcrypt hash" pairs'
        )
    for user, hashed in users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            raise ConfigError(
                f"{where}: basic_auth_users.{user}",
                "expected a bcrypt hash ($2b$...), e.g. from `htpasswd -nBC 12 USER`",
            )
        try:
            bcrypt.checkpw(b"", hashed.encode())
        except ValueError:
            raise ConfigError(
                f"{where}: basic_auth_users.{user}", "not a valid bcrypt hash"
            ) from None
    config = WebConfig(users=dict(users))
    if tls:
        cert, key = tls.get("cert_file"), tls.get("key_file")
        if not isinstance(cert, str) or not isinstance(key, str):
            raise ConfigError(
                f"{where}: tls_server_config", "cert_file and key_file are both required"
            )
        version = tls.get("min_version", "TLS12")
        if version not in _TLS_VERSIONS:
            raise ConfigError(f"{where}: tls_server_config.min_version", "expected TLS12 or TLS13")
        for name, path in (("cert_file", cert), ("key_file", key)):
            try:
                Path(path).open("rb").close()
            except OSError as exc:
                raise ConfigError(
                    f"{where}: tls_server_config.{name}", f"cannot read {path}: {exc.strerror}"
                ) from None
        config = WebConfig(cert, key, version, dict(users))
        try:
            config.server_context()
        except ssl.SSLError as exc:  # an OSError too: test it first
            raise ConfigError(
                f"{where}: tls_server_config", f"certificate and key do not load: {exc.reason}"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{where}: tls_server_config", f"cannot load: {exc}") from None
    return config


def read_web_config(option: str, path: str) -> WebConfig:
    """Load a web config TOML file."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(option, f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(option, f"{path} is not valid TOML: {exc}") from None
    return parse_web_config(path, data)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes without blocking the loop.

    bcrypt costs tens of milliseconds by design: checks run in a worker thread, one at a time
    (a password guesser gets one core at most), and a correct answer is remembered so that
    Prometheus scraping every 15 s does not pay it each time.
    """

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = {u: h.encode() for u, h in users.items()}
        self._good: dict[bytes, None] = {}
        self._limiter = anyio.CapacityLimiter(1)

    async def check(self, header: str | None) -> bool:
        """True when the header names a user with the right password."""
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        if not sep:
            return False
        name = user.decode("utf-8", "replace")
        hashed = self._users.get(name)
        key = hashlib.sha256(decoded + b"\0" + (hashed or b"")).digest()
        if hashed is not None and key in self._good:
            return True
        ok = await anyio.to_thread.run_sync(
            _checkpw, password, hashed or _DUMMY_HASH, limiter=self._limiter
        )
        if ok and hashed is not None:
            if len(self._good) >= _CACHE_SIZE:
                self._good.pop(next(iter(self._good)))
            self._good[key] = None
            return True
        return False


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        return False
