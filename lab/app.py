"""The lab's web app: the page, the actions, and every new snapshot pushed over
server-sent events. One poll loop per lab (not per browser tab).

It answers only requests addressed to itself (``SameOrigin``): its actions kill
processes, so neither another site's page (a form posted across origins) nor a
DNS-rebound name may drive or read it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from lab.state import ActionRefused, Lab
from shared.services import Implementation

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

# What a browser calls the lab when it listens on loopback.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def own_authorities(address: str, port: int) -> tuple[str, ...]:
    """The ``host:port`` a request to the lab names in its Host header, for the local
    address and port the connection reached: on loopback any of its names, else
    that address itself (bound to a wildcard, the interface the client used)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a name, not an address (a test client's server): itself only
        hosts: tuple[str, ...] = (address.lower(),)
    else:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # an IPv4 client on a dual-stack socket
        if ip.is_loopback:
            hosts = LOOPBACK_NAMES
        elif isinstance(ip, ipaddress.IPv6Address):
            hosts = (f"[{ip.compressed}]",)
        else:
            hosts = (str(ip),)
    with_port = tuple(f"{h}:{port}" for h in hosts)
    # On port 80 a browser leaves the port out.
    return (*with_port, *hosts) if port == 80 else with_port


class SameOrigin:
    """Refuses (403) every request whose Host is not the lab's own address or whose
    Origin, when sent, is not the lab's own origin; GETs included.

    The Host check stops DNS rebinding (a foreign name resolved to 127.0.0.1 makes
    the lab same-origin to another site, which could then read every snapshot and
    post actions); the Origin check stops another origin's page from posting to
    the lab (a form or a fetch: the browser sends the request even though it keeps
    the answer from the page). The lab's own page sends its own origin, or none
    (GETs and the event stream), and curl sends none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = self.refusal(scope)
        if refused is None:
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "WEBSOCKET")
        logger.warning("refused %s %s: %s", method, scope["path"], refused)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await JSONResponse({"detail": refused}, status_code=403)(scope, receive, send)

    @staticmethod
    def refusal(scope: Scope) -> str | None:
        """Why this request is refused, or None when it is the lab's own."""
        server = scope.get("server")
        if not server or server[1] is None:
            return "the lab cannot tell its own address on this connection"
        authorities = own_authorities(server[0], server[1])
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)  # the first one: what the client meant
        host = headers.get(b"host", b"").decode("latin-1").strip().lower()
        if host not in authorities:
            return (
                f"Host {host[:100]!r} is not this lab's address ({', '.join(authorities)}): "
                "the lab answers only requests made to it by name"
            )
        origin = headers.get(b"origin")
        if origin is not None:
            sent = origin.decode("latin-1").strip().lower()
            if sent not in {f"http://{a}" for a in authorities}:
                return (
                    f"Origin {sent[:100]!r} is not this lab's page (http://{authorities[0]}): "
                    "the lab takes actions only from the page it serves"
                )
        return None


class Publisher:
    """The event loop's side: polls the lab, keeps the latest snapshot, wakes the streams.

    Everything here runs on the loop; the blocking poll goes to a thread."""

    def __init__(self, lab: Lab, poll_interval: float) -> None:
        self.lab = lab
        self.poll_interval = poll_interval
        self.snapshot_json = "{}"
        self.version = 0
        self.closing = False
        self._content = ""
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()

        def wake() -> None:  # from any thread: an action changed something
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(self._wake.set)

        lab.on_change = wake

    async def refresh(self) -> None:
        """Poll once and publish. One poll at a time: snapshots go out in order."""
        async with self._poll_lock:
            snapshot = await asyncio.to_thread(self.lab.poll_once)
            content = json.dumps({k: v for k, v in snapshot.items() if k != "now"}, sort_keys=True)
            if content == self._content:
                return  # nothing changed: ages are computed in the page
            self._content = content
            self.snapshot_json = json.dumps(snapshot)
            async with self._changed:
                self.version += 1
                self._changed.notify_all()

    async def run(self) -> None:
        while not self.closing:
            try:
                await self.refresh()
            except Exception:  # one bad poll must not end the page's updates
                logger.exception("lab poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    async def stream(self, keepalive: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events: every new snapshot, and a comment now and then."""
        seen = -1
        while not self.closing:
            if self.version != seen:
                seen = self.version
                yield f"event: snapshot\nid: {seen}\ndata: {self.snapshot_json}\n\n"
                continue
            async with self._changed:
                if self.version == seen and not self.closing:  # checked under the lock
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), keepalive)
            if self.version == seen and not self.closing:
                yield ": keepalive\n\n"

    async def close(self) -> None:
        self.closing = True
        async with self._changed:
            self._changed.notify_all()


class ActionRequest(BaseModel):
    # A declared implementation (else 422); the lab refuses one it does not run (400).
    implementation: Implementation
    action: str
    service: str | None = None
    count: int = Field(default=5, ge=1, le=100)


def create_app(lab: Lab) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        publisher = Publisher(lab, lab.settings.poll_interval)
        app.state.publisher = publisher
        poller = asyncio.create_task(publisher.run())
        yield
        await publisher.close()
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller

    app = FastAPI(title="The lab", lifespan=lifespan)
    app.add_middleware(SameOrigin)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def publisher(request: Request) -> Publisher:
        pub: Publisher = request.app.state.publisher
        return pub

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return html.replace("{{target}}", lab.target.name)

    @app.get("/api/state")
    async def state(request: Request) -> JSONResponse:
        pub = publisher(request)
        if pub.version == 0:  # before the first poll: read once now
            await pub.refresh()
        return JSONResponse(json.loads(pub.snapshot_json))

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            publisher(request).stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/actions")
    async def act(body: ActionRequest, request: Request) -> dict[str, Any]:
        try:
            event = await asyncio.to_thread(
                lab.act, body.implementation.value, body.action, body.service, body.count
            )
        except ActionRefused as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        # Answer once the snapshot shows the result: a client that reads the
        # state (or the page) right after sees what the action did.
        await publisher(request).refresh()
        return lab.event_dict(event)

    @app.post("/api/reset")
    async def reset(request: Request) -> dict[str, str]:
        lab.reset()
        await publisher(request).refresh()
        return {"status": "ok"}

    return app
