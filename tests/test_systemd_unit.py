"""The systemd unit: systemd-analyze accepts it, its sandbox scores OK, its contract holds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from watchdog.app.config import CREDENTIAL_NAME, RawOptions, load

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "opencode-watchdog.service"
EXAMPLE_CONFIG = SYSTEMD_DIR / "config.example.toml"
EXEC_PATH = "/opt/opencode-watchdog/bin/opencode-watchdog"
MAX_EXPOSURE = 2.0

# Where Debian's systemd package (and most others) keeps the units shipped with systemd.
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))


def systemd_analyze() -> str:
    """The systemd-analyze binary; missing it fails the test rather than skipping the check."""
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None
    )
    if found is None:
        pytest.fail(
            "systemd-analyze not found: install the Debian package 'systemd' "
            "(apt-get install -y systemd) to check the unit file",
        )
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze, with no SYSTEMD_* variables of ours changing where it looks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYSTEMD_")}
    return subprocess.run(
        [systemd_analyze(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def unit_settings(text: str) -> dict[str, list[str]]:
    """Each ``[Section]Key`` of a unit file with its values in order (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line
            continue
        key, _, value = line.partition("=")
        settings.setdefault(section + key.strip(), []).append(value.strip())
    return settings


def executables(text: str) -> list[str]:
    """The absolute programs named by the unit's Exec*= lines, prefixes such as '-' removed."""
    found: list[str] = []
    for key, values in unit_settings(text).items():
        if key.startswith("[Service]Exec"):
            for value in values:
                program = value.lstrip("@-:+!").split()[0] if value.strip() else ""
                if program.startswith("/"):
                    found.append(program)
    return found


def fake_root(tmp_path: Path, unit_text: str) -> Path:
    """A file system root holding the unit, systemd's own units, and stubs of its programs.

    verify checks that each Exec*= program is executable, and resolves paths and dependencies
    inside --root. A root of our own lets it check the unit byte for byte, real ExecStart=
    included, without the daemon installed; the stubs are never run.
    """
    root = tmp_path / "root"
    system_units = next((d for d in SYSTEM_UNIT_DIRS if d.is_dir()), None)
    if system_units is None:
        pytest.fail(f"no systemd unit directory in {SYSTEM_UNIT_DIRS}: is 'systemd' installed?")
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    # System programs (/bin/kill) get stubs wherever named; the daemon only at its expected
    # path, so an ExecStart= pointing elsewhere under /opt still fails verify.
    system_programs = {p for p in executables(unit_text) if not p.startswith("/opt/")}
    for program in {EXEC_PATH} | system_programs:
        stub = root / program.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
        stub.chmod(0o755)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / UNIT.name).write_text(unit_text, encoding="utf-8")
    return root


def verify(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on ``unit_text`` installed in a fake root."""
    root = fake_root(tmp_path, unit_text)
    return analyze("verify", f"--root={root}", "--man=no", UNIT.name)


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    """systemd-analyze verify exits 0 and prints nothing: no unknown key, bad value, missing dep."""
    result = verify(tmp_path, UNIT.read_text(encoding="utf-8"))
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    # verify exits 0 on keys it ignores, so a typo only shows up as output.
    assert output == ""


def test_verify_check_catches_typos(tmp_path: Path) -> None:
    """The silence check has teeth: a misspelt key makes verify say so (it still exits 0)."""
    broken = UNIT.read_text(encoding="utf-8").replace("ProtectSystem=", "ProtectSystme=")
    result = verify(tmp_path, broken)
    assert "ProtectSystme" in result.stdout + result.stderr


def test_verify_check_catches_missing_executable(tmp_path: Path) -> None:
    """verify inside the fake root does check ExecStart=: a path with no executable fails."""
    moved = UNIT.read_text(encoding="utf-8").replace(EXEC_PATH, "/opt/elsewhere/bin/nothing")
    result = verify(tmp_path, moved)
    assert result.returncode != 0
    assert "/opt/elsewhere/bin/nothing" in result.stdout + result.stderr


def test_security_exposure_is_ok() -> None:
    """systemd-analyze security --offline rates the sandbox at exposure 2.0 or lower ("OK")."""
    result = analyze("security", "--offline=yes", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", output)
    assert match is not None, f"no exposure level in systemd-analyze output:\n{output}"
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, output


def test_unit_keeps_its_contract_with_the_daemon() -> None:
    """The unit runs the venv's daemon as Type=notify, 30s watchdog, password as a credential."""
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))
    expected = {
        "[Service]Type": ["notify"],
        "[Service]NotifyAccess": ["main"],
        "[Service]WatchdogSec": ["30s"],
        "[Service]ExecStart": [f"{EXEC_PATH} run --config /etc/opencode-watchdog/config.toml"],
        # The credential name is the one the daemon looks for in $CREDENTIALS_DIRECTORY.
        "[Service]LoadCredential": [f"{CREDENTIAL_NAME}:/etc/opencode-watchdog/{CREDENTIAL_NAME}"],
        "[Service]ExecReload": ["/bin/kill -HUP $MAINPID"],
        "[Service]DynamicUser": ["yes"],
        "[Service]Restart": ["on-failure"],
        "[Service]RestartSec": ["5s"],
        "[Service]TimeoutStopSec": ["10s"],
        "[Install]WantedBy": ["multi-user.target"],
    }
    for key, values in expected.items():
        assert settings.get(key) == values, key


def test_unit_does_not_restrict_ip_addresses() -> None:
    """No IP allow or deny list by default: servers may sit on Tailscale or LAN addresses."""
    settings = unit_settings(UNIT.read_text(encoding="utf-8"))
    assert "[Service]IPAddressDeny" not in settings
    assert "[Service]IPAddressAllow" not in settings


def test_example_config_is_valid_toml_with_known_keys() -> None:
    """The example config parses and uses only the documented keys, with timeouts in seconds."""
    config = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    top = {
        "listen",
        "first_response_timeout",
        "inactivity_timeout",
        "tool_timeout",
        "turn_start_timeout",
        "webhook",
        "alertmanager",
        "log_format",
        "log_level",
        "servers",
    }
    assert set(config) <= top
    assert config["listen"] == "127.0.0.1:9464"
    for key in (
        "first_response_timeout",
        "inactivity_timeout",
        "tool_timeout",
        "turn_start_timeout",
    ):
        assert isinstance(config[key], int)
    assert config["servers"]
    for server in config["servers"]:
        assert set(server) <= {"name", "url", "username", "password_file"}
        assert {"name", "url"} <= set(server)


def test_example_config_loads_with_the_unit_as_shipped(tmp_path: Path) -> None:
    """The real loader accepts the example as is, every server taking the unit's credential."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / CREDENTIAL_NAME).write_text("s3cret\n", encoding="utf-8")
    config = load(
        RawOptions(config=str(EXAMPLE_CONFIG)), {"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9464)
    assert [s.name for s in config.servers] == ["laptop", "buildbox"]
    assert all(s.password == "s3cret" for s in config.servers)
    assert all(s.username == "opencode" for s in config.servers)
    assert config.timeouts.tool == 1800
    # No sink is switched on by the example: an example address would be posted to on every alert.
    assert (config.webhooks, config.alertmanagers) == ((), ())
