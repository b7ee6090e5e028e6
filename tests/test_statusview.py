"""`status` renders /status as tables, oldest prompt first, colour only when asked; probe settings parse."""

from __future__ import annotations

from typing import Any

import pytest

from watchdog.app.config import RawOptions, load
from watchdog.app.statusview import problems, render
from watchdog.core.settings import ConfigError, ProbeShape

DOCUMENT: dict[str, Any] = {
    "version": "0.1.0",
    "now": "2026-11-30T12:10:00.000Z",
    "servers": [
        {
            "server": "laptop",
            "stream": {
                "state": "up",
                "since": "2026-11-30T12:00:00.000Z",
                "last_event_at": "2026-11-30T12:09:58.000Z",
                "reconnects": 0,
                "last_error": None,
            },
            "pending": [
                {
                    "state": "replying",
                    "age_seconds": 4.0,
                    "session_id": "ses_b",
                    "message_id": "msg_b",
                },
            ],
            "probes": [
                {
                    "server": "laptop",
                    "shape": "current",
                    "ok": False,
                    "at": "2026-11-30T12:09:30.000Z",
                    "failed_step": "stored",
                    "reason": "no user message stored within 10s of the 204",
                    "steps": {"stored": 10.0, "session": 0.01, "accepted": 0.02},
                }
            ],
        },
        {
            "server": "buildbox",
            "stream": {
                "state": "down",
                "since": None,
                "last_event_at": None,
                "last_error": "refused",
            },
            "pending": [
                {
                    "state": "stalled",
                    "age_seconds": 400.0,
                    "session_id": "ses_a",
                    "message_id": "msg_a",
                },
            ],
            "probes": [],
        },
    ],
}


def test_render_lists_pending_prompts_oldest_first_across_servers() -> None:
    text = render(DOCUMENT)
    assert text.index("msg_a") < text.index("msg_b")
    assert "buildbox  stalled   6m40s" in text
    assert "laptop  current  failed at stored  30.0s ago" in text
    # Steps in the order a probe takes them, whatever order the JSON has.
    assert "session 0.010s, accepted 0.020s, stored 10.000s" in text
    assert "\033[" not in text


def test_colour_only_when_asked() -> None:
    assert "\033[31mstalled\033[0m" in render(DOCUMENT, colour=True)


def test_problems_are_down_streams_and_stalled_prompts_only() -> None:
    assert problems(DOCUMENT) == ["buildbox: stream down", "buildbox: prompt msg_a stalled"]
    healthy = {"servers": [DOCUMENT["servers"][0]]}  # a failed probe alone is shown, not a problem
    assert problems(healthy) == []


def test_probe_settings_from_flags_environment_and_file(tmp_path: Any) -> None:
    assert load(RawOptions(), {}).probe_interval is None
    config = load(RawOptions(probe_interval="1m", probe_shapes=["legacy", "current"]), {})
    assert config.probe_interval == 60.0
    assert config.probe_shapes == (ProbeShape.LEGACY, ProbeShape.CURRENT)
    env = {"OPENCODE_WATCHDOG_PROBE_INTERVAL": "30s", "OPENCODE_WATCHDOG_PROBE_SHAPE": "legacy"}
    assert load(RawOptions(), env).probe_shapes == (ProbeShape.LEGACY,)
    file = tmp_path / "c.toml"
    file.write_text('probe_interval = "5m"\nprobe_shape = ["current", "legacy"]\n')
    from_file = load(RawOptions(config=str(file)), {})
    assert from_file.probe_interval == 300.0
    assert from_file.probe_shapes == (ProbeShape.CURRENT, ProbeShape.LEGACY)


@pytest.mark.parametrize(
    ("options", "option"),
    [
        (RawOptions(probe_interval="soon"), "--probe-interval"),
        (RawOptions(probe_shapes=["modern"]), "--probe-shape"),
    ],
)
def test_bad_probe_settings_name_the_option(options: RawOptions, option: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(options, {})
    assert caught.value.option == option
