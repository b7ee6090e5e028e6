"""Draw grafana/preview.png: the Grafana dashboard's own queries over a real run, in matplotlib.

A developer script, not a test and not part of the package. It starts, on 127.0.0.1 only:
the fake LLM and two real `opencode serve` (from tests/e2e), the real daemon with short
timeouts, a webhook sink, and a real Prometheus that scrapes the daemon every second and
evaluates prometheus/opencode-watchdog.rules.yml. It drives a few minutes of mixed traffic
(answers, slow answers, hangs, a hang mid-reply, provider errors, a re-sent message id, an
OpenCode restart), then asks Prometheus for every panel query of
grafana/dashboards/opencode-watchdog.json and draws the answers in the dashboard's layout.
Nothing is made up: every value drawn is a Prometheus answer about that run.

matplotlib is not a project dependency; install it apart and point --deps at it:

    .venv/bin/python -m pip install --target /tmp/watchdog-preview-deps matplotlib
    .venv/bin/python -m grafana.render_preview --deps /tmp/watchdog-preview-deps

(`.venv/bin/python grafana/render_preview.py ...` works too.) --save-data keeps Prometheus'
answers as JSON; --from-data draws such a file again without a new run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

from tests.e2e.fakellm import FakeLLM  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    OPENCODE_VERSION,
    DaemonProcess,
    OpenCodeServer,
    WebhookReceiver,
    free_port,
    wait_until,
)

DASHBOARD = REPO_ROOT / "grafana/dashboards/opencode-watchdog.json"
RULES = REPO_ROOT / "prometheus/opencode-watchdog.rules.yml"
OUTPUT = REPO_ROOT / "grafana/preview.png"
PROMETHEUS = "/usr/bin/prometheus"

PLAN_SECONDS = 240.0  # the traffic plan below is written for this length
BASELINE_SECONDS = 20.0  # quiet time before the first prompt, so graphs start from zero
TIMEOUTS = ("--first-response-timeout", "8s", "--inactivity-timeout", "8s")
RATE_INTERVAL = "30s"  # stands in for Grafana's $__rate_interval
STEP_SECONDS = 2  # query step of panels without their own minimum interval
SERVERS = ("dev", "ci")


def log(message: str) -> None:
    """Progress on stderr with a wall-clock stamp."""
    print(f"{datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)


# -- Prometheus -------------------------------------------------------------------------------


class Prometheus:
    """A throwaway Prometheus on 127.0.0.1 that scrapes one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML; no YAML library needed
                {
                    "global": {
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "evaluation_interval": "1s",
                    },
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "opencode-watchdog",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                },
                indent=2,
            )
        )
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments made here
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.http = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)

    def wait_ready(self) -> None:
        """Wait until Prometheus is ready and has loaded the repository's rules."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited:\n" + self.log_path.read_text()[-2000:])
            if self.http.get("/-/ready").status_code != 200:
                return False
            groups = self.http.get("/api/v1/rules").json()["data"]["groups"]
            return len(groups) == 2

        wait_until(ready, 60, "prometheus to be ready with the rules loaded", 0.25)

    def scraped_ok(self) -> bool:
        """Whether the last scrape of the daemon succeeded."""
        result = self.query('up{job="opencode-watchdog"}', time.time())
        return bool(result) and result[0]["value"][1] == "1"

    def _api(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        body = self.http.get(path, params=params).json()
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body}")
        return list(body["data"]["result"])

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Instant query."""
        return self._api("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[dict[str, Any]]:
        """Range query."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}
        return self._api("/api/v1/query_range", params)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; only this process."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


# -- traffic ----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The watched servers and what the traffic plan needs to remember about them."""

    servers: dict[str, OpenCodeServer]
    webhook: WebhookReceiver
    pools: dict[str, list[str]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    named: dict[str, tuple[str, str]] = field(default_factory=dict)  # tag -> (server, session)
    resend: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # tag -> ids
    sent: int = 0

    def idle_pool_session(self, name: str) -> str | None:
        busy = self.servers[name].session_status()
        free = [s for s in self.pools[name] if s not in busy]
        return free[0] if free else None

    def normal(self, name: str, text: str) -> None:
        session = self.idle_pool_session(name)
        if session is None:
            log(f"  {name}: every pool session busy, skipped {text!r}")
            return
        self.servers[name].send_prompt(session, text)
        self.sent += 1

    def special(self, name: str, tag: str, text: str) -> None:
        server = self.servers[name]
        session = server.create_session()
        message = server.send_prompt(session, text)
        self.named[tag] = (name, session)
        self.resend[tag] = (name, session, message)
        self.sent += 1
        log(f"  {name}: {text!r} ({tag})")

    def abort(self, tag: str) -> None:
        name, session = self.named[tag]
        log(f"  {name}: abort {tag} -> {self.servers[name].abort(session)}")

    def send_again(self, tag: str) -> None:
        name, session, message = self.resend[tag]
        server = self.servers[name]
        server.wait_for_reply(session, message, timeout=20)
        status = server.prompt_async(session, "hello again", message_id=message)
        log(f"  {name}: re-sent {message} in {tag} -> {status}")

    def stop_server(self, name: str) -> None:
        self.down.add(name)
        log(f"  {name}: stopping opencode serve -> {self.servers[name].stop()}")

    def start_server(self, name: str) -> None:
        self.servers[name].start()
        self.down.discard(name)
        log(f"  {name}: opencode serve started again")

    def fail_webhook(self, count: int) -> None:
        self.webhook.fail_next(count)
        log(f"  webhook: the next {count} deliveries will get HTTP 500")


Action = tuple[float, str, Callable[[Cluster], None]]


def plan(seconds: float, seed: int) -> list[Action]:
    """The traffic: (offset in seconds, server or '', action) sorted by offset."""
    scale = seconds / PLAN_SECONDS
    rng = random.Random(seed)  # noqa: S311 - a traffic mix, not a secret
    actions: list[Action] = []
    t = 2.0
    while t < PLAN_SECONDS - 5:
        name = "dev" if rng.random() < 0.6 else "ci"
        text = f"SLOW{rng.randint(2, 12)} please" if rng.random() < 0.25 else "hello"
        actions.append((t * scale, name, functools.partial(Cluster.normal, name=name, text=text)))
        # A busier stretch in the middle gives the rate panels something to climb to.
        t += rng.uniform(1.0, 3.0) if 150 <= t <= 185 else rng.uniform(3.0, 7.0)

    def special(at: float, name: str, tag: str, text: str) -> None:
        actions.append((at * scale, name, lambda c: c.special(name, tag, text)))

    def later(at: float, name: str, act: Callable[[Cluster], None]) -> None:
        actions.append((at * scale, name, act))

    special(25, "dev", "hang1", "please HANG")  # no_response, aborted
    later(60, "dev", lambda c: c.abort("hang1"))
    special(45, "ci", "hangmid1", "HANGMID please")  # inactive, aborted
    later(95, "ci", lambda c: c.abort("hangmid1"))
    special(75, "dev", "fail1", "FAIL please")  # retrying, then no_response, aborted
    later(115, "dev", lambda c: c.abort("fail1"))
    special(88, "ci", "dup1", "hello")  # answered, then the same messageID again: dropped
    later(98, "", lambda c: c.fail_webhook(2))
    later(104, "ci", lambda c: c.send_again("dup1"))
    special(118, "ci", "lost1", "please HANG")  # lost in the restart: dropped
    later(128, "", lambda c: c.stop_server("ci"))
    later(146, "", lambda c: c.start_server("ci"))
    special(160, "dev", "hang2", "please HANG")  # no_response, aborted
    later(188, "dev", lambda c: c.abort("hang2"))
    special(166, "ci", "hang3", "please HANG")  # no_response, still stalled at the end
    special(198, "dev", "hangmid2", "HANGMID please")  # inactive, still stalled at the end
    special(210, "dev", "dup2", "hello")
    later(222, "dev", lambda c: c.send_again("dup2"))
    return sorted(actions, key=lambda a: a[0])


def drive(cluster: Cluster, actions: list[Action], start: float, seconds: float) -> None:
    """Run the actions at their offsets from start; actions on a stopped server are skipped."""
    for offset, name, act in actions:
        delay = start + offset - time.time()
        if delay > 0:
            time.sleep(delay)
        if name in cluster.down:
            continue
        try:
            act(cluster)
        except (AssertionError, httpx.HTTPError) as exc:
            log(f"  action at +{offset:.0f}s on {name or '-'} failed: {exc!s:.200}")
    rest = start + seconds - time.time()
    if rest > 0:
        time.sleep(rest)


# -- the run ----------------------------------------------------------------------------------


@contextlib.contextmanager
def stack_of_processes(
    workdir: Path, tree: Path
) -> Iterator[tuple[FakeLLM, dict[str, OpenCodeServer], WebhookReceiver, DaemonProcess]]:
    """Start the fake LLM, the servers, the webhook sink and the daemon; stop them all after."""
    with contextlib.ExitStack() as stack:
        llm = stack.enter_context(FakeLLM())
        servers: dict[str, OpenCodeServer] = {}
        # One password for both servers, so the daemon needs only one.
        password = secrets.token_hex(12)
        for name in SERVERS:
            server = OpenCodeServer(workdir / name, llm.base_url, password=password)
            stack.callback(server.close)
            server.start()
            servers[name] = server
            log(f"opencode serve {OPENCODE_VERSION} '{name}' up on {server.url}")
        webhook = stack.enter_context(WebhookReceiver())
        listen = f"127.0.0.1:{free_port()}"
        args = [f"--server={s.server_arg(n)}" for n, s in servers.items()]
        args += ["--listen", listen, "--webhook", webhook.url, "--log-format", "json"]
        args += [*TIMEOUTS]
        daemon = DaemonProcess(args, env={"OPENCODE_SERVER_PASSWORD": password}, cwd=tree)
        stack.callback(daemon.stop)
        daemon.wait_listening()
        for name in SERVERS:
            daemon.wait_for_sample(
                "opencode_watchdog_stream_up", {"server": name}, lambda v: v == 1
            )
        log(f"daemon up on {listen}, following {', '.join(SERVERS)}")
        yield llm, servers, webhook, daemon


def run(seconds: float, seed: int, keep: bool, tree: Path) -> dict[str, Any]:
    """Do the real run and return Prometheus' answers to every panel query."""
    workdir = Path(tempfile.mkdtemp(prefix="watchdog-preview-"))
    started = time.time()
    try:
        with stack_of_processes(workdir, tree) as (_llm, servers, webhook, daemon):
            prometheus = Prometheus(workdir, daemon.listen or "")
            try:
                prometheus.wait_ready()
                wait_until(prometheus.scraped_ok, 30, "the first scrape of the daemon", 0.25)
                log(f"prometheus up on {prometheus.url}, scraping every 1s")
                # Start the traffic on a whole minute: the 1m-interval panels step on whole
                # minutes, and the plan keeps its stalls clear of those edges, where an
                # increase() over back-to-back windows would miss them.
                time.sleep((-BASELINE_SECONDS - time.time()) % 60)
                range_start = time.time()
                time.sleep(BASELINE_SECONDS)
                cluster = Cluster(servers, webhook)
                for name, server in servers.items():
                    cluster.pools[name] = [server.create_session() for _ in range(3)]
                log(f"driving {seconds:.0f}s of traffic")
                drive(cluster, plan(seconds, seed), time.time(), seconds)
                # Stay quiet until just past a whole minute, so that the panels with a 1m
                # interval (their last step is aligned down to a minute) count every stall.
                time.sleep(2)  # the last scrape and rule evaluation
                time.sleep((3 - time.time()) % 60)
                range_end = time.time()
                log(f"sent {cluster.sent} prompts; querying prometheus")
                data = collect(prometheus, range_start, range_end)
            finally:
                prometheus.stop()
            stalls = [b for b in webhook.bodies if b.get("status") == "firing"]
            failed = sum(1 for r in webhook.requests if r.status >= 300)
            log(f"webhook: {len(webhook.requests)} posts ({failed} failed), {len(stalls)} firing")
    finally:
        if keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    data["meta"]["wall_seconds"] = time.time() - started
    data["meta"]["traffic_seconds"] = seconds
    return data


# -- queries ----------------------------------------------------------------------------------


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, rows included, in file order."""
    dashboard = json.loads(DASHBOARD.read_text())
    return list(dashboard["panels"])


def parse_duration(text: str) -> int:
    """'1m' -> 60, '30s' -> 30."""
    match = re.fullmatch(r"(\d+)([smh])", text)
    if match is None:
        raise ValueError(f"unexpected interval {text!r}")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def substitute(expr: str, interval: str, range_seconds: int) -> str:
    """Replace the Grafana variables the dashboard uses with concrete values."""
    for name, value in (
        ("$__rate_interval", RATE_INTERVAL),
        ("$__interval", interval),
        ("$__range", f"{range_seconds}s"),
        ("$server", ".*"),  # "All" servers, as the variable's allValue
    ):
        expr = expr.replace(name, value)
    if "$" in re.sub(r"\{\{.*?\}\}", "", expr):
        raise ValueError(f"unsubstituted variable in {expr!r}")
    return expr


def collect(prometheus: Prometheus, start: float, end: float) -> dict[str, Any]:
    """Ask Prometheus every panel's queries the way Grafana would for this time range."""
    range_seconds = math.ceil(end - start)
    answers: dict[str, Any] = {}
    for panel in panels():
        if panel["type"] == "row":
            continue
        step = parse_duration(panel["interval"]) if "interval" in panel else STEP_SECONDS
        interval = panel.get("interval", f"{STEP_SECONDS}s")
        # Grafana aligns a range query's start to its step.
        aligned = math.floor(start / step) * step
        targets = []
        for target in panel["targets"]:
            expr = substitute(target["expr"], interval, range_seconds)
            if target.get("instant"):
                result = prometheus.query(expr, end)
            else:
                result = prometheus.query_range(expr, aligned, end, step)
            targets.append({"expr": expr, "step": step, "result": result})
        answers[str(panel["id"])] = targets
    build = prometheus.http.get("/api/v1/status/buildinfo").json()["data"]
    return {
        "meta": {
            "start": start,
            "end": end,
            "opencode": OPENCODE_VERSION,
            "prometheus": build["version"],
            "rate_interval": RATE_INTERVAL,
        },
        "panels": answers,
    }


# -- drawing ----------------------------------------------------------------------------------

BG = "#111217"
PANEL_BG = "#181b1f"
PANEL_EDGE = "#2a2d33"
TEXT = "#ccccdc"
MUTED = "#8e8e9e"
GRID = "#2c2f36"
NAMED = {
    "green": "#73BF69",
    "red": "#F2495C",
    "orange": "#FF9830",
    "yellow": "#FADE2A",
    "purple": "#B877D9",
    "blue": "#5794F2",
    "dark-orange": "#FF780A",
    "text": TEXT,
}
# fmt: off
# Grafana's palette-classic, in order.
CLASSIC = [
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
    "#B7DBAB", "#F4D598", "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0",
]
# fmt: on

GRID_UNIT_PX = 27  # height of one dashboard grid unit in the picture
WIDTH_PX = 1600
HEADER_PX = 58
MARGIN_PX = 8


def color_of(name: str) -> str:
    return NAMED.get(name, name)


def legend_name(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    """A value in a Grafana unit, roughly as Grafana prints it."""
    if math.isnan(value):
        return "-"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if unit == "s":
        if 0 < abs(value) < 1:
            return f"{value * 1000:.0f} ms"
        for limit, div, name in ((60, 1, "s"), (3600, 60, "min"), (math.inf, 3600, "hour")):
            if abs(value) < limit:
                scaled = value / div
                places = 0 if scaled == int(scaled) else (1 if abs(scaled) >= 10 else 2)
                return f"{scaled:.{places}f} {name}"
    suffix = {"opm": " opm", "ops": " ops"}.get(unit, "")
    if decimals is not None:
        return f"{value:.{decimals}f}{suffix}"
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value)}{suffix}"
    places = 2 if abs(value) < 10 else 1
    return f"{value:.{places}f}{suffix}"


def threshold_color(value: float, field_config: dict[str, Any]) -> str:
    steps = field_config["defaults"]["thresholds"]["steps"]
    chosen = steps[0]["color"]
    for step in steps[1:]:
        if value >= step["value"]:
            chosen = step["color"]
    return color_of(chosen)


@dataclass
class Series:
    name: str
    times: list[float]
    values: list[float]
    target: int

    def stat(self, calc: str) -> float:
        real = [v for v in self.values if not math.isnan(v)]
        if not real:
            return math.nan
        return max(real) if calc == "max" else real[-1]


def series_of(panel: dict[str, Any], answers: list[dict[str, Any]]) -> list[Series]:
    """Every series of a panel, on the shared time grid of its query, NaN where absent."""
    result: list[Series] = []
    for index, (target, answer) in enumerate(zip(panel["targets"], answers, strict=True)):
        for item in answer["result"]:
            name = legend_name(target.get("legendFormat", ""), item["metric"])
            if "value" in item:
                ts, raw = item["value"]
                result.append(Series(name, [float(ts)], [float(raw)], index))
            else:
                pairs = [(float(ts), float(raw)) for ts, raw in item["values"]]
                result.append(Series(name, [p[0] for p in pairs], [p[1] for p in pairs], index))
    return result


def on_grid(series: Series, grid: list[float]) -> list[float]:
    known = dict(zip(series.times, series.values, strict=True))
    return [known.get(t, math.nan) for t in grid]


class Painter:
    """Draws panels onto one matplotlib figure in the dashboard's grid."""

    def __init__(self, plt: Any, data: dict[str, Any]) -> None:
        self.plt = plt
        self.data = data
        self.meta = data["meta"]
        rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels())
        self.height_px = HEADER_PX + rows * GRID_UNIT_PX + MARGIN_PX
        self.fig = plt.figure(figsize=(WIDTH_PX / 100, self.height_px / 100), dpi=100)
        self.fig.patch.set_facecolor(BG)
        self.t0 = self.meta["start"]
        self.t1 = self.meta["end"]

    # geometry in figure fractions, from pixel boxes measured from the top left
    def box(self, left: float, top: float, width: float, height: float) -> list[float]:
        return [
            left / WIDTH_PX,
            1 - (top + height) / self.height_px,
            width / WIDTH_PX,
            height / self.height_px,
        ]

    def panel_px(self, grid_pos: dict[str, int]) -> tuple[float, float, float, float]:
        col = (WIDTH_PX - 2 * MARGIN_PX) / 24
        left = MARGIN_PX + grid_pos["x"] * col + 3
        top = HEADER_PX + grid_pos["y"] * GRID_UNIT_PX + 3
        return left, top, grid_pos["w"] * col - 6, grid_pos["h"] * GRID_UNIT_PX - 6

    def text(self, x: float, y: float, s: str, **kw: Any) -> None:
        """Text at pixel position (from the top left)."""
        kw.setdefault("color", TEXT)
        self.fig.text(x / WIDTH_PX, 1 - y / self.height_px, s, **kw)

    def header(self) -> None:
        meta = self.meta
        start = datetime.fromtimestamp(meta["start"]).astimezone()
        minutes = (meta["end"] - meta["start"]) / 60
        self.text(
            MARGIN_PX + 4, 22, "OpenCode watchdog: stalls", fontsize=15, weight="bold", va="center"
        )
        self.text(
            MARGIN_PX + 4,
            44,
            f"Server: All   ·   {start:%Y-%m-%d %H:%M:%S %Z} + {minutes:.1f} min   ·   "
            f"$__rate_interval = {meta['rate_interval']}",
            fontsize=9,
            color=MUTED,
            va="center",
        )
        self.text(
            WIDTH_PX - MARGIN_PX - 4,
            22,
            "Not a Grafana screenshot: the dashboard's queries, answered by Prometheus "
            f"{meta['prometheus']}, drawn with matplotlib",
            fontsize=9,
            color=MUTED,
            ha="right",
            va="center",
        )
        self.text(
            WIDTH_PX - MARGIN_PX - 4,
            44,
            f"real run: opencode-watchdog watching two opencode serve {meta['opencode']} "
            "(fake LLM), 127.0.0.1",
            fontsize=9,
            color=MUTED,
            ha="right",
            va="center",
        )

    def frame(self, panel: dict[str, Any], facecolor: str = PANEL_BG) -> tuple[float, ...]:
        left, top, width, height = self.panel_px(panel["gridPos"])
        ax = self.fig.add_axes(self.box(left, top, width, height))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_facecolor(facecolor)
        for spine in ax.spines.values():
            spine.set_color(PANEL_EDGE)
        self.text(left + 8, top + 13, panel["title"], fontsize=9.5, weight="bold", va="center")
        return left, top, width, height

    def row(self, panel: dict[str, Any]) -> None:
        left, top, _w, _h = self.panel_px(panel["gridPos"])
        self.text(left + 2, top + 12, panel["title"], fontsize=11, weight="bold", va="center")

    # -- stat ---------------------------------------------------------------------------------

    def stat(self, panel: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        options = panel["options"]
        mode = options["colorMode"]
        text_mode = options["textMode"]
        field_config = panel["fieldConfig"]
        unit = field_config["defaults"].get("unit", "short")
        decimals = field_config["defaults"].get("decimals")
        series = series_of(panel, answers)
        left, top, width, height = self.frame(panel)
        if not series:
            self.text(
                left + width / 2,
                top + height / 2 + 8,
                "No data",
                fontsize=14,
                color=MUTED,
                ha="center",
                va="center",
            )
            return
        inner_top, inner_h = top + 26, height - 30
        cell_w = (width - 8) / len(series)
        for i, s in enumerate(series):
            value = s.stat("lastNotNull")
            color = threshold_color(value, field_config)
            x = left + 4 + i * cell_w
            if mode == "background":
                ax = self.fig.add_axes(self.box(x + 2, inner_top, cell_w - 4, inner_h))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_facecolor(color)
                for spine in ax.spines.values():
                    spine.set_visible(False)
            fg = "#ffffff" if mode == "background" else (TEXT if mode == "none" else color)
            shown = format_value(value, unit, decimals)
            center = x + cell_w / 2
            if text_mode == "name":
                self.text(
                    center,
                    inner_top + inner_h / 2,
                    s.name,
                    fontsize=20,
                    color=fg,
                    ha="center",
                    va="center",
                    weight="bold",
                )
            elif text_mode == "value_and_name":
                big = 20 if len(series) < 3 else 17
                self.text(
                    center,
                    inner_top + inner_h * 0.28,
                    s.name,
                    fontsize=9,
                    color=fg,
                    ha="center",
                    va="center",
                )
                self.text(
                    center,
                    inner_top + inner_h * 0.66,
                    shown,
                    fontsize=big,
                    color=fg,
                    ha="center",
                    va="center",
                    weight="bold",
                )
            else:
                self.text(
                    center,
                    inner_top + inner_h / 2,
                    shown,
                    fontsize=24,
                    color=fg,
                    ha="center",
                    va="center",
                    weight="bold",
                )

    # -- time series --------------------------------------------------------------------------

    def colors(self, panel: dict[str, Any], names: list[str]) -> list[str]:
        overrides = panel["fieldConfig"].get("overrides", [])
        result = []
        for i, name in enumerate(names):
            color = CLASSIC[i % len(CLASSIC)]
            for override in overrides:
                matcher = override["matcher"]
                hit = (matcher["id"] == "byName" and matcher["options"] == name) or (
                    matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name)
                )
                for prop in override["properties"] if hit else []:
                    if prop["id"] == "color":
                        color = color_of(prop["value"]["fixedColor"])
            result.append(color)
        return result

    def override(self, panel: dict[str, Any], name: str, prop_id: str) -> Any:
        for override in panel["fieldConfig"].get("overrides", []):
            matcher = override["matcher"]
            if matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], name):
                for prop in override["properties"]:
                    if prop["id"] == prop_id:
                        return prop["value"]
        return None

    def plot_axes(self, left: float, top: float, width: float, height: float) -> Any:
        ax = self.fig.add_axes(self.box(left, top, width, height))
        ax.set_facecolor(PANEL_BG)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.tick_params(colors=MUTED, labelsize=7.5, length=0, pad=3)
        ax.grid(True, color=GRID, linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlim(self.t0, self.t1)
        ticks = list(range(math.ceil(self.t0 / 60) * 60, int(self.t1) + 1, 60))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{datetime.fromtimestamp(t):%H:%M}" for t in ticks])
        return ax

    def unit_axis(self, ax: Any, unit: str) -> None:
        ticker = self.plt.matplotlib.ticker
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=4, steps=[1, 2, 5, 10], min_n_ticks=2))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _p: format_value(v, unit)))

    def legend(
        self, x: float, top: float, width: float, rows: list[tuple[str, str, list[str]]], cols: int
    ) -> None:
        """A Grafana table legend: colour, name, then Max and Last *, in `cols` columns."""
        line = 12.5
        per_col = math.ceil(len(rows) / cols)
        col_w = width / cols
        for c in range(cols):
            cx = x + c * col_w
            head = {"fontsize": 7, "color": MUTED, "ha": "right", "va": "center"}
            self.text(cx + col_w - 70, top + 6, "Max", **head)
            self.text(cx + col_w - 6, top + 6, "Last *", **head)
            for r, (name, color, stats) in enumerate(rows[c * per_col : (c + 1) * per_col]):
                y = top + 6 + (r + 1) * line
                self.text(cx, y, "▬", fontsize=8, color=color, va="center")
                self.text(cx + 16, y, name, fontsize=7.5, va="center")
                self.text(cx + col_w - 70, y, stats[0], fontsize=7.5, ha="right", va="center")
                self.text(cx + col_w - 6, y, stats[1], fontsize=7.5, ha="right", va="center")

    def timeseries(self, panel: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        left, top, width, height = self.frame(panel)
        series = series_of(panel, answers)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        custom = panel["fieldConfig"]["defaults"]["custom"]
        names = [s.name for s in series]
        colors = self.colors(panel, names)
        cols = 3 if len(series) > 12 else (2 if len(series) > 4 else 1)
        legend_rows = math.ceil(len(series) / cols)
        legend_h = 14 + legend_rows * 12.5
        ax = self.plot_axes(
            left + 48,
            top + 28,
            width - 60 - (40 if panel["id"] == 18 else 0),
            height - 28 - 24 - legend_h,
        )
        if not series:
            ax.text(
                0.5,
                0.5,
                "No data",
                color=MUTED,
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=12,
            )
        grid = sorted({t for s in series for t in s.times})
        step = answers[0]["step"]
        stacked = custom["stacking"]["mode"] == "normal"
        base = [0.0] * len(grid)
        right = None
        for s, color in zip(series, colors, strict=True):
            values = on_grid(s, grid)
            style = self.override(panel, s.name, "custom.drawStyle") or custom["drawStyle"]
            axis = ax
            if self.override(panel, s.name, "custom.axisPlacement") == "right":
                if right is None:
                    right = ax.twinx()
                    right.tick_params(colors=MUTED, labelsize=7.5, length=0, pad=3)
                    for spine in right.spines.values():
                        spine.set_visible(False)
                    self.unit_axis(right, self.override(panel, s.name, "unit") or unit)
                axis = right
            bottoms = base if stacked else [0.0] * len(grid)
            fill = self.override(panel, s.name, "custom.fillOpacity") or custom["fillOpacity"]
            if style == "bars":
                heights = [0.0 if math.isnan(v) else v for v in values]
                axis.bar(
                    grid,
                    heights,
                    width=step * 0.6,
                    bottom=bottoms,
                    color=color,
                    alpha=fill / 100,
                    edgecolor=color,
                    linewidth=1,
                )
                top_line = [b + h for b, h in zip(bottoms, heights, strict=True)]
            else:
                top_line = [b + v for b, v in zip(bottoms, values, strict=True)]
                axis.plot(grid, top_line, color=color, linewidth=1.2)
                axis.fill_between(
                    grid, bottoms, top_line, color=color, alpha=fill / 100, linewidth=0
                )
            if stacked:
                base = [b if math.isnan(t) else t for b, t in zip(base, top_line, strict=True)]
        ax.set_xlim(self.t0, self.t1)
        ax.set_ylim(bottom=0)
        if right is not None:
            right.set_ylim(bottom=0)
        self.unit_axis(ax, unit)
        rows = []
        for s, color in zip(series, colors, strict=True):
            s_unit = self.override(panel, s.name, "unit") or unit
            stats = [format_value(s.stat(c), s_unit) for c in ("max", "lastNotNull")]
            rows.append((s.name, color, stats))
        self.legend(left + 10, top + height - legend_h - 4, width - 20, rows, cols)

    # -- heatmap ------------------------------------------------------------------------------

    def heatmap(self, panel: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        left, top, width, height = self.frame(panel)
        mpl = self.plt.matplotlib
        answer = answers[0]
        step = answer["step"]
        by_le: dict[float, dict[float, float]] = {}
        for item in answer["result"]:
            le = float(item["metric"]["le"])
            by_le[le] = {float(ts): float(v) for ts, v in item["values"]}
        bounds = sorted(by_le)
        times = sorted({t for values in by_le.values() for t in values})
        # Prometheus buckets are cumulative; Grafana's "heatmap" format takes differences.
        cells = []
        for i, le in enumerate(bounds):
            below = by_le[bounds[i - 1]] if i else {}
            cells.append([by_le[le].get(t, 0.0) - below.get(t, 0.0) for t in times])
        ax = self.plot_axes(left + 48, top + 28, width - 110, height - 28 - 24)
        ax.grid(False)
        cmap = self.plt.get_cmap("Oranges").copy()
        cmap.set_under(PANEL_BG)
        peak = max((v for row in cells for v in row), default=1.0) or 1.0
        norm = mpl.colors.PowerNorm(gamma=0.5, vmin=1e-9, vmax=peak)
        edges_x = [t - step for t in times] + [times[-1]] if times else [self.t0, self.t1]
        mesh = ax.pcolormesh(
            edges_x,
            range(len(bounds) + 1),
            cells or [[0.0]],
            cmap=cmap,
            norm=norm,
            edgecolors=PANEL_BG,
            linewidth=1,
        )
        labels = [format_value(b, "s") if math.isfinite(b) else "+Inf" for b in bounds]
        ax.set_yticks([i + 1 for i in range(len(bounds))])
        ax.set_yticklabels(labels)
        ax.set_xlim(self.t0, self.t1)
        ax.set_ylim(0, len(bounds))
        bar = self.fig.add_axes(self.box(left + width - 50, top + 34, 10, height - 74))
        colorbar = self.fig.colorbar(mesh, cax=bar)
        colorbar.outline.set_visible(False)
        bar.tick_params(colors=MUTED, labelsize=7, length=0)
        self.text(
            left + width - 10,
            top + 13,
            "prompts per 1m",
            fontsize=7,
            color=MUTED,
            ha="right",
            va="center",
        )

    # -- state timeline -----------------------------------------------------------------------

    def state_timeline(self, panel: dict[str, Any], answers: list[dict[str, Any]]) -> None:
        left, top, width, height = self.frame(panel)
        series = series_of(panel, answers)
        mappings = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
        ax = self.plot_axes(left + 48, top + 28, width - 60, height - 28 - 44)
        ax.grid(False)
        step = answers[0]["step"]
        row_height = panel["options"]["rowHeight"]
        for row, s in enumerate(series):
            y = len(series) - row - 1
            run_start, run_value = None, None
            points = [*zip(s.times, s.values, strict=True), (math.inf, math.nan)]
            for i, (t, v) in enumerate(points):
                gap = i and t - points[i - 1][0] > step * 1.5
                if run_start is not None and (v != run_value or gap):
                    end = points[i - 1][0] + step
                    mapping = mappings.get(str(int(run_value or 0)), {})
                    color = color_of(mapping.get("color", "red"))
                    ax.barh(
                        y,
                        min(end, self.t1) - run_start,
                        left=run_start,
                        height=row_height,
                        color=color,
                        alpha=0.7,
                        linewidth=0,
                    )
                    run_start = None
                if run_start is None and not math.isnan(v):
                    run_start, run_value = t, v
        ax.set_yticks(range(len(series)))
        ax.set_yticklabels([s.name for s in reversed(series)])
        ax.set_ylim(-0.5, len(series) - 0.5)
        ax.set_xlim(self.t0, self.t1)
        for i, (value, mapping) in enumerate(sorted(mappings.items())):
            x = left + 14 + i * 70
            self.text(
                x,
                top + height - 14,
                "■",
                fontsize=10,
                color=color_of(mapping["color"]),
                va="center",
            )
            self.text(
                x + 14, top + height - 14, f"{mapping['text']} ({value})", fontsize=7.5, va="center"
            )

    def draw(self) -> Any:
        self.header()
        for panel in panels():
            kind = panel["type"]
            answers = self.data["panels"].get(str(panel["id"]), [])
            if kind == "row":
                self.row(panel)
            elif kind == "stat":
                self.stat(panel, answers)
            elif kind == "timeseries":
                self.timeseries(panel, answers)
            elif kind == "heatmap":
                self.heatmap(panel, answers)
            elif kind == "state-timeline":
                self.state_timeline(panel, answers)
            else:
                raise ValueError(f"no drawing for panel type {kind!r}")
        return self.fig


def render(data: dict[str, Any], output: Path) -> None:
    """Draw the figure and save it as PNG."""
    import matplotlib  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    plt.rcParams["font.family"] = "DejaVu Sans"
    figure = Painter(plt, data).draw()
    figure.savefig(output, dpi=100, facecolor=BG)
    plt.close(figure)
    # A 256-colour palette keeps the flat picture small enough for a README.
    from PIL import Image  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    with Image.open(output) as image:
        small = image.convert("RGB").quantize(
            256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    small.save(output, optimize=True)
    log(f"wrote {output} ({output.stat().st_size // 1024} KiB)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deps", type=Path, help="directory holding matplotlib (pip --target)")
    parser.add_argument("--seconds", type=float, default=PLAN_SECONDS, help="traffic length")
    parser.add_argument("--seed", type=int, default=7, help="seed of the traffic mix")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--save-data", type=Path, help="also write Prometheus' answers here")
    parser.add_argument("--from-data", type=Path, help="draw saved answers, without a run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--watchdog-tree",
        type=Path,
        default=REPO_ROOT,
        help="directory whose watchdog/ package the daemon runs from (default: this checkout)",
    )
    args = parser.parse_args(argv)
    if args.deps is not None:
        # Appended, so that the project's own packages still win over the drawing ones.
        sys.path.append(str(args.deps.resolve()))
    try:
        import matplotlib  # noqa: F401, PLC0415
    except ImportError:
        parser.error("matplotlib not found: install it apart and pass --deps (see --help)")
    if args.from_data is not None:
        data = json.loads(args.from_data.read_text())
    elif not Path(PROMETHEUS).is_file():
        parser.error(f"{PROMETHEUS} not found: apt-get install prometheus")
    else:
        data = run(args.seconds, args.seed, args.keep, args.watchdog_tree.resolve())
        log(f"run took {data['meta']['wall_seconds']:.0f}s")
        if args.save_data is not None:
            args.save_data.write_text(json.dumps(data))
    render(data, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
