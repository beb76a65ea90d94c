"""The HTTP/1.1 connection handling under the transformer: uvicorn's h11 protocol plus the two
limits uvicorn does not have.

- **Header size**: h11 buffers at most ``max_header_bytes`` of an unfinished request head; past
  that the client gets ``431 Request Header Fields Too Large`` and the connection is closed (uvicorn
  answers every h11 error with 400; its default ``httptools`` parser buffers headers without
  limit: 30 clients each sending an endless header cost 640 MB).
- **Header read timeout**: a request head must arrive within ``header_timeout`` seconds of its
  first byte (or of the connection opening); a slow client gets ``408 Request Timeout`` and is
  disconnected, instead of holding a connection for ever. The body's own deadline is
  :class:`serving.http_layer.RequestGuard`'s.
- **Lingering close** (as nginx does): a response that closes the connection while the client is
  still sending its body (a 503 shed before the body is read, a 413, a 408) half-closes the
  socket and reads and discards what the client still sends, for up to ``LINGER_SECONDS``, before
  closing. Closing at once with unread bytes makes the kernel send a TCP reset, which destroys the
  answer in flight: 70 % of shed uploads saw a reset instead of 503 + ``Retry-After``, and
  retried at once. Discarded bytes are never held.
- **Idle connections do not count against capacity**: a connection with no request in progress
  (fresh, half a head sent, or an idle keep-alive one) is in the idle set, capped at
  ``max_idle_connections``; one more evicts the longest idle (closes it, as servers close idle
  keep-alive connections; a client retries those). ``max_connections`` counts only connections
  whose request is being handled (uvicorn's own ``limit_concurrency`` counted idle ones too:
  2,000 idle sockets made every real request a 503).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("snapcat.serving")

#: Largest request head (request line plus headers) accepted.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
#: Seconds a client has to send a complete request head.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Connections with no request in progress kept at once; the longest idle is closed past it.
DEFAULT_MAX_IDLE_CONNECTIONS = 512
#: Seconds a refused upload's remaining bytes are read and discarded before the socket closes.
LINGER_SECONDS = 5.0

_QUIET_UVICORN = logging.getLogger("uvicorn.error.h11")
_QUIET_UVICORN.addFilter(lambda record: record.getMessage() != "Invalid HTTP request received.")

_PHRASES = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _Connection(h11.Connection):
    """Remembers the status h11 suggests for the last protocol error (431 for a head too long)."""

    error_status = 400

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_status = exc.error_status_hint
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a 431 for oversized heads. uvicorn takes
    the protocol class as ``Config(http=...)``; ``header_timeout`` is set on the subclass
    :func:`protocol_class` builds."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_connections: int = 1000  # connections whose request is being handled
    max_idle_connections: int = DEFAULT_MAX_IDLE_CONNECTIONS
    #: This server's idle connections, longest idle first (a fresh dict per protocol_class()).
    idle: OrderedDict = OrderedDict()

    def __init__(self, config, server_state, app_state, _loop=None):
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(h11.SERVER, config.h11_max_incomplete_event_size)
        # uvicorn logs a warning per bad request head before answering; ours is the one line.
        self.logger = _QUIET_UVICORN
        self._header_timer: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None
        self._lost = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.transport = _LingeringTransport(transport, self)
        self._arm_header_timer()
        self._set_idle(True)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            return  # the rest of a refused upload: discarded
        # uvicorn refuses a request (503) when len(connections) or len(tasks) reaches
        # limit_concurrency; counting the idle ones in the allowance makes it busy ones only.
        self.limit_concurrency = self.max_connections + len(self.idle)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._set_idle(False)
        if self.conn.their_state is h11.IDLE:
            self._arm_header_timer()  # (part of) a new request head: it has to finish in time
        else:
            self._cancel_header_timer()

    def eof_received(self):
        if self._lingering is not None:
            self.transport.close_now()
            return None
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._cancel_header_timer()
        self._set_idle(False)
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Idle keep-alive connections are the keep-alive timeout's; the header timer starts again
        # with the next request's first byte.
        self._cancel_header_timer()
        if not self.transport.is_closing():
            self._set_idle(True)

    def _set_idle(self, idle: bool) -> None:
        if not idle:
            self.idle.pop(self, None)
            return
        self.idle[self] = None
        self.idle.move_to_end(self)
        while len(self.idle) > self.max_idle_connections:
            oldest, _ = self.idle.popitem(last=False)
            oldest.transport.close_now()

    def linger(self) -> bool:
        """Half-closes a connection whose client is still sending the body of a request already
        answered, and discards what comes until the client is done or ``LINGER_SECONDS`` pass.
        False when there is nothing to wait for (the socket may close at once)."""
        raw = self.transport.raw
        if (
            self.conn.their_state is not h11.SEND_BODY
            or self._lingering is not None
            or self._lost
            or raw.is_closing()
        ):
            return False
        self._set_idle(False)
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        self._lingering = self.loop.call_later(LINGER_SECONDS, raw.close)
        if raw.can_write_eof():
            raw.write_eof()  # the answer, then FIN: the client reads it once it is done sending
        raw.resume_reading()
        return True

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its head was complete
        logger.info(
            "%s: HTTP 408: the request head did not arrive within %g s",
            self._peer(),
            self.header_timeout,
        )
        self._send_error(408, f"the request head did not arrive within {self.header_timeout:g} s")

    def send_400_response(self, msg: str) -> None:
        status = self.conn.error_status
        if status == 431:
            msg = (
                "the request head (request line and headers) is over "
                f"{self.config.h11_max_incomplete_event_size} bytes"
            )
        logger.info("%s: HTTP %d: %s", self._peer(), status, msg)
        self._send_error(status if status in _PHRASES else 400, msg)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"

    def _send_error(self, status: int, message: str) -> None:
        self._cancel_header_timer()
        body = json.dumps({"error": message}).encode("utf-8")
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n" % (status, _PHRASES[status], len(body))
        )
        # Written raw: h11 refuses to send a response while the client's head is unfinished.
        self.transport.write(head + body)
        self.transport.close()


class _LingeringTransport:
    """The connection's transport as uvicorn's code sees it: ``close()`` lingers (see
    :meth:`GuardedH11Protocol.linger`) while the client is still sending a body."""

    def __init__(self, raw, protocol: GuardedH11Protocol):
        self.raw = raw
        self._protocol = protocol
        self.write = raw.write  # the per-response calls, bound once (no __getattr__ each time)
        self.get_extra_info = raw.get_extra_info

    def close(self) -> None:
        if not self._protocol.linger():
            self.raw.close()

    def close_now(self) -> None:
        self.raw.close()

    def is_closing(self) -> bool:
        # A lingering connection is closing for uvicorn: no keep-alive, no next request.
        return self._protocol._lingering is not None or self.raw.is_closing()

    def __getattr__(self, name):
        return getattr(self.raw, name)


def protocol_class(
    header_timeout: float,
    max_connections: int = 1000,
    max_idle_connections: int = DEFAULT_MAX_IDLE_CONNECTIONS,
) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass with these limits and its own idle set."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {
            "header_timeout": header_timeout,
            "max_connections": max_connections,
            "max_idle_connections": max_idle_connections,
            "idle": OrderedDict(),
        },
    )
