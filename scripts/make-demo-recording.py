"""Builds watchdog/app/demo_data/demo.record.jsonl, the demo's bundled recording, from three captures.

The captures (tests/fixtures/opencode/1.18.33: normal, abort, hang-mid; a real `opencode serve`
1.18.33 driven by the fake LLM) are laid end to end as one `/global/event` stream in the format
`run --record` writes, text stripped. Silences are shortened to at most MAX_GAP seconds (longer
than the demo's 2 s timeouts), and a heartbeat ends it, as a live server would send one, so a
replay of the file sees the same stalls as the live demo. Run: python scripts/make-demo-recording.py
"""

from __future__ import annotations

import json
from pathlib import Path

from watchdog.app.replay import event_id_time
from watchdog.opencode.strip import strip_text

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ROOT / "tests" / "fixtures" / "opencode" / "1.18.33"
OUT = ROOT / "watchdog" / "app" / "demo_data" / "demo.record.jsonl"
SCENARIOS = ("normal", "abort", "hang-mid")
START = 1795596000.0  # 2026-11-25, the day of the captures
MAX_GAP = 3.0
BETWEEN = 0.5
TAIL = 3.0


def main() -> None:
    lines: list[str] = []
    at = START
    for n, scenario in enumerate(SCENARIOS):
        text = (CAPTURES / f"{scenario}.global-event.sse").read_text(encoding="utf-8")
        previous: float | None = None
        for raw in text.splitlines():
            if not raw.startswith("data: "):
                continue
            data = json.loads(raw[6:])
            payload = data.get("payload", {})
            if n and payload.get("type") == "server.connected":
                continue  # one connection: one greeting
            event_id = payload.get("id") or payload.get("syncEvent", {}).get("id")
            when = event_id_time(event_id) if isinstance(event_id, str) else None
            when = previous if when is None else when
            if previous is None:
                at += BETWEEN if n else 0.0
            elif when is not None:
                at += min(MAX_GAP, max(0.0, when - previous))
            previous = when
            record = {"at": round(at, 3), "server": "demo", "stream": "/global/event"}
            lines.append(json.dumps({**record, "data": strip_text(data)}, separators=(",", ":")))
    heartbeat = {"payload": {"id": "evt_demo", "type": "server.heartbeat", "properties": {}}}
    record = {"at": round(at + TAIL, 3), "server": "demo", "stream": "/global/event"}
    lines.append(json.dumps({**record, "data": heartbeat}, separators=(",", ":")))
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
