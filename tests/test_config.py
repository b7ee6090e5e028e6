"""Configuration: flags beat environment beat file; every bad value is one clear line and exit code 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from watchdog.app.cli import main
from watchdog.app.config import RawOptions, load, parse_duration
from watchdog.core.settings import ConfigError, ServerConfig


def test_defaults_watch_the_local_server_and_listen_on_loopback() -> None:
    """With nothing given: server http://127.0.0.1:4096 labelled by host:port, metrics on 127.0.0.1."""
    config = load(RawOptions(), {})
    assert config.servers == (ServerConfig("127.0.0.1:4096", "http://127.0.0.1:4096"),)
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9464)
    assert config.timeouts.first_response == 300
    assert config.timeouts.tool == 1800


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    """The same setting from three places: the flag wins, then the variable, then the file."""
    file = tmp_path / "config.toml"
    file.write_text('first_response_timeout = 10\ninactivity_timeout = 11\ntool_timeout = "2m"\n')
    env = {
        "OPENCODE_WATCHDOG_INACTIVITY_TIMEOUT": "22",
        "OPENCODE_WATCHDOG_FIRST_RESPONSE_TIMEOUT": "21",
    }
    config = load(RawOptions(config=str(file), first_response_timeout="30s"), env)
    assert config.timeouts.first_response == 30
    assert config.timeouts.inactivity == 22
    assert config.timeouts.tool == 120


def test_servers_from_file_with_their_own_credentials(tmp_path: Path) -> None:
    """`[[servers]]` tables carry name, url, username and a password file each."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    file = tmp_path / "config.toml"
    file.write_text(
        f'[[servers]]\nname = "laptop"\nurl = "http://127.0.0.1:4096/"\npassword_file = "{secret}"\n'
        '[[servers]]\nurl = "https://box.tail1234.ts.net"\nusername = "me"\n'
    )
    config = load(RawOptions(config=str(file)), {"OPENCODE_SERVER_PASSWORD": "envpw"})
    assert config.servers == (
        ServerConfig("laptop", "http://127.0.0.1:4096", "opencode", "hunter2"),
        ServerConfig("box.tail1234.ts.net:443", "https://box.tail1234.ts.net", "me", "envpw"),
    )
    assert "hunter2" not in repr(config)


def test_named_servers_on_the_command_line() -> None:
    """`--server NAME=URL` names the server label; plain URLs get host:port."""
    config = load(RawOptions(servers=["a=http://127.0.0.1:1", "http://[::1]:2"]), {})
    assert [s.name for s in config.servers] == ["a", "[::1]:2"]


def test_password_from_systemd_credentials(tmp_path: Path) -> None:
    """Under systemd, LoadCredential= puts the password in $CREDENTIALS_DIRECTORY/opencode-password."""
    (tmp_path / "opencode-password").write_text("fromcreds\n")
    config = load(RawOptions(), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.servers[0].password == "fromcreds"


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (
            RawOptions(first_response_timeout="soon"),
            {},
            "--first-response-timeout: expected a positive duration",
        ),
        (RawOptions(tool_timeout="-5"), {}, "--tool-timeout: expected a positive duration"),
        (
            RawOptions(),
            {"OPENCODE_WATCHDOG_INACTIVITY_TIMEOUT": "0"},
            "OPENCODE_WATCHDOG_INACTIVITY_TIMEOUT: expected",
        ),
        (RawOptions(listen="9464"), {}, "--listen: expected HOST:PORT"),
        (RawOptions(servers=["ftp://x"]), {}, "--server: expected an http:// or https:// URL"),
        (
            RawOptions(servers=["http://u:pw@h:1"]),
            {},
            "--server: put credentials in a password file",
        ),
        (RawOptions(servers=["a=http://h:1", "a=http://h:2"]), {}, "server name 'a' is used twice"),
        (RawOptions(webhooks=["not a url"]), {}, "--webhook: expected an http:// or https:// URL"),
        (RawOptions(log_level="loud"), {}, "--log-level: expected one of debug, info"),
        (
            RawOptions(password_file="/nonexistent/pw"),
            {},
            "--password-file: cannot read password file",
        ),
    ],
)
def test_bad_values_name_the_option(options: RawOptions, env: dict[str, str], message: str) -> None:
    """Each bad value raises ConfigError whose message starts with the option and the expected form."""
    with pytest.raises(ConfigError) as caught:
        load(options, env)
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_bad_file_keys_are_errors_not_silence(tmp_path: Path) -> None:
    """A typo in the config file is an error naming the key, not a silently ignored setting."""
    file = tmp_path / "c.toml"
    file.write_text("first_respons_timeout = 3\n")
    with pytest.raises(ConfigError) as caught:
        load(RawOptions(config=str(file)), {})
    assert str(caught.value) == (
        f"{file}: unknown key 'first_respons_timeout' (did you mean 'first_response_timeout'?)"
    )
    # In [[servers]] the same words, the key quoted the same way.
    file.write_text('[[servers]]\nurl = "http://127.0.0.1:4096"\npasword_file = "/x"\n')
    with pytest.raises(ConfigError) as caught:
        load(RawOptions(config=str(file)), {})
    assert str(caught.value) == (
        f"{file}: servers[0]: unknown key 'pasword_file' (did you mean 'password_file'?)"
    )
    file.write_text("zzz = 1\n")  # nothing close: no guess
    with pytest.raises(ConfigError) as caught:
        load(RawOptions(config=str(file)), {})
    assert str(caught.value) == f"{file}: unknown key 'zzz'"
    file.write_text("this is = not toml [")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(RawOptions(config=str(file)), {})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("250ms", 0.25), (45, 45)],
)
def test_durations(text: str | int, seconds: float) -> None:
    """Durations take plain seconds or a unit."""
    assert parse_duration("--x", text) == seconds


def test_cli_bad_flag_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The command prints one line naming the option and exits with code 2."""
    assert main(["run", "--inactivity-timeout", "never"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "opencode-watchdog: error: --inactivity-timeout: "
        "expected a positive duration such as 300, 90s, 5m or 1h, got 'never'"
    ]


def test_cli_busy_listen_address_exits_2(tmp_path: Path) -> None:
    """A metrics address already in use is a configuration error, not a traceback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "watchdog",
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--server",
                "http://127.0.0.1:9",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert f"--listen: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
