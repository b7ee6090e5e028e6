"""Settings from flags, `OPENCODE_WATCHDOG_*` variables and a TOML file, checked once at start-up.

Precedence: command line, then environment, then the config file, then defaults. Every bad value
raises ``ConfigError`` naming the option and the expected form; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import ssl
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from watchdog.core.settings import (
    DEFAULT_USERNAME,
    ApiMode,
    ConfigError,
    Limits,
    ProbeShape,
    ServerConfig,
    Timeouts,
)
from watchdog.io.webconfig import WebConfig, parse_web_config, read_web_config

DEFAULT_SERVER = "http://127.0.0.1:4096"
DEFAULT_LISTEN = "127.0.0.1:9464"
ENV_PREFIX = "OPENCODE_WATCHDOG_"
CREDENTIAL_NAME = "opencode-password"  # systemd LoadCredential= name
# OpenCode sends a heartbeat every 10 s; three missed ones mean the stream is dead.
DEFAULT_LIVENESS = 30.0

_NAME = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,64}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "k": 1024,
    "K": 1024,
    "KB": 1000,
    "MiB": 1024**2,
    "M": 1024**2,
    "MB": 1000**2,
    "GiB": 1024**3,
    "G": 1024**3,
    "GB": 1000**3,
}
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024
# A booting OpenCode answers REST within seconds; waiting the whole liveness window for the
# stream's headers only delays the reconnect.
DEFAULT_HEADERS_TIMEOUT = 10.0
# On SIGTERM, queued alerts get this long to go out; systemd's TimeoutStopSec must be longer.
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the daemon needs, validated."""

    servers: tuple[ServerConfig, ...]
    listen_host: str = "127.0.0.1"
    listen_port: int = 9464
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)  # memory bounds of each server's tracker
    liveness_timeout: float = DEFAULT_LIVENESS
    webhooks: tuple[str, ...] = ()
    alertmanagers: tuple[str, ...] = ()
    log_format: str = "auto"
    log_level: str = "info"
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    headers_timeout: float = DEFAULT_HEADERS_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    # Things worth a warning at start-up that do not stop it (a password file others can read).
    warnings: tuple[str, ...] = ()
    web: WebConfig | None = None  # TLS and basic auth for --listen
    probe_interval: float | None = None  # None: the admission probe does not run
    probe_shapes: tuple[ProbeShape, ...] = (ProbeShape.CURRENT,)
    record: str | None = None  # `--record FILE`: append every received event (a restart applies it)
    record_text: bool = False  # keep prompt and reply text in the recording


@dataclass(slots=True)
class RawOptions:
    """Options as given on the command line (None = not given)."""

    servers: list[str] = field(default_factory=list)
    listen: str | None = None
    first_response_timeout: str | None = None
    inactivity_timeout: str | None = None
    tool_timeout: str | None = None
    turn_start_timeout: str | None = None
    liveness_timeout: str | None = None
    webhooks: list[str] = field(default_factory=list)
    alertmanagers: list[str] = field(default_factory=list)
    password_file: str | None = None
    log_format: str | None = None
    log_level: str | None = None
    config: str | None = None
    max_event_bytes: str | None = None
    max_body_bytes: str | None = None
    headers_timeout: str | None = None
    shutdown_grace: str | None = None
    ca_file: str | None = None
    web_config: str | None = None
    probe_interval: str | None = None
    probe_shapes: list[str] = field(default_factory=list)
    record: str | None = None
    record_text: bool = False
    max_pending_prompts: str | None = None
    max_sessions: str | None = None
    api: str | None = None  # `--api auto|v1|v2`: how every server without its own `api` is watched


_FILE_KEYS = {
    "max_pending_prompts",
    "max_sessions",
    "web_config",
    "web",
    "ca_file",
    "shutdown_grace",
    "headers_timeout",
    "max_event_bytes",
    "max_body_bytes",
    "listen",
    "first_response_timeout",
    "inactivity_timeout",
    "tool_timeout",
    "turn_start_timeout",
    "liveness_timeout",
    "webhook",
    "alertmanager",
    "password_file",
    "log_format",
    "log_level",
    "servers",
    "probe_interval",
    "probe_shape",
    "record",
    "record_text",
    "api",
}
_SERVER_KEYS = {"name", "url", "username", "password_file", "ca_file", "api"}


def load(options: RawOptions, environ: Mapping[str, str]) -> Config:
    """Merge the sources and validate every value."""
    config_path = options.config or environ.get(f"{ENV_PREFIX}CONFIG")
    file = _read_toml(Path(config_path)) if config_path else {}

    def pick(flag: str | None, key: str) -> tuple[str, Any] | None:
        if flag is not None:
            return f"--{key.replace('_', '-')}", flag
        env_key = f"{ENV_PREFIX}{key.upper()}"
        if env_key in environ:
            return env_key, environ[env_key]
        if key in file:
            return f"{config_path}: {key}", file[key]
        return None

    def duration(flag: str | None, key: str, default: float) -> float:
        found = pick(flag, key)
        return default if found is None else parse_duration(*found)

    defaults = Timeouts()
    timeouts = Timeouts(
        first_response=duration(
            options.first_response_timeout, "first_response_timeout", defaults.first_response
        ),
        inactivity=duration(options.inactivity_timeout, "inactivity_timeout", defaults.inactivity),
        tool=duration(options.tool_timeout, "tool_timeout", defaults.tool),
        turn_start=duration(options.turn_start_timeout, "turn_start_timeout", defaults.turn_start),
    )
    liveness = duration(options.liveness_timeout, "liveness_timeout", DEFAULT_LIVENESS)
    headers_timeout = duration(options.headers_timeout, "headers_timeout", DEFAULT_HEADERS_TIMEOUT)
    shutdown_grace = duration(options.shutdown_grace, "shutdown_grace", DEFAULT_SHUTDOWN_GRACE)
    listen_found = pick(options.listen, "listen")
    host, port = parse_listen(*(listen_found or ("--listen", DEFAULT_LISTEN)))
    log_format = _choice(pick(options.log_format, "log_format"), LOG_FORMATS, "auto")
    log_level = _choice(pick(options.log_level, "log_level"), LOG_LEVELS, "info")

    event_cap = pick(options.max_event_bytes, "max_event_bytes")
    body_cap = pick(options.max_body_bytes, "max_body_bytes")
    warnings: list[str] = []
    password_file = pick(options.password_file, "password_file")
    default_password = (
        read_secret(*password_file, warnings=warnings)
        if password_file
        else _default_password(environ)
    )
    default_username = environ.get("OPENCODE_SERVER_USERNAME") or DEFAULT_USERNAME
    ca_found = pick(options.ca_file, "ca_file")
    default_ca = check_ca_file(*ca_found) if ca_found else None
    default_api = ApiMode(
        _choice(pick(options.api, "api"), [m.value for m in ApiMode], ApiMode.AUTO.value)
    )
    servers = _servers(
        options,
        environ,
        file,
        config_path,
        default_username,
        default_password,
        warnings,
        default_api,
    )
    servers = tuple(
        s if s.ca_file or default_ca is None else replace(s, ca_file=default_ca) for s in servers
    )
    probe_found = pick(options.probe_interval, "probe_interval")
    defaults_limits = Limits()
    prompts_found = pick(options.max_pending_prompts, "max_pending_prompts")
    sessions_found = pick(options.max_sessions, "max_sessions")
    limits = Limits(
        sessions=parse_limit(*sessions_found) if sessions_found else defaults_limits.sessions,
        prompts=parse_limit(*prompts_found) if prompts_found else defaults_limits.prompts,
    )
    return Config(
        limits=limits,
        web=_web(options, environ, file, config_path),
        servers=servers,
        listen_host=host,
        listen_port=port,
        timeouts=timeouts,
        liveness_timeout=liveness,
        webhooks=_urls(options.webhooks, "webhook", environ, file, config_path),
        alertmanagers=_urls(options.alertmanagers, "alertmanager", environ, file, config_path),
        log_format=log_format,
        log_level=log_level,
        max_event_bytes=parse_size(*event_cap) if event_cap else DEFAULT_MAX_EVENT_BYTES,
        max_body_bytes=parse_size(*body_cap) if body_cap else DEFAULT_MAX_BODY_BYTES,
        headers_timeout=headers_timeout,
        shutdown_grace=shutdown_grace,
        warnings=tuple(dict.fromkeys(warnings)),
        probe_interval=parse_duration(*probe_found) if probe_found else None,
        probe_shapes=_probe_shapes(options.probe_shapes, environ, file, config_path),
        record=_record_path(pick(options.record, "record")),
        record_text=_flag(pick("1" if options.record_text else None, "record_text")),
    )


def _web(
    options: RawOptions,
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    config_path: str | None,
) -> WebConfig | None:
    """``--web-config FILE`` (or its variable, or ``web_config`` in the file), else ``[web]``."""

    env_key = f"{ENV_PREFIX}WEB_CONFIG"
    if options.web_config is not None:
        return read_web_config("--web-config", options.web_config)
    if environ.get(env_key):
        return read_web_config(env_key, environ[env_key])
    if "web_config" in file:
        if not isinstance(file["web_config"], str):
            raise ConfigError(f"{config_path}: web_config", "expected a file path")
        return read_web_config(f"{config_path}: web_config", file["web_config"])
    if "web" in file:
        if not isinstance(file["web"], dict):
            raise ConfigError(f"{config_path}: web", "expected a [web] table")
        return parse_web_config(f"{config_path}: web", file["web"])
    return None


def parse_size(option: str, value: object) -> int:
    """Bytes from ``1048576``, ``"1MiB"``, ``"512KiB"``, ``"16M"``; from 1 KiB to 1 GiB."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    if size is None or not 1024 <= size <= 1024**3:
        raise ConfigError(
            option,
            f"expected a size from 1KiB to 1GiB such as 1048576, 512KiB or 1MiB, got {value!r}",
        )
    return size


MAX_LIMIT = 10_000_000


def parse_limit(option: str, value: object) -> int:
    """A count from 1 to 10 000 000 (``500``, ``"500"``)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (
        isinstance(value, str)
        and value.strip().isascii()
        and value.strip().isdigit()
        and len(value.strip()) <= 9
    ):
        number = int(value.strip())
    if number is None or not 1 <= number <= MAX_LIMIT:
        raise ConfigError(
            option, f"expected a whole number from 1 to {MAX_LIMIT} such as 1000, got {value!r}"
        )
    return number


def _record_path(found: tuple[str, Any] | None) -> str | None:
    if found is None:
        return None
    option, value = found
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(option, f"expected a file path, got {value!r}")
    return value


def _flag(found: tuple[str, Any] | None) -> bool:
    if found is None:
        return False
    option, value = found
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(option, f"expected true or false, got {value!r}")


def parse_duration(option: str, value: object) -> float:
    """Seconds from ``300``, ``"300"``, ``"90s"``, ``"5m"``, ``"1h"``; must be positive."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not seconds > 0 or seconds > 7 * 86400:
        raise ConfigError(
            option, f"expected a positive duration such as 300, 90s, 5m or 1h, got {value!r}"
        )
    return seconds


def parse_listen(option: str, value: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6)."""
    text = value if isinstance(value, str) else ""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(option, f"expected HOST:PORT such as 127.0.0.1:9464, got {value!r}")
    return host, int(port_text)


def parse_server(option: str, value: str) -> tuple[str, str]:
    """``URL`` or ``NAME=URL``; the name defaults to the URL's host:port."""
    name, sep, url = value.partition("=")
    if not sep or "://" in name:
        name, url = "", value
    url = check_url(option, url)
    if not name:
        name = default_server_name(url)
    if not _NAME.match(name):
        raise ConfigError(option, f"server name must match {_NAME.pattern}, got {name!r}")
    return name, url


def check_url(option: str, url: str) -> str:
    """An http(s) URL with a host and no credentials in it; trailing slash removed."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(option, f"expected an http:// or https:// URL, got {_redact(url)!r}")
    if parts.username or parts.password:
        raise ConfigError(option, "put credentials in a password file, not in the URL")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(option, f"bad port in {url!r}") from None
    return url.strip().rstrip("/")


def default_server_name(url: str) -> str:
    """The URL's host:port, the ``server`` label when no name is given."""
    parts = urlsplit(url)
    host = parts.hostname or "server"
    try:
        ipaddress.IPv6Address(host)
        host = f"[{host}]"
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def check_ca_file(option: str, path: object) -> str:
    """A readable PEM bundle of CA certificates; verification stays on, against these CAs."""
    if not isinstance(path, str) or not path:
        raise ConfigError(option, "expected the path of a PEM file of CA certificates")
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError:  # an OSError too: test it first
        raise ConfigError(option, f"{path} holds no PEM CA certificate") from None
    except OSError as exc:
        raise ConfigError(option, f"cannot read CA file {path}: {exc.strerror or exc}") from None
    return path


def read_secret(option: str, path: object, *, warnings: list[str] | None = None) -> str:
    """The first line of a password file; a file others may read adds to ``warnings``."""
    try:
        file = Path(str(path))
        text = file.read_text(encoding="utf-8")
        mode = file.stat().st_mode
    except OSError as exc:
        raise ConfigError(option, f"cannot read password file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        # The position only: the bytes may be the secret itself.
        raise ConfigError(
            option, f"password file {path} is not UTF-8 text (byte {exc.start} cannot be read)"
        ) from None
    if mode & stat.S_IROTH and warnings is not None:
        warnings.append(
            f"password file {path} is readable by every user; chmod 600 it (or 640 for a group)"
        )
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(option, f"password file {path} is empty")
    return secret


def _default_password(environ: Mapping[str, str]) -> str | None:
    if environ.get("OPENCODE_SERVER_PASSWORD"):
        return environ["OPENCODE_SERVER_PASSWORD"]
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return read_secret("$CREDENTIALS_DIRECTORY", Path(credentials) / CREDENTIAL_NAME)
    return None


def _servers(
    options: RawOptions,
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    config_path: str | None,
    username: str,
    password: str | None,
    warnings: list[str],
    api: ApiMode = ApiMode.AUTO,
) -> tuple[ServerConfig, ...]:
    result: list[ServerConfig] = []
    if options.servers:
        for value in options.servers:
            name, url = parse_server("--server", value)
            result.append(ServerConfig(name, url, username, password, api=api))
    elif environ.get(f"{ENV_PREFIX}SERVER"):
        for value in environ[f"{ENV_PREFIX}SERVER"].replace(",", " ").split():
            name, url = parse_server(f"{ENV_PREFIX}SERVER", value)
            result.append(ServerConfig(name, url, username, password, api=api))
    elif "servers" in file:
        tables = file["servers"]
        if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"{config_path}: servers", "expected [[servers]] tables")
        for i, table in enumerate(tables):
            where = f"{config_path}: servers[{i}]"
            unknown = set(table) - _SERVER_KEYS
            if unknown:
                raise ConfigError(where, unknown_key(sorted(unknown)[0], _SERVER_KEYS))
            if not isinstance(table.get("url"), str):
                raise ConfigError(f"{where}.url", "expected a URL string")
            url = check_url(f"{where}.url", table["url"])
            name = table.get("name") or default_server_name(url)
            if not isinstance(name, str) or not _NAME.match(name):
                raise ConfigError(f"{where}.name", f"must match {_NAME.pattern}")
            user = table.get("username", username)
            if not isinstance(user, str) or not user:
                raise ConfigError(f"{where}.username", "expected a non-empty string")
            secret = (
                read_secret(f"{where}.password_file", table["password_file"], warnings=warnings)
                if "password_file" in table
                else password
            )
            ca_file = (
                check_ca_file(f"{where}.ca_file", table["ca_file"]) if "ca_file" in table else None
            )
            own_api = (
                ApiMode(_choice((f"{where}.api", table["api"]), [m.value for m in ApiMode], ""))
                if "api" in table
                else api
            )
            result.append(ServerConfig(name, url, user, secret, ca_file, api=own_api))
    else:
        result.append(
            ServerConfig(
                default_server_name(DEFAULT_SERVER), DEFAULT_SERVER, username, password, api=api
            )
        )
    names = [s.name for s in result]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError("--server", f"server name {duplicate!r} is used twice")
    return tuple(result)


def _urls(
    flags: Sequence[str],
    key: str,
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    config_path: str | None,
) -> tuple[str, ...]:
    option = f"--{key}"
    values: list[str]
    if flags:
        values = list(flags)
    elif environ.get(f"{ENV_PREFIX}{key.upper()}"):
        option = f"{ENV_PREFIX}{key.upper()}"
        values = environ[option].replace(",", " ").split()
    elif key in file:
        option = f"{config_path}: {key}"
        raw = file[key]
        raw_list = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw_list, list) or not all(isinstance(v, str) for v in raw_list):
            raise ConfigError(option, "expected a URL or a list of URLs")
        values = raw_list
    else:
        return ()
    return tuple(_check_sink_url(option, v) for v in values)


def _probe_shapes(
    flags: Sequence[str],
    environ: Mapping[str, str],
    file: Mapping[str, Any],
    config_path: str | None,
) -> tuple[ProbeShape, ...]:
    env_key = f"{ENV_PREFIX}PROBE_SHAPE"
    option, values = "--probe-shape", list(flags)
    if not values and environ.get(env_key):
        option, values = env_key, environ[env_key].replace(",", " ").split()
    elif not values and "probe_shape" in file:
        option = f"{config_path}: probe_shape"
        raw = file["probe_shape"]
        values = [raw] if isinstance(raw, str) else raw
    if not values:
        return (ProbeShape.CURRENT,)
    allowed = [s.value for s in ProbeShape]
    if not isinstance(values, list) or not all(v in allowed for v in values):
        raise ConfigError(option, f"expected {' or '.join(allowed)} (or a list of them)")
    return tuple(dict.fromkeys(ProbeShape(v) for v in values))


def _check_sink_url(option: str, url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(option, f"expected an http:// or https:// URL, got {_redact(url)!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(
            option, f"bad port in {_redact(url)!r}: expected a number from 1 to 65535"
        )
    return url.strip()


def _choice(found: tuple[str, Any] | None, allowed: Sequence[str], default: str) -> str:
    if found is None:
        return default
    option, value = found
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ConfigError(option, f"expected one of {', '.join(allowed)}, got {value!r}")
    return value.lower()


def unknown_key(key: str, known: set[str]) -> str:
    """`unknown key 'x'`, with the closest known key when one is close enough."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "--config", f"{path} is not UTF-8 text (byte {exc.start} cannot be read)"
        ) from None
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise ConfigError(str(path), unknown_key(sorted(unknown)[0], _FILE_KEYS))
    return data


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(parts.password, "***")
    return url
