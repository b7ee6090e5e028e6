"""sd_notify protocol against real AF_UNIX datagram sockets, as systemd would receive it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.io.sdnotify import Notifier


@pytest.fixture
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for systemd's notify socket, and its path."""
    # tmp_path_factory keeps the path short: sun_path holds at most 107 bytes.
    path = str(tmp_path_factory.mktemp("sd") / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(2.0)
        yield path, sock


@pytest.fixture
def abstract_manager() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in the abstract namespace, and its NOTIFY_SOCKET spelling with '@'."""
    name = f"opencode-watchdog-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        yield "@" + name, sock


def received(sock: socket.socket) -> bytes:
    """The next datagram the fake manager got."""
    return sock.recv(4096)


def test_ready_sends_ready_datagram(manager: tuple[str, socket.socket]) -> None:
    """ready() sends exactly READY=1 to the socket named by NOTIFY_SOCKET."""
    path, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready() is True
    assert received(sock) == b"READY=1"


def test_ready_with_status_is_one_datagram(manager: tuple[str, socket.socket]) -> None:
    """ready(status) sends READY=1 and STATUS=... together, newline-separated, in one datagram."""
    path, sock = manager
    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).ready("watching 2 servers") is True
    assert received(sock) == b"READY=1\nSTATUS=watching 2 servers"


def test_stopping_watchdog_and_status_datagrams(manager: tuple[str, socket.socket]) -> None:
    """stopping(), watchdog_ping() and status() send STOPPING=1, WATCHDOG=1 and STATUS=text."""
    path, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.watchdog_ping() is True
    assert received(sock) == b"WATCHDOG=1"
    assert notifier.status("2 stalled prompts on work") is True
    assert received(sock) == b"STATUS=2 stalled prompts on work"
    assert notifier.stopping() is True
    assert received(sock) == b"STOPPING=1"


def test_status_is_utf8(manager: tuple[str, socket.socket]) -> None:
    """Status text that is not ASCII goes out UTF-8 encoded, as systemd reads it."""
    path, sock = manager
    assert Notifier.from_environ({"NOTIFY_SOCKET": path}).status("prêt — 1 serveur") is True
    assert received(sock) == "STATUS=prêt — 1 serveur".encode()


def test_status_cannot_inject_other_assignments(manager: tuple[str, socket.socket]) -> None:
    """Line breaks in status text become spaces, so no status can add a READY=1 line of its own."""
    path, sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.status("server said:\nREADY=1\r\nWATCHDOG=1") is True
    assert received(sock) == b"STATUS=server said: READY=1  WATCHDOG=1"


def test_abstract_socket(abstract_manager: tuple[str, socket.socket]) -> None:
    """A NOTIFY_SOCKET starting with '@' names an abstract socket, reached via a leading NUL."""
    address, sock = abstract_manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready() is True
    assert received(sock) == b"READY=1"
    assert notifier.watchdog_ping() is True
    assert received(sock) == b"WATCHDOG=1"


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}], ids=["unset", "empty"])
def test_without_notify_socket_everything_is_a_no_op(environ: dict[str, str]) -> None:
    """Without NOTIFY_SOCKET (not run by systemd) every call does nothing and answers False."""
    notifier = Notifier.from_environ(environ)
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.ready("status") is False
    assert notifier.stopping() is False
    assert notifier.watchdog_ping() is False
    assert notifier.status("text") is False
    assert notifier.watchdog_interval() is None


def test_missing_socket_path_does_not_raise(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET path that does not exist makes sends answer False instead of raising."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.ready() is False
    assert notifier.watchdog_ping() is False
    assert notifier.stopping() is False


def test_dead_socket_does_not_raise(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A socket file whose manager has gone (connection refused) makes sends answer False."""
    path = str(tmp_path_factory.mktemp("sd") / "dead")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
    assert os.path.exists(path)
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.watchdog_ping() is False
    assert notifier.status("still here") is False


def test_dead_abstract_socket_does_not_raise() -> None:
    """An abstract name nobody listens on makes sends answer False."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": f"@nobody-{uuid.uuid4().hex}"})
    assert notifier.ready() is False


@pytest.mark.parametrize("address", ["relative/notify", "@", "vsock:2:1234"])
def test_unsupported_addresses_are_refused(address: str) -> None:
    """Addresses that are neither absolute paths nor '@name' are not sent to; sends answer False."""
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    assert notifier.ready() is False


def test_full_queue_fails_fast_instead_of_blocking(manager: tuple[str, socket.socket]) -> None:
    """When the manager stops reading and its queue fills, sends answer False rather than block."""
    path, _sock = manager
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    # The kernel queues only a handful of datagrams per socket (net.unix.max_dgram_qlen).
    results = [notifier.watchdog_ping() for _ in range(2000)]
    assert results[0] is True
    assert False in results


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000"}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"}, None),
        ({}, None),
        ({"WATCHDOG_PID": "4242"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "30s"}, None),
        ({"WATCHDOG_USEC": "3_000"}, None),
        ({"WATCHDOG_USEC": " 30000000"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC gives the interval in seconds, only if WATCHDOG_PID is unset or is our pid."""
    assert Notifier.from_environ(environ, pid=4242).watchdog_interval() == expected


def test_watchdog_pid_defaults_to_our_pid() -> None:
    """Without an explicit pid, WATCHDOG_PID is compared with the running process's pid."""
    ours = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environ(ours).watchdog_interval() == 20.0
    theirs = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environ(theirs).watchdog_interval() is None


def test_watchdog_interval_does_not_need_notify_socket() -> None:
    """The interval is read from WATCHDOG_USEC alone; sending still needs NOTIFY_SOCKET."""
    notifier = Notifier.from_environ({"WATCHDOG_USEC": "10000000"})
    assert notifier.watchdog_interval() == 10.0
    assert notifier.watchdog_ping() is False


def test_environ_is_read_once_at_construction(manager: tuple[str, socket.socket]) -> None:
    """The notifier keeps what it read: later changes to the mapping do not redirect it."""
    path, sock = manager
    environ = {"NOTIFY_SOCKET": path}
    notifier = Notifier.from_environ(environ)
    environ["NOTIFY_SOCKET"] = "/nonexistent/elsewhere"
    assert notifier.ready() is True
    assert received(sock) == b"READY=1"
