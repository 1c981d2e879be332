"""The web demo's HTTP side: a Starlette app over a :class:`~.demo.Demo`.

Routes: ``GET /`` (the page), ``GET /static/<file>``, ``GET /samples/<name>``, ``GET /api/config`` and
``POST /api/explain`` (multipart: ``image`` or ``sample``, ``task``, ``label`` / ``question`` +
``answer`` / ``caption``, ``layer``, ``layer_layout`` (auto, nchw, nhwc, tokens), ``method`` and its 0/1
modifiers ``counterfactual``, ``aug_smooth``, ``eigen_smooth``). Every error is a JSON ``{"error": "<one line>"}`` with a 4xx
status (503 when busy, 500 for a fault of ours), never a traceback.

Guards, outermost first:

* :class:`SecurityHeaders`: every response, errors included, says not to be framed, not to be
  content-sniffed, to send no Referer, and which sources the page may use (its own files; images
  also from ``data:`` and ``blob:`` URLs): :data:`SECURITY_HEADERS`.
* :class:`HostGuard`: only the Host names the server was started for are answered (403 otherwise),
  so a page of another site cannot reach the server by pointing its own name at 127.0.0.1 (DNS
  rebinding). The header is parsed strictly (:func:`host_name`): anything but a name or address and
  an optional ``:port`` of digits is refused.
* :class:`BodyLimit`: a request body past the upload limit is refused with 413, from its
  Content-Length before anything is read, or as soon as the bytes read pass the limit; a body must
  arrive within ``body_seconds`` and never pause longer than ``idle_seconds`` (408, and the
  connection is closed); a request with both Content-Length and Transfer-Encoding is refused (400).
* bounded uploads, then a bounded queue: at most ``max_uploads`` forms are being received at once
  (the next gets 503 with ``Retry-After``); a request takes a queue slot only once its whole form has
  arrived, so stalled uploads cannot hold the queue. Explanations run one at a time on the engine
  thread (:data:`.demo.ENGINE`); at most ``max_queue`` requests wait or run, the next gets 503.
* a request whose client has disconnected is dropped: if it still waits for the engine, its turn is
  skipped; if it runs, it stops at the next stage (see :meth:`.demo.DemoTask.explain`).
* cross-site POSTs: a browser's request from a page of another origin (its ``Origin`` header names a
  host the server does not answer for) is refused with 403 before anything runs.

A request never names a path on the server: an upload goes to a private temporary file, a sample is
looked up by name among the files listed at start.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import re
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import GradCamError
from .demo import ENGINE, Abandoned, Demo

STATIC = Path(__file__).with_name("static")
FORM_FIELDS = ("task", "label", "question", "answer", "caption", "layer", "layer_layout", "sample", "method",
               "counterfactual", "aug_smooth", "eigen_smooth")
MAX_FIELD_BYTES = 64 << 10  # a text field (a question, a caption) far past any real one
BODY_SECONDS = 60.0  # the whole form: a 20 MB upload at 3 Mbit/s
IDLE_SECONDS = 10.0  # the longest pause within a body (and for a request's line and headers)
MAX_UPLOADS = 16  # forms being received at once

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one shape of every error: ``{"error": "<one line>"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class Busy(Exception):
    """A queue is full (the message says which)."""


class Queue:
    """At most ``size`` requests at once in one stage of the server (``what``: how the 503 names them)."""

    def __init__(self, size: int, what: str = "requests in progress") -> None:
        self.size, self.what, self.pending = size, what, 0

    @contextlib.contextmanager
    def slot(self) -> Any:
        if self.pending >= self.size:
            raise Busy(f"the server is busy ({self.size} {self.what}); try again shortly")
        self.pending += 1  # the event loop is one thread: no lock needed
        try:
            yield
        finally:
            self.pending -= 1


class InFlight:
    """The explain requests being served, so that the server can end them all when it stops: a request
    waiting for its upload or for the engine is answered 503 at once instead of holding the shutdown."""

    def __init__(self) -> None:
        self.stopping = False
        self._scopes: set[anyio.CancelScope] = set()

    @contextlib.contextmanager
    def request(self) -> Any:
        """A cancel scope around one request, cancelled by :meth:`stop` (at once if it has been called)."""
        scope = anyio.CancelScope()
        if self.stopping:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def stop(self) -> None:
        """End every request in flight (called on the event loop when the server shuts down)."""
        self.stopping = True
        for scope in list(self._scopes):
            scope.cancel()


class ClientGone(Exception):
    """The client disconnected before its answer: nobody reads what the request would compute."""


def create_app(demo: Demo, *, allowed_hosts: Iterable[str] = (), max_queue: int = 8,
               max_uploads: int = MAX_UPLOADS, body_seconds: float = BODY_SECONDS,
               idle_seconds: float = IDLE_SECONDS, in_flight: InFlight | None = None) -> ASGIApp:
    """The ASGI app serving ``demo``. ``allowed_hosts``: the Host names answered besides localhost,
    127.0.0.1 and [::1] (the name the server was started on, ``-allowed_hosts``). ``max_uploads``,
    ``body_seconds``, ``idle_seconds``: see :class:`BodyLimit` and the module doc; ``in_flight``: the
    handle the server stops the requests with (:meth:`InFlight.stop`)."""
    queue = Queue(max_queue)
    uploads = Queue(max_uploads, "uploads in progress")
    in_flight = in_flight or InFlight()
    workdir = tempfile.TemporaryDirectory(prefix="gradcam-web-")  # 0700; removed at exit

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def config(request: Request) -> Response:
        return JSONResponse(demo.config())

    async def sample(request: Request) -> Response:
        path = demo.sample(request.path_params["name"])
        if path is None:
            return error(404, f"no sample named {request.path_params['name']!r}")
        return FileResponse(path)

    async def explain(request: Request) -> Response:
        started = time.perf_counter()
        gone = threading.Event()  # set once nobody waits for this answer: the engine skips what is left
        answer: Response | dict[str, Any] | None = None
        try:
            with in_flight.request():
                answer = await explain_once(request, gone)
        finally:
            gone.set()
        if answer is None:  # the server is stopping
            return error(503, "the server is stopping", {"Retry-After": "5", "Connection": "close"})
        if isinstance(answer, dict):
            answer["seconds"]["total"] = round(time.perf_counter() - started, 4)
            return JSONResponse(answer)
        return answer

    async def explain_once(request: Request, gone: threading.Event) -> Response | dict[str, Any]:
        """The explanation's JSON body, or the error response."""
        try:
            with uploads.slot():
                fields, upload = await _read_form(request)
            with queue.slot():  # only now: the whole form is here
                task = demo.task(fields.get("task", "").strip())
                image = await _image_file(demo, fields, upload, workdir.name)
                try:
                    result = await _while_connected(
                        request, gone, functools.partial(task.explain, gone=gone), image.path, fields,
                        demo.max_pixels)
                except GradCamError as err:  # name the upload as the client named it, not our copy
                    raise GradCamError(str(err).replace(repr(image.path), repr(image.shown))) from None
                finally:
                    image.close()
        except Busy as err:
            return error(503, str(err), {"Retry-After": "1"})
        except BodyTimeout as err:  # the client is stalled: its connection is not worth keeping
            return error(408, str(err), {"Connection": "close"})
        except BodyTooLarge:
            return error(413, f"the upload is larger than the server's limit of {demo.max_upload_bytes >> 20} MB")
        except (ClientDisconnect, ClientGone, Abandoned):  # nobody reads this answer; nothing is logged
            return error(400, "the client disconnected")
        except GradCamError as err:
            return error(400, str(err))
        return result.to_json()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, exc.detail or "error", getattr(exc, "headers", None))

    async def fault(request: Request, exc: Exception) -> Response:
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
            return error(503, "out of memory while explaining this image", {"Retry-After": "5"})
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/config", config),
            Route("/api/explain", explain, methods=["POST"]),
            Route("/samples/{name}", sample),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: http_error, Exception: fault},
        lifespan=_cleanup(workdir),
    )
    return SecurityHeaders(HostGuard(BodyLimit(app, demo.max_upload_bytes, body_seconds, idle_seconds),
                                     allowed_hosts))


def _cleanup(workdir: tempfile.TemporaryDirectory) -> Callable[[Any], Any]:
    """The app's lifespan: the upload folder is removed when the server stops."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        try:
            yield
        finally:
            workdir.cleanup()

    return lifespan


# ------------------------------------------------------------------------------------- the form


async def _read_form(request: Request) -> tuple[dict[str, str], UploadFile | None]:
    """The text fields and the ``image`` file of a multipart (or urlencoded) form."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
            "multipart/form-data", "application/x-www-form-urlencoded"):
        raise GradCamError("POST /api/explain takes a multipart form (fields image or sample, task, label, ...)")
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS) + 1, max_part_size=MAX_FIELD_BYTES)
    fields: dict[str, str] = {}
    upload: UploadFile | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "image":
                raise GradCamError(f"unexpected file field {key!r}: the image goes in the field 'image'")
            if not value.filename and not value.size:  # a form's file input left empty: no image
                continue
            upload = value
        elif key == "image":
            raise GradCamError("the field 'image' came as text: send the image as a file (curl: -F image=@photo.jpg)")
        elif key in FORM_FIELDS:
            fields[key] = value
        else:
            raise GradCamError(f"unknown field {key!r}: expected image, {', '.join(FORM_FIELDS)}")
    return fields, upload


class _Image:
    """The request's image as a file the decoder reads: a temporary copy of the upload (removed by
    ``close``) or a sample's own file."""

    def __init__(self, path: str, shown: str, temporary: bool) -> None:
        self.path, self.shown, self.temporary = path, shown, temporary

    def close(self) -> None:
        if self.temporary:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


async def _image_file(demo: Demo, fields: dict[str, str], upload: UploadFile | None, workdir: str) -> _Image:
    name = fields.get("sample", "").strip()
    if upload is not None and name:
        raise GradCamError("send an image or a sample, not both")
    if upload is None:
        if not name:
            raise GradCamError("no image: send a file in the field 'image' (or a sample's name in 'sample')")
        path = demo.sample(name)
        if path is None:
            raise GradCamError(f"no sample named {name!r}")
        return _Image(str(path), name, temporary=False)
    data = await upload.read()
    if not data:
        raise GradCamError("the uploaded image is empty")
    fd, copy = tempfile.mkstemp(dir=workdir, suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:  # a full disk: no partial copy left behind (the fault handler answers 500)
        with contextlib.suppress(OSError):
            os.unlink(copy)
        raise
    shown = os.path.basename(upload.filename or "") or "the upload"
    return _Image(copy, shown, temporary=True)


async def _while_connected(request: Request, gone: threading.Event, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the engine thread, given up as soon as the client disconnects: a call still
    waiting for its turn is taken out of the engine's queue, and ``gone`` is set for one that runs
    (it checks it between stages). Raises :class:`ClientGone` then."""
    job = asyncio.ensure_future(ENGINE.run(fn, *args))
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((job, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not job.done():  # the client went (or the server stops): cancelling a waiting call skips it
            gone.set()
            job.cancel()
    if not job.done():
        raise ClientGone()
    return job.result()


async def _disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body has been read: ``receive`` now only reports
    the disconnect, or the end of our answer)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


# ------------------------------------------------------------------------------------- the guards


class BodyTooLarge(Exception):
    """The request body passed the upload limit (raised from ``receive``)."""


class BodyTimeout(Exception):
    """The request body did not arrive in time (raised from ``receive``; the message says how)."""


class BodyLimit:
    """Bound a request's body: its size, its time and its framing.

    Size: 413 from the Content-Length before reading, or :class:`BodyTooLarge` out of ``receive`` once
    the bytes read pass ``limit`` (a chunked upload). Time: :class:`BodyTimeout` out of ``receive``
    when the whole body has not arrived ``seconds`` after the request's headers, or when nothing has
    arrived for ``idle_seconds`` (a stalled client). Framing: a request with both Content-Length and
    Transfer-Encoding (h11 follows the latter; a proxy in front might follow the former) is refused
    with 400, and its connection closed."""

    def __init__(self, app: ASGIApp, limit: int, seconds: float = BODY_SECONDS,
                 idle_seconds: float = IDLE_SECONDS) -> None:
        self.app, self.limit, self.seconds, self.idle_seconds = app, limit, seconds, idle_seconds

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        names = {name for name, _ in scope["headers"]}
        if b"content-length" in names and b"transfer-encoding" in names:
            response = error(400, "the request has both Content-Length and Transfer-Encoding: send one of them",
                             {"Connection": "close"})
            return await response(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        # the form's own framing comes on top of the file: allow a little more than the limit
        if length is not None and (not length.isdigit() or int(length) > self.limit + (64 << 10)):
            response = error(413, f"the upload is larger than the server's limit of {self.limit >> 20} MB")
            return await response(scope, receive, send)
        seen, done, deadline = 0, False, time.monotonic() + self.seconds

        async def limited() -> Any:
            nonlocal seen, done
            if done:  # the body is in: what follows is the disconnect (or the end of our answer)
                return await receive()
            wait = min(deadline - time.monotonic(), self.idle_seconds)
            try:
                with anyio.fail_after(max(wait, 0)):
                    message = await receive()
            except TimeoutError:
                if wait < self.idle_seconds:
                    raise BodyTimeout(f"the form did not arrive within {self.seconds:g} s") from None
                raise BodyTimeout(f"the upload stalled: nothing arrived for {self.idle_seconds:g} s") from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit + (64 << 10):
                raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class HostGuard:
    """Answer only requests whose Host header names this server, and no POST a browser sends from a
    page of another origin (see the module doc). Scripts send no ``Origin`` and are not concerned.

    ``allowed``: further names (``-host``, ``-allowed_hosts``), an IPv6 address with or without its
    brackets; one that is not a host name is a :class:`GradCamError`."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {allowed_name(h) for h in (*LOCAL_HOSTS, *allowed) if h.strip()}

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(host) not in self.allowed:
                response = error(403, f"this server does not answer for the host {host!r} (it answers for "
                                      f"{', '.join(sorted(self.allowed))}; -allowed_hosts adds names)")
                return await response(scope, receive, send)
            origin = dict(scope["headers"]).get(b"origin")
            if origin is not None and scope.get("method", "GET") not in ("GET", "HEAD") \
                    and urlsplit(origin.decode("latin-1")).netloc.lower() != host.strip().lower():
                response = error(403, f"a page of another origin ({origin.decode('latin-1')!r}) cannot use "
                                      "this server; open the demo's own page")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# a DNS name (or a dotted IPv4 address): labels of letters, digits, '-' and '_', not starting or
# ending with '-', separated by single dots
_HOST_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")
_PORT = re.compile(r"[0-9]{1,5}")


def host_name(host: str) -> str | None:
    """The name of a Host header without its port, lower-case, IPv6 addresses in their short form:
    ``Example.org:8000`` -> ``example.org``, ``[0:0::1]:8000`` -> ``[::1]``; None when the header is
    not exactly a name, an IPv4 address or a bracketed IPv6 address, then optionally ``:`` and a port
    of digits (``[::1]evil.com``, ``localhost:evil``, ``a@b``, ``localhost.``, ...)."""
    host = host.strip(" \t")
    if not host.isascii():
        return None
    host = host.lower()
    if host.startswith("["):
        end = host.find("]")
        address, rest = host[1:end], host[end + 1:]
        if end < 0 or "%" in address:  # no closing bracket; a zone id
            return None
        try:
            name = f"[{ipaddress.IPv6Address(address).compressed}]"
        except ValueError:
            return None
    else:
        name, colon, port = host.partition(":")
        rest = colon + port
        if not _HOST_NAME.fullmatch(name):
            return None
    if rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:])):
        return None
    return name


def allowed_name(host: str) -> str:
    """A name given at start (``-host``, ``-allowed_hosts``) as :func:`host_name` gives it; an IPv6
    address may come without brackets."""
    text = host.strip()
    with contextlib.suppress(ValueError):
        if ":" in text and not text.startswith("["):
            text = f"[{ipaddress.IPv6Address(text).compressed}]"
    name = host_name(text)
    if name is None:
        raise GradCamError(f"-allowed_hosts: {host!r} is not a host name (a name, an IPv4 address or an "
                           "IPv6 address, optionally with :port)")
    return name


#: Sent with every response. The page loads only its own script and style sheet (no inline code);
#: its images are data: URLs (the results) and a blob: URL (the chosen file's preview).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_SECURITY_HEADERS = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response of ``app`` (replacing any of the same name)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _SECURITY_NAMES]
                message = {**message, "headers": headers + _SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_SECURITY_NAMES = {k for k, _ in _SECURITY_HEADERS}
