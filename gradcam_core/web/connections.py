"""The web demo's connections under uvicorn: what the ASGI app cannot see.

uvicorn's HTTP/1.1 protocol (h11) bounds a connection's silence only between two requests
(``timeout_keep_alive``, armed when an answer is complete). A connection that sends nothing, or half a
request line or half its headers, is never timed out, and the bytes of a body the app did not read are
drained with no time limit. :func:`protocol` returns uvicorn's h11 protocol with:

* a stall timer: a connection is closed when a request's line and headers have not arrived
  ``header_seconds`` after the connection was made (or after the request's first byte, on a kept-alive
  connection), or when the unread rest of a body after an early answer (413, 503) is still coming
  ``header_seconds`` after that answer. While the app reads a body, the app's own limits apply
  (:class:`.app.BodyLimit`).
* a bound on open connections: past ``max_connections``, a connection's request is answered with the
  API's JSON 503 (and the connection closed). uvicorn's own ``limit_concurrency`` answers a plain-text
  503 and logs a warning for each one refused.

:class:`Server` is uvicorn's server, which first ends the requests in flight when it stops (SIGTERM,
Ctrl-C): a stalled upload or a request waiting for the engine is answered 503 at once, so the
shutdown does not wait for it.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import SECURITY_HEADERS, error


def protocol(header_seconds: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the stall timer and the connection bound of the module doc."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_seconds": header_seconds, "max_connections": max_connections})


class GuardedH11Protocol(H11Protocol):
    """See the module doc; :func:`protocol` sets the two limits."""

    header_seconds: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 64
    _stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:  # this connection is counted already
            self.app = _too_many(self.max_connections)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._owed():
            self._arm()  # from the first byte of a request (an armed timer keeps its deadline)
        else:
            self._disarm()  # the headers are in: the app reads the body under its own limits

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._draining() or (self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]):
            self._arm()  # the rest of a body, or part of a next request already here
        else:
            self._disarm()  # waiting for the next request: uvicorn's keep-alive timer bounds the silence

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _owed(self) -> bool:
        """Whether the client owes bytes that no app is waiting for: a request's line and headers, or
        the rest of a body after our answer."""
        return self.conn.their_state is h11.IDLE or self._draining()

    def _draining(self) -> bool:
        return self.conn.their_state is h11.SEND_BODY and self.conn.our_state in (h11.DONE, h11.MUST_CLOSE)

    def _arm(self) -> None:
        if self._stall is None and not self.transport.is_closing():
            self._stall = self.loop.call_later(self.header_seconds, self._stalled)

    def _disarm(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        if not self.transport.is_closing():
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()


def _too_many(limit: int) -> Callable[..., Any]:
    """The ASGI app a connection past the limit is answered by."""
    response = error(503, f"the server has too many open connections ({limit}); try again shortly",
                     {"Retry-After": "1", "Connection": "close", **SECURITY_HEADERS})

    async def refuse(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        await response(scope, receive, send)

    return refuse


class Server(uvicorn.Server):
    """uvicorn's server; ``on_stop`` (:meth:`.app.InFlight.stop`) is called first when it shuts down."""

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_stop = on_stop

    async def shutdown(self, sockets: Any = None) -> None:
        self.on_stop()
        await super().shutdown(sockets)
