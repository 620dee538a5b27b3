"""``faceanon serve``: a local web page that anonymizes and restores photos.

FastAPI + one static page (no Gradio: it is heavy and its page fetches fonts and scripts from
the internet; this page loads nothing from outside and works offline). The server keeps nothing:
each photo and key arrives in one request, is processed in memory and dropped with the
response (Starlette spools uploads over 1 MiB to an unnamed temporary file, removed when the
request ends). No image name, key or face box is logged; uvicorn's access log is off.

One photo per request: the page sends a folder's photos one after the other, so it shows
which one is running, and each answer streams the diffusion steps as progress (one JSON
object per line) before the result.

One module: the routes, the request guard (sizes, hosts, origins) and the two jobs they run
are read together when the page's security is reviewed.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import threading
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from faceanon.errors import FaceanonError

if TYPE_CHECKING:
    from faceanon.backbones.base import Backbone
    from faceanon.secure.keys import SecretKey

MAX_IMAGE_BYTES = 40 * 2**20  # one photo (a 50-megapixel PNG fits)
MAX_ZIP_FILES = 200
MAX_ZIP_BYTES = 400 * 2**20
MAX_FORM_BYTES = MAX_IMAGE_BYTES + 2**20  # a photo, a key and a few fields
# Network calls one restore may take: 20 faces at the default engine of face-prior or face-net
# (what this app's anonymize does for a photo of 20 faces); a forged file asked 1,130 s.
MAX_RESTORE_CALLS = 20 * 251
PAGE_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript")}
# The page's own script and styles only; images are shown from data: and blob: URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'"
)

Progress = Callable[[int, int], None]
Job = Callable[[Progress], dict[str, Any]]
Fields = dict[str, str]
Files = dict[str, tuple[str, bytes]]  # form field -> (file name, bytes)


def _safe_name(name: str | None, fallback: str) -> str:
    """The upload's base name (no folders), for messages and output names only."""
    base = PurePath((name or "").replace("\\", "/")).name.strip()
    return base[:200] or fallback


@dataclass
class Server:
    """What the app keeps between requests: settings only; the models and face finders are
    faceanon.loading's, loaded once per process (never images or keys)."""

    device: str = "cpu"
    default_backbone: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # one job at a time

    def backbone(self, name: str) -> Backbone:
        from faceanon.backbones.registry import MODELS
        from faceanon.loading import backbone

        if name not in MODELS:
            raise FaceanonError(f"unknown model {name[:80]!r}; known: {', '.join(MODELS)}")
        return backbone(name, self.device)


def _key(upload: tuple[str, bytes] | None, passphrase: str | None) -> SecretKey:
    from faceanon.errors import KeyFileError
    from faceanon.secure.keys import read_key_file

    if upload is None:
        raise FaceanonError("no key: generate one or choose your key file")
    name, data = upload

    def ask() -> str:
        if not passphrase:
            raise KeyFileError("this is a passphrase key file: type its passphrase")
        return passphrase

    return read_key_file(PurePath(name), ask, data=data)  # type: ignore[arg-type]


def _png(image: Any, metadata: str | None, latents: Any = None) -> str:
    """The PNG's bytes in base64 (``latents``: a hide output's exact face data, see
    :func:`faceanon.media.io.encode_image`)."""
    from faceanon.media.io import encode_image

    return base64.b64encode(encode_image(image, metadata, latents=latents)).decode("ascii")


def anonymize_job(
    server: Server,
    name: str,
    data: bytes,
    method: str,
    backbone_name: str,
    key_upload: tuple[str, bytes] | None,
    passphrase: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """One photo anonymized through the library's API; the answer the page shows (or a
    FaceanonError, one line). Never writes what :func:`restore_job` would refuse."""
    from faceanon.api import anonymize_photo
    from faceanon.media import photos
    from faceanon.media.io import read_image
    from faceanon.settings import Settings

    if method not in photos.METHODS:
        raise FaceanonError(f"unknown method {method[:40]!r}; known: {', '.join(photos.METHODS)}")
    key, backbone, model = None, None, None
    if method in ("keyflip", "hide", "hydro"):
        key = _key(key_upload, passphrase) if method != "hydro" else None
        backbone = server.backbone(backbone_name)
        model = photos.describe_model(backbone, terminal=False)
    settings = Settings(method, None if backbone is None else backbone.name, device=server.device)
    picture = read_image(PurePath(name), data)  # type: ignore[arg-type]
    outcome = anonymize_photo(
        picture.image,
        key,
        settings,
        name=name,
        progress=progress,
        max_restore_calls=MAX_RESTORE_CALLS,
    )
    if not outcome.boxes:
        raise FaceanonError(f"{name}: no face found; nothing written")
    return {
        "name": photos.output_name(name, "anonymized"),
        "image": _png(outcome.image, outcome.metadata, outcome.latents),
        "boxes": [list(map(float, b)) for b in outcome.boxes if b is not None],
        "model": model,
        "reversible": key is not None,
    }


def restore_job(
    server: Server,
    name: str,
    data: bytes,
    key_upload: tuple[str, bytes] | None,
    passphrase: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """One anonymized photo restored with the key, through the library's API."""
    from faceanon.api import restore_photo
    from faceanon.media import photos

    key = _key(key_upload, passphrase)
    outcome = restore_photo(
        data, key, None, server.device, name=name, progress=progress, max_calls=MAX_RESTORE_CALLS
    )
    assert outcome.model is not None
    return {
        "name": photos.output_name(name, "deanonymized"),
        "image": _png(outcome.image, None),
        "boxes": [list(map(float, b)) for b in outcome.boxes if b is not None],
        "model": photos.describe_model(outcome.model, terminal=False),
    }


def stream(server: Server, job: Job) -> Iterator[bytes]:
    """Run ``job`` in a thread, yielding progress lines, then ``{"result": ...}`` or
    ``{"error": "one line"}``."""
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def run() -> None:
        waited = not server.lock.acquire(blocking=False)
        if waited:
            lines.put({"status": "waiting for another job to finish"})
            server.lock.acquire()
        try:
            lines.put({"status": "reading the photo, loading the model, finding faces"})
            lines.put({"result": job(lambda done, total: lines.put({"step": [done, total]}))})
        except FaceanonError as exc:
            lines.put({"error": str(exc)})
        except Exception as exc:  # a bug: one line on the page, never the image's name
            lines.put({"error": f"unexpected {type(exc).__name__} (see the server's terminal)"})
            import sys
            import traceback

            # Where it happened, for a bug report; not the message, which may hold data.
            frames = traceback.format_list(traceback.extract_tb(exc.__traceback__))
            print(f"faceanon serve: unexpected {type(exc).__name__} at", *frames, file=sys.stderr)
        finally:
            server.lock.release()
            lines.put(None)

    threading.Thread(target=run, daemon=True).start()
    while (line := lines.get()) is not None:
        yield (json.dumps(line) + "\n").encode()


def zip_files(files: list[tuple[str, bytes]]) -> bytes:
    """The results in one zip (stored: PNG is compressed already); repeated names numbered."""
    if len(files) > MAX_ZIP_FILES:
        raise FaceanonError(f"too many files for one zip ({len(files)}, limit {MAX_ZIP_FILES})")
    buffer, seen = io.BytesIO(), set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files:
            stem, dot, suffix = name.rpartition(".")
            unique, n = name, 1
            while unique in seen:
                n += 1
                unique = f"{stem or suffix}-{n}{dot}{suffix if stem else ''}"
            seen.add(unique)
            archive.writestr(unique, data)
    return buffer.getvalue()


LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})


class TooLarge(FaceanonError):
    """An upload past its limit, counted as it arrives."""


def _host_name(host: str) -> str:
    """``localhost:8000`` -> ``localhost``; ``[::1]:8000`` -> ``[::1]``."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """Plain ASGI middleware in front of everything. Counts the bytes of a request's body as
    they arrive (a chunked upload declares no length) and stops at the route's limit with a
    413; when the app serves loopback only (``hosts``), refuses any other Host header, so a
    page of another site that re-points its name at 127.0.0.1 (DNS rebinding) is turned
    away."""

    def __init__(self, app: Any, hosts: frozenset[str] | None) -> None:
        self.app, self.hosts = app, hosts

    async def _answer(self, send: Any, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.hosts is not None:
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if _host_name(host.lower()) not in self.hosts:
                await self._answer(send, 400, "unknown Host: open the address faceanon printed")
                return
        limit = MAX_ZIP_BYTES if scope["path"] == "/api/zip" else MAX_FORM_BYTES
        received, started = 0, False

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(f"upload too large (over the limit of {limit // 2**20} MB)")
            return message

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge as exc:
            if not started:
                await self._answer(send, 413, str(exc))


def create_app(
    device: str = "cpu",
    default_backbone: str | None = None,
    hosts: frozenset[str] | None = LOOPBACK_NAMES,
) -> Any:
    """The FastAPI application (``faceanon serve`` runs it with uvicorn). ``hosts``: the
    Host names it answers (default: the loopback names; None: any, for a public address)."""
    from faceanon.backbones.registry import DEFAULT_BACKBONE, MODELS
    from faceanon.media import photos
    from faceanon.secure.keys import SecretKey, key_file_content, secret_key_comment

    server = Server(device, default_backbone or DEFAULT_BACKBONE)
    app = FastAPI(title="faceanon", docs_url=None, redoc_url=None, openapi_url=None)
    private = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}

    def error(message: str, status: int = 400) -> Any:
        return JSONResponse({"error": message}, status, headers=private)

    app.add_middleware(Guard, hosts=hosts)

    @app.middleware("http")
    async def limits(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        limit = MAX_ZIP_BYTES if request.url.path == "/api/zip" else MAX_FORM_BYTES
        if length is not None and (not length.isdigit() or int(length) > limit):
            size = f"{int(length) / 2**20:.0f} MB" if length.isdigit() else "unknown size"
            return error(f"upload too large ({size}, limit {limit // 2**20} MB)", 413)
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    for route, (filename, media) in PAGE_FILES.items():
        page = resources.files("faceanon.apps.web").joinpath(filename).read_bytes()

        def serve(page: bytes = page, media: str = media) -> Any:
            return Response(page, media_type=media, headers={"Cache-Control": "no-cache"})

        app.add_api_route(route, serve, methods=["GET"], include_in_schema=False)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Any:
        return Response(status_code=204)

    @app.get("/api/options")
    def options() -> Any:
        return {
            "methods": list(photos.METHODS),
            "backbones": [
                {"name": e.name, "description": e.description, "licence": e.licence}
                for e in MODELS.values()
            ],
            "default_backbone": server.default_backbone,
            "max_image_mb": MAX_IMAGE_BYTES // 2**20,
            "max_zip_files": MAX_ZIP_FILES,
        }

    @app.post("/api/keygen")
    def keygen() -> Any:
        """A new random key, as text and as a key file; the server forgets it at once."""
        key = SecretKey.generate()
        text = key.to_text()
        file = key_file_content(text, secret_key_comment(key.bits))
        return JSONResponse({"key": text, "file": file}, headers=private)

    async def form(request: Request) -> tuple[Fields, Files]:
        """The fields and uploaded files of one request, read into memory, with limits."""
        fields: Fields = {}
        files: Files = {}
        async with request.form(max_files=2, max_fields=8) as parts:
            for name, value in parts.multi_items():
                if isinstance(value, str):
                    fields[name] = value[:2000]
                    continue
                data = await value.read(MAX_IMAGE_BYTES + 1)
                shown = _safe_name(value.filename, name)
                if len(data) > MAX_IMAGE_BYTES:
                    raise FaceanonError(
                        f"{shown}: file too large (limit {MAX_IMAGE_BYTES // 2**20} MB)"
                    )
                files[name] = (shown, data)
        return fields, files

    async def job_request(request: Request, run: Callable[[Fields, Files, Progress], Any]) -> Any:
        try:
            fields, files = await form(request)
        except TooLarge:
            raise  # Guard answers 413
        except FaceanonError as exc:
            return error(str(exc))
        except Exception:
            return error("the upload could not be read (not a form of files)")
        if "image" not in files:
            return error("no photo: choose one or more photos first")
        return StreamingResponse(
            stream(server, lambda progress: run(fields, files, progress)),
            media_type="application/x-ndjson",
            headers=private,
        )

    @app.post("/api/anonymize")
    async def anonymize(request: Request) -> Any:
        def run(fields: Fields, files: Files, progress: Progress) -> dict[str, Any]:
            name, data = files["image"]
            return anonymize_job(
                server,
                name,
                data,
                fields.get("method", "keyflip"),
                fields.get("backbone") or server.default_backbone or DEFAULT_BACKBONE,
                files.get("key"),
                fields.get("passphrase"),
                progress,
            )

        return await job_request(request, run)

    @app.post("/api/deanonymize")
    async def deanonymize(request: Request) -> Any:
        def run(fields: Fields, files: Files, progress: Progress) -> dict[str, Any]:
            name, data = files["image"]
            return restore_job(
                server, name, data, files.get("key"), fields.get("passphrase"), progress
            )

        return await job_request(request, run)

    @app.post("/api/zip")
    async def make_zip(request: Request) -> Any:
        try:
            async with request.form(max_files=MAX_ZIP_FILES + 1, max_fields=0) as parts:
                files = [
                    (_safe_name(v.filename, "result.png"), await v.read())
                    for _, v in parts.multi_items()
                    if not isinstance(v, str)
                ]
            data = zip_files(files)
        except TooLarge:
            raise  # Guard answers 413
        except FaceanonError as exc:
            return error(str(exc))
        except Exception:
            return error("the files could not be read")
        return Response(
            data,
            media_type="application/zip",
            headers=private | {"Content-Disposition": 'attachment; filename="faceanon.zip"'},
        )

    return app


def serve(
    host: str, port: int, device: str, backbone: str | None, ready: Callable[[str], None]
) -> None:
    """Run the app until interrupted; ``ready(url)`` is called once it listens."""
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FaceanonError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    shown = f"[{host}]" if ":" in host else host
    hosts = LOOPBACK_NAMES if host in LOOPBACK_NAMES else None  # a public address: any name
    app = create_app(device, backbone, hosts)
    config = uvicorn.Config(app, access_log=False, log_level="warning")
    ready(f"http://{shown}:{sock.getsockname()[1]}/")
    uvicorn.Server(config).run(sockets=[sock])
