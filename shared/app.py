"""The FastAPI app every implementation builds on, and the lifespan part they share.

``create_api`` gives an app its version, readable operation ids, the body limit
and the error handlers that keep every refusal a documented 4xx (or a 503);
``open_ledger`` opens the ledger's clients (and the heartbeat of a process that
runs tasks) for an app's lifespan. The routes are each app's own.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tomllib
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from shared.errors import RETRY_AFTER_SECONDS, DependencyUnavailable
from shared.heartbeat import Heartbeat
from shared.ledger import async_ledger_for, ledger_for
from shared.limits import BodyLimit
from shared.logs import configure_logging
from shared.models import Implementation
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def open_ledger(
    app: FastAPI,
    implementation: Implementation,
    *,
    best_effort: bool,
    heartbeat_role: str | None,
) -> AsyncIterator[Settings]:
    """An API's lifespan part: the settings (``get_settings``, or the app's override
    of it), logging, the ledger's clients on ``app.state`` (a sync one for reads
    and for tasks, an async one for the request path) and, where this process
    runs tasks (``heartbeat_role``), its heartbeat. Yields the settings."""
    settings: Settings = app.dependency_overrides.get(get_settings, get_settings)()
    configure_logging(settings.log_level, settings.log_format)
    app.state.settings = settings
    # With the ledger switched off everything is best effort: writes do nothing.
    ledger = ledger_for(settings, implementation, best_effort=best_effort)
    queue = async_ledger_for(settings, implementation, best_effort=best_effort)
    app.state.ledger, app.state.async_ledger = ledger, queue
    # GET /ready asks each of these; an app adds its broker's. A ledger switched off
    # is not a dependency.
    app.state.readiness = {}
    if ledger.enabled:
        app.state.readiness["ledger"] = ledger.check
    logger.info(
        "%s API starting: ledger %s, body limit %d bytes, log level %s",
        implementation.value,
        "on" if settings.ledger_on else "off",
        settings.max_body_bytes,
        settings.log_level,
    )
    heartbeat = None
    if ledger.client is not None and heartbeat_role is not None:
        heartbeat = Heartbeat(
            ledger.client,
            implementation,
            heartbeat_role,
            interval=settings.runner_heartbeat_seconds,
            activity=ledger.activity,
            flush=ledger.flush,
        ).start()
    try:
        yield settings
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if queue.client is not None:
            await queue.client.aclose()
        if ledger.client is not None:
            ledger.client.close()


def version() -> str:
    """The package's version: installed metadata, else the pyproject.toml beside the
    source (the image runs the source without installing the project)."""
    try:
        return metadata.version("bgtasks-vs-celery")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            return str(data["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


def operation_id(route: APIRoute) -> str:
    """Readable operation ids: the endpoint function's name (``create_item``)."""
    return route.name


def _json_safe(value: Any) -> Any:
    """A refused input, as JSON can carry it (NaN and Infinity cannot be)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def create_api(title: str, description: str, lifespan: Any) -> FastAPI:
    """The FastAPI app every implementation builds on: version, operation ids, the body limit,
    and the error handlers that keep every refusal a documented 4xx (or 503).

    ``lifespan`` must put the resolved ``Settings`` on ``app.state.settings``."""
    app = FastAPI(
        title=title,
        description=description,
        version=version(),
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )

    # One mechanism for both apps: bodies over the limit never reach the endpoint.
    def max_bytes() -> int:
        settings: Settings = app.state.settings
        return settings.max_body_bytes

    app.add_middleware(BodyLimit, max_bytes=max_bytes)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The client learns which dependency failed and when to try again; the
        # detail (hosts, ports, the driver's message) goes to the log only.
        assert isinstance(exc, DependencyUnavailable)
        logger.warning("%s %s: 503, %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=503,
            content={"detail": exc.public, "dependency": exc.dependency},
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own handler echoes the refused input; json.dumps cannot write a
        # NaN or an Infinity, which would turn a 422 into a 500.
        assert isinstance(exc, RequestValidationError)
        errors = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse(status_code=422, content={"detail": errors})

    handler: Any = unavailable
    app.add_exception_handler(DependencyUnavailable, handler)
    validation: Any = invalid
    app.add_exception_handler(RequestValidationError, validation)
    return app
