"""What the NATS connection reads and says: server URLs parsed, names made safe,
JetStream's replies read, nats-py's errors described, a client of a finished loop let go."""

from __future__ import annotations

import re
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from omniq._loops import abort_transport, quietly
from omniq._urls import redact_url

__all__ = [
    "abandon",
    "describe",
    "final",
    "redact",
    "sanitize",
    "seq_of",
    "servers_of",
    "status_error",
    "stopped",
]

_DEFAULT_PORT = 4222
_SCHEMES = ("nats", "tls")
_BAD_NAME = re.compile(r"[^A-Za-z0-9_-]")


def sanitize(namespace: str) -> str:
    """``namespace`` as a name NATS accepts in stream, bucket and subject names: each
    character outside ``[A-Za-z0-9_-]`` becomes ``_``."""
    return _BAD_NAME.sub("_", namespace) or "_"


def servers_of(url: str) -> tuple[list[str], str | None]:
    """The server URLs of ``nats://[creds@]a:4222,b:4222`` (each with the credentials),
    or ``(servers, problem)`` when the URL is malformed."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return [], str(exc)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        return [], f"expected nats:// or tls://, not {parts.scheme}://"
    creds, _, hosts = parts.netloc.rpartition("@")
    servers = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not colon:
            name, port = host, str(_DEFAULT_PORT)
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            return [], f"expected host:port, not {host!r}"
        servers.append(f"{scheme}://{creds + '@' if creds else ''}{name}:{port}")
    if parts.path not in ("", "/"):
        return [], f"a NATS URL has no path (got {parts.path!r})"
    return servers, None


def redact(url: str) -> str:
    """``url`` for messages: a password, and a token (a user part without a password,
    ``nats://token@host``), shown as ``***``."""
    shown = redact_url(url)
    head, sep, rest = shown.partition("://")
    creds, at, hosts = rest.rpartition("@")
    if sep and at and ":" not in creds:
        return f"{head}://***@{hosts}"
    return shown


class _PubAck(msgspec.Struct):
    """The fields of a JetStream publish acknowledgement read here (the others skipped
    by the decoder, cheaper than a dict of them all)."""

    seq: int | None = None
    error: dict[str, Any] | None = None


_ACK_DECODER = msgspec.json.Decoder(_PubAck)


def seq_of(reply: Msg) -> int:
    """The stream sequence a JetStream publish got, from its acknowledgement; raises
    nats-py's error for an error reply."""
    headers = reply.headers
    if headers and headers.get("Status") is not None:
        raise status_error(headers)
    try:
        answer = _ACK_DECODER.decode(reply.data)
    except msgspec.DecodeError as exc:
        raise nats.errors.Error(f"unreadable acknowledgement {reply.data[:80]!r}") from exc
    if answer.error:
        raise nats.js.errors.APIError.from_error(answer.error)
    if answer.seq is None:
        raise nats.errors.Error(f"acknowledgement without a sequence: {reply.data[:80]!r}")
    return answer.seq


def status_error(headers: dict[str, str]) -> Exception:
    """A status reply (no JetStream listening: 503) as nats-py's error."""
    if headers.get("Status") == "503":
        return nats.js.errors.ServiceUnavailableError(description="no responders")
    return nats.errors.Error(f"status {headers.get('Status')}: {headers.get('Description', '')}")


_BLANK = re.compile(r"\s")


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's ``Client._parse_header_lines`` (same result), without its per-character
    generator over each name: it runs for every message the task watch brings (each
    carries the compare-and-set's header), so :class:`NATSConnection` sets it on its
    client."""
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _BLANK.search(key) is None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


def abandon(nc: Client) -> None:
    """Let go of a client whose loop finished, or closed without shutting down: its
    socket closed at once, and its tasks ended as far as that loop allows (a closed
    loop cannot run them: their coroutines are closed in place, without the warnings
    of tasks destroyed pending)."""
    tasks = [nc._reading_task, nc._ping_interval_task, nc._flusher_task]
    tasks += [getattr(sub, "_wait_for_msgs_task", None) for sub in nc._subs.values()]
    for task in tasks:
        if task is None or task.done():
            continue
        if task.get_loop().is_closed():
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            quietly(task.get_coro().close)
        else:
            quietly(task.cancel)
    writer = getattr(nc._transport, "_io_writer", None)
    if writer is not None:
        # Marked closing first (a closed loop refuses the rest of close()), so the
        # stream writer's own finalizer has nothing left to warn about.
        quietly(writer.transport.close)
        abort_transport(writer.transport)


def stopped(nc: Client | None) -> bool:
    """True when ``nc`` is connected but its reading task was cancelled (not by a
    reconnect: the loop is shutting down), so no reply would ever be read."""
    if nc is None or not nc.is_connected:
        return False
    reader = nc._reading_task
    return reader is None or reader.done() or reader.cancelling() > 0


def final(exc: BaseException) -> bool:
    """True for a refusal a new try would meet again: a certificate, an authorization."""
    return isinstance(exc, ssl.SSLError) or "authorization" in describe(exc)


def describe(exc: BaseException) -> str:
    """A short reason for ``exc`` (nats-py's own messages are often empty)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is nats-server running there?)"
    if isinstance(exc, nats.errors.AuthorizationError):
        return "authorization refused (check the user, password or token in the URL)"
    if isinstance(exc, TimeoutError | nats.errors.TimeoutError):
        return "no answer in time"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server answered"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate was refused ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    text = str(exc) or type(exc).__name__
    if "authorization" in text.lower():
        return "authorization refused (check the user, password or token in the URL)"
    return text
