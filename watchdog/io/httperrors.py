"""Names the cause of an HTTP failure for people: connection refused, timeout, TLS, DNS."""

from __future__ import annotations

import socket
import ssl

import httpx


def failure_cause(exc: httpx.HTTPError) -> str:
    """A short, credential-free cause such as ``connection refused`` or ``TLS verification failed
    (certificate has expired)``. httpx wraps the socket error twice; the chain still holds it."""
    match exc:
        case httpx.ConnectTimeout():
            return "timeout while connecting"
        case httpx.TimeoutException():
            return "timeout waiting for the answer"
        case httpx.RemoteProtocolError():
            return f"connection broken ({_first_line(exc)})"
        case _:
            pass
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS verification failed ({cause.verify_message or 'untrusted certificate'})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error ({cause.reason or _first_line(cause)})"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "DNS lookup failed"
    text = _first_line(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS verification failed"
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text})"
    return f"{type(exc).__name__} ({text})"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
