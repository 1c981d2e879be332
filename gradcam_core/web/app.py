"""The web demo's HTTP side: a Starlette app over a :class:`~.demo.Demo`.

Routes: ``GET /`` (the page), ``GET /static/<file>``, ``GET /samples/<name>``, ``GET /api/config`` and
``POST /api/explain`` (multipart: ``image`` or ``sample``, ``task``, ``label`` / ``question`` +
``answer`` / ``caption``, ``layer``). Every error is a JSON ``{"error": "<one line>"}`` with a 4xx
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
  Content-Length before anything is read, or as soon as the bytes read pass the limit.
* a bounded queue: explanations run one at a time on the engine thread (:data:`.demo.ENGINE`); at
  most ``max_queue`` requests wait or run, the next gets 503 with ``Retry-After``; a request whose
  form has not arrived within ``FORM_SECONDS`` gets 408, so slow uploads cannot hold the queue.
* cross-site POSTs: a browser's request from a page of another origin (its ``Origin`` header names a
  host the server does not answer for) is refused with 403 before anything runs.

A request never names a path on the server: an upload goes to a private temporary file, a sample is
looked up by name among the files listed at start.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Optional
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import GradCamError
from .demo import ENGINE, Demo

STATIC = Path(__file__).with_name("static")
FORM_FIELDS = ("task", "label", "question", "answer", "caption", "layer", "sample")
MAX_FIELD_BYTES = 64 << 10  # a text field (a question, a caption) far past any real one
FORM_SECONDS = 60  # a 20 MB upload at 3 Mbit/s

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


def error(status: int, message: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    """The one shape of every error: ``{"error": "<one line>"}``."""
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status, headers=headers)


class Busy(Exception):
    """The queue is full."""


class Queue:
    """At most ``size`` explain requests in the server at once (waiting for the engine or running)."""

    def __init__(self, size: int) -> None:
        self.size, self.pending = size, 0

    @contextlib.contextmanager
    def slot(self) -> Any:
        if self.pending >= self.size:
            raise Busy()
        self.pending += 1  # the event loop is one thread: no lock needed
        try:
            yield
        finally:
            self.pending -= 1


def create_app(demo: Demo, *, allowed_hosts: Iterable[str] = (), max_queue: int = 8) -> ASGIApp:
    """The ASGI app serving ``demo``. ``allowed_hosts``: the Host names answered besides localhost,
    127.0.0.1 and [::1] (the name the server was started on, ``-allowed_hosts``)."""
    queue = Queue(max_queue)
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
        try:
            with queue.slot():
                with anyio.fail_after(FORM_SECONDS):
                    fields, upload = await _read_form(request)
                task = demo.task(fields.get("task", "").strip())
                image = await _image_file(demo, fields, upload, workdir.name)
                try:
                    result = await ENGINE.run(task.explain, image.path, fields, demo.max_pixels)
                except GradCamError as err:  # name the upload as the client named it, not our copy
                    raise GradCamError(str(err).replace(repr(image.path), repr(image.shown))) from None
                finally:
                    image.close()
        except Busy:
            return error(503, f"the server is busy ({queue.size} requests in progress); try again shortly",
                         {"Retry-After": "1"})
        except TimeoutError:
            return error(408, f"the form did not arrive within {FORM_SECONDS} s")
        except BodyTooLarge:
            return error(413, f"the upload is larger than the server's limit of {demo.max_upload_bytes >> 20} MB")
        except GradCamError as err:
            return error(400, str(err))
        body = result.to_json()
        body["seconds"]["total"] = round(time.perf_counter() - started, 4)
        return JSONResponse(body)

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
    return SecurityHeaders(HostGuard(BodyLimit(app, demo.max_upload_bytes), allowed_hosts))


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


async def _read_form(request: Request) -> tuple[dict[str, str], Optional[UploadFile]]:
    """The text fields and the ``image`` file of a multipart (or urlencoded) form."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
            "multipart/form-data", "application/x-www-form-urlencoded"):
        raise GradCamError("POST /api/explain takes a multipart form (fields image or sample, task, label, ...)")
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS) + 1, max_part_size=MAX_FIELD_BYTES)
    fields: dict[str, str] = {}
    upload: Optional[UploadFile] = None
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


async def _image_file(demo: Demo, fields: dict[str, str], upload: Optional[UploadFile], workdir: str) -> _Image:
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
    fd, path = tempfile.mkstemp(dir=workdir, suffix=".img")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:  # a full disk: no partial copy left behind (the fault handler answers 500)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    shown = os.path.basename(upload.filename or "") or "the upload"
    return _Image(path, shown, temporary=True)


# ------------------------------------------------------------------------------------- the guards


class BodyTooLarge(Exception):
    """The request body passed the upload limit (raised from ``receive``)."""


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes: 413 from the Content-Length before reading, or
    :class:`BodyTooLarge` out of ``receive`` once the bytes read pass it (a chunked upload)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        # the form's own framing comes on top of the file: allow a little more than the limit
        if length is not None and (not length.isdigit() or int(length) > self.limit + (64 << 10)):
            response = error(413, f"the upload is larger than the server's limit of {self.limit >> 20} MB")
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
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


def host_name(host: str) -> Optional[str]:
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
