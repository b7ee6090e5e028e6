"""`opencode-watchdog probe`: one admission probe from the command line, exit 0 or 1 with one line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

import anyio
import httpx

from watchdog import USER_AGENT
from watchdog.app.config import parse_duration, parse_server, read_secret
from watchdog.core.settings import DEFAULT_USERNAME, ConfigError, ProbeShape
from watchdog.io.probe import Probe, ProbeResult, ProbeSpec

EXIT_FAILED = 1


def add_parser(sub: Any) -> None:
    """Register the `probe` subcommand."""
    probe = sub.add_parser(
        "probe",
        help="send one admission probe to a server; exit 0 when it takes prompts in",
        description=(
            "Posts a prompt_async with noReply (no model tokens) to a dedicated probe session and "
            "checks: HTTP 204, the user message stored, no session.error. "
            "Prints one line and exits 0 (ok), 1 (the probe failed) or 2 (bad options)."
        ),
    )
    probe.add_argument(
        "--server", metavar="[NAME=]URL", default="http://127.0.0.1:4096", help="the server"
    )
    probe.add_argument(
        "--shape", choices=[s.value for s in ProbeShape], default=ProbeShape.CURRENT.value
    )
    probe.add_argument("--agent", help="agent the payload names (legacy default: build)")
    probe.add_argument(
        "--model",
        metavar="PROVIDER/MODEL",
        help="model the payload names (legacy default: the server's)",
    )
    probe.add_argument("--directory", help="project directory on the server (?directory=)")
    probe.add_argument(
        "--expect-reply",
        action="store_true",
        help="send a real prompt and wait for the answer (costs model tokens)",
    )
    probe.add_argument("--stored-timeout", default="10s", metavar="DURATION")
    probe.add_argument("--reply-timeout", default="120s", metavar="DURATION")
    probe.add_argument("--password-file", metavar="FILE")
    probe.add_argument("--json", action="store_true", help="print the result as JSON")


def spec_from(args: argparse.Namespace) -> ProbeSpec:
    """The probe settings the flags describe; raises ConfigError."""
    model = args.model
    if model is not None and ("/" not in model or not all(model.partition("/")[::2])):
        raise ConfigError(
            "--model", f"expected PROVIDER/MODEL such as anthropic/claude, got {model!r}"
        )
    return ProbeSpec(
        shape=ProbeShape(args.shape),
        agent=args.agent,
        model=model,
        directory=args.directory,
        expect_reply=args.expect_reply,
        stored_timeout=parse_duration("--stored-timeout", args.stored_timeout),
        reply_timeout=parse_duration("--reply-timeout", args.reply_timeout),
    )


def main(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run one probe and report it; returns the exit code."""
    name, url = parse_server("--server", args.server)
    spec = spec_from(args)
    if args.password_file:
        password: str | None = read_secret("--password-file", args.password_file)
    else:
        password = environ.get("OPENCODE_SERVER_PASSWORD") or None
    username = environ.get("OPENCODE_SERVER_USERNAME") or DEFAULT_USERNAME

    async def probe() -> ProbeResult:
        auth = httpx.BasicAuth(username, password) if password else None
        timeout = httpx.Timeout(10.0, read=30.0)
        headers = {"user-agent": USER_AGENT}
        async with httpx.AsyncClient(auth=auth, timeout=timeout, headers=headers) as client:
            return await Probe(client, url, name).run(spec)

    result = anyio.run(probe)
    if args.json:
        print(json.dumps(result.describe()))
    else:
        print(result.line(), file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else EXIT_FAILED
