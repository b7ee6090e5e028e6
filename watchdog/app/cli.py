"""The `opencode-watchdog` command: `run` watches servers, `demo` shows it working without one."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import anyio

from watchdog import __version__
from watchdog.app import probe_cli, statusview
from watchdog.app.config import RawOptions, load, parse_duration
from watchdog.app.logs import configure
from watchdog.core.settings import ConfigError, Timeouts
from watchdog.io.sdnotify import Notifier

EXIT_CONFIG = 2


def parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the README)."""
    top = argparse.ArgumentParser(
        prog="opencode-watchdog",
        description="Watches OpenCode servers for prompts that never get a reply.",
    )
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="watch one or more OpenCode servers (the service)")
    run.set_defaults(usage_of=run)
    run.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="server to watch, repeatable (default http://127.0.0.1:4096)",
    )
    run.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="metrics, /healthz and /status (default 127.0.0.1:9464)",
    )
    run.add_argument(
        "--first-response-timeout",
        metavar="DURATION",
        help="silence allowed before the model's first output (default 300s)",
    )
    run.add_argument(
        "--inactivity-timeout",
        metavar="DURATION",
        help="silence allowed in the middle of a reply (default 300s)",
    )
    run.add_argument(
        "--tool-timeout",
        metavar="DURATION",
        help="silence allowed while a tool runs (default 1800s)",
    )
    run.add_argument(
        "--turn-start-timeout",
        metavar="DURATION",
        help="a message that starts no turn this long was sent with noReply (default 30s)",
    )
    run.add_argument(
        "--liveness-timeout",
        metavar="DURATION",
        help="a stream silent this long is dead and reopened (default 30s)",
    )
    run.add_argument(
        "--webhook",
        action="append",
        default=[],
        metavar="URL",
        help="POST every stall and resolution here as JSON, repeatable",
    )
    run.add_argument(
        "--alertmanager",
        action="append",
        default=[],
        metavar="URL",
        help="Alertmanager (v2 API) to send stalls to, repeatable: one per cluster replica",
    )
    run.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the server password (else $OPENCODE_SERVER_PASSWORD)",
    )
    run.add_argument(
        "--headers-timeout",
        metavar="DURATION",
        help="wait this long for a stream's response headers before retrying (default 10s)",
    )
    run.add_argument(
        "--shutdown-grace",
        metavar="DURATION",
        help="on SIGTERM, queued alerts get this long to be delivered (default 5s)",
    )
    run.add_argument(
        "--max-event-bytes",
        metavar="SIZE",
        help="larger stream events are skipped and counted (default 1MiB)",
    )
    run.add_argument(
        "--max-body-bytes",
        metavar="SIZE",
        help="larger REST answers are skipped and counted (default 16MiB)",
    )
    run.add_argument(
        "--max-pending-prompts",
        metavar="N",
        help="per server, prompts tracked at most: past it the oldest end evicted (default 10000)",
    )
    run.add_argument(
        "--max-sessions",
        metavar="N",
        help="per server, sessions remembered at most: the least recently active go (default 10000)",
    )
    run.add_argument(
        "--ca-file",
        metavar="FILE",
        help="PEM CA bundle to verify https servers with (a private CA); per server: ca_file",
    )
    run.add_argument(
        "--web-config",
        metavar="FILE",
        help="TOML with tls_server_config and basic_auth_users for --listen (exporter-toolkit keys)",
    )
    run.add_argument(
        "--probe-interval",
        metavar="DURATION",
        help="send an admission probe to each server this often (default: no probes)",
    )
    run.add_argument(
        "--probe-shape",
        action="append",
        default=[],
        choices=("current", "legacy"),
        help="payload shape of the probes, repeatable (default current)",
    )
    run.add_argument(
        "--api",
        choices=("auto", "v1", "v2"),
        help="API of the servers: auto asks GET /api/info at each connect (default auto);"
        " per server: api",
    )
    run.add_argument("--config", metavar="FILE", help="TOML file with the same settings")
    run.add_argument("--log-format", metavar="auto|json|console")
    run.add_argument("--log-level", metavar="debug|info|warning|error")
    run.add_argument(
        "--record",
        metavar="FILE",
        help="append every received event to FILE as JSON lines, for `replay` (rotates at 64 MiB)",
    )
    run.add_argument(
        "--record-text",
        action="store_true",
        help="keep prompt and reply text in the recording (stripped by default)",
    )
    replay = sub.add_parser(
        "replay",
        help="replay a recording (run --record) or capture: stalls, latencies, timeout sweep",
    )
    replay.set_defaults(usage_of=replay)
    replay.add_argument("files", nargs="+", metavar="FILE", help="recording(s), oldest first")
    replay.add_argument(
        "--first-response-timeout",
        default="300s",
        metavar="DURATION",
        help="as for run (default 300s)",
    )
    replay.add_argument(
        "--inactivity-timeout", default="300s", metavar="DURATION", help="as for run (default 300s)"
    )
    replay.add_argument(
        "--tool-timeout", default="1800s", metavar="DURATION", help="as for run (default 1800s)"
    )
    replay.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="D[,D...]",
        help="candidate timeouts: each is replayed as the first-response and inactivity timeout",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    demo = sub.add_parser("demo", help="replay a bundled recording with a stalled prompt")
    demo.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where to serve the page and /metrics (default: a free port on 127.0.0.1)",
    )
    demo.add_argument(
        "--hold", action="store_true", help="keep serving /metrics after the replay until Ctrl-C"
    )
    demo.add_argument("--log-format", default="auto", choices=("auto", "json", "console"))
    probe_cli.add_parser(sub)
    statusview.add_parser(sub)
    demo.set_defaults(usage_of=demo)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    top = parser()
    args, unknown = top.parse_known_args(argv)
    if unknown:
        # A subcommand's unknown flag gets that subcommand's usage, not the top-level one.
        getattr(args, "usage_of", top).error(f"unrecognized arguments: {' '.join(unknown)}")
    environ = dict(os.environ)
    if args.command == "demo":
        from watchdog.app.demo import run_demo  # noqa: PLC0415 - only the demo needs its recording

        configure(args.log_format, "info", sys.stdout)
        try:
            return run_demo(args.listen, hold=args.hold)
        except ConfigError as exc:
            return _config_error(exc)
    if args.command == "status":
        return statusview.main(args)
    if args.command == "probe":
        try:
            return probe_cli.main(args, environ)
        except ConfigError as exc:
            return _config_error(exc)
    if args.command == "replay":
        return _replay(args)
    if args.command != "run":
        parser().print_help()
        return EXIT_CONFIG
    options = RawOptions(
        servers=args.server,
        listen=args.listen,
        first_response_timeout=args.first_response_timeout,
        inactivity_timeout=args.inactivity_timeout,
        tool_timeout=args.tool_timeout,
        turn_start_timeout=args.turn_start_timeout,
        liveness_timeout=args.liveness_timeout,
        webhooks=args.webhook,
        alertmanagers=args.alertmanager,
        password_file=args.password_file,
        log_format=args.log_format,
        log_level=args.log_level,
        config=args.config,
        max_event_bytes=args.max_event_bytes,
        max_body_bytes=args.max_body_bytes,
        headers_timeout=args.headers_timeout,
        shutdown_grace=args.shutdown_grace,
        ca_file=args.ca_file,
        web_config=args.web_config,
        probe_interval=args.probe_interval,
        probe_shapes=args.probe_shape,
        record=args.record,
        record_text=args.record_text,
        max_pending_prompts=args.max_pending_prompts,
        max_sessions=args.max_sessions,
        api=args.api,
    )
    try:
        config = load(options, environ)
    except ConfigError as exc:
        return _config_error(exc)
    configure(config.log_format, config.log_level, sys.stdout)
    from watchdog.app.daemon import Daemon  # noqa: PLC0415 - keeps `--help` and bad flags fast

    async def serve() -> None:
        daemon = Daemon(
            config,
            notifier=Notifier.from_environ(environ),
            reload=lambda: load(options, dict(os.environ)),
        )
        await daemon.run()

    try:
        anyio.run(serve)
    except ConfigError as exc:
        return _config_error(exc)
    except KeyboardInterrupt:
        pass
    return 0


def _replay(args: argparse.Namespace) -> int:
    from watchdog.app.replay import replay_files  # noqa: PLC0415 - only replay needs it

    try:
        timeouts = Timeouts(
            first_response=parse_duration("--first-response-timeout", args.first_response_timeout),
            inactivity=parse_duration("--inactivity-timeout", args.inactivity_timeout),
            tool=parse_duration("--tool-timeout", args.tool_timeout),
        )
        candidates = [
            parse_duration("--sweep", value)
            for given in args.sweep
            for value in given.split(",")
            if value.strip()
        ]
        print(replay_files(args.files, timeouts, candidates, as_json=args.json))
    except ConfigError as exc:
        return _config_error(exc)
    except OSError as exc:
        return _config_error(ConfigError("FILE", f"cannot read {exc.filename}: {exc.strerror}"))
    return 0


def _config_error(exc: ConfigError) -> int:
    print(f"opencode-watchdog: error: {exc}", file=sys.stderr)
    return EXIT_CONFIG
