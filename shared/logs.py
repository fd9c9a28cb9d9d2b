"""One logging setup for every process: both APIs, the worker and beat.

Time, level, logger, message, on stderr, at ``LOG_LEVEL``. uvicorn configures only
its own loggers, so without this the APIs would drop ``shared.work``'s INFO lines
(an idempotency skip) and print warnings with no time or level; Celery's own setup
is replaced too (``celery_app.worker`` connects this to its ``setup_logging``
signal), so a line from the worker reads like a line from an API.

``LOG_FORMAT=json``: one JSON object per line instead (a log collector's input),
with the id of the task a record was logged under (``task_context``), where
there is one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The task this thread or coroutine runs now: the task wrappers set it around each
# run, the JSON lines carry it.
_task_id: ContextVar[str | None] = ContextVar("task_id", default=None)


def current_task_id() -> str | None:
    return _task_id.get()


@contextlib.contextmanager
def task_context(task_id: str) -> Iterator[None]:
    """Every record logged inside names this task (on the JSON lines)."""
    token = _task_id.set(task_id)
    try:
        yield
    finally:
        _task_id.reset(token)


def set_task_id(task_id: str | None) -> None:
    """``task_context`` in two halves, for a start and an end that are two callbacks
    (Celery's ``task_prerun`` / ``task_postrun``); None ends it."""
    _task_id.set(task_id)


def task_id_of(record: logging.LogRecord) -> str | None:
    """The task a record is about: one given with ``extra={"task_id": ...}``, else the
    one running, else, for Celery's own lines about a task ("Task ... received",
    logged by the worker's main process outside any task), the id they name."""
    given = getattr(record, "task_id", None)
    if isinstance(given, str) and given:
        return given
    running = _task_id.get()
    if running:
        return running
    if record.name.startswith("celery") and isinstance(record.args, Mapping):
        named = record.args.get("id")
        if isinstance(named, str) and named:
            return named
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, and
    task_id, exc_info and stack_info when a record has them. Nothing else of the
    record goes out: its arguments and extras can hold what a log must not."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id = task_id_of(record)
        if task_id is not None:
            line["task_id"] = task_id
        # Cached on the record, as logging.Formatter does, for the next handler.
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # ASCII only: every line break in a message, U+2028 and the like included, is
        # escaped, so a record stays one line for whatever splits the stream.
        return json.dumps(line, ensure_ascii=True)


def configure_logging(level: str = "INFO", fmt: LogFormat = "text") -> None:
    """Every record through one stderr handler, at ``level``; ``fmt``: "text" or "json"."""
    if fmt not in ("text", "json"):
        raise ValueError(f"unknown log format {fmt!r}: text or json")
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": FORMAT}
    # uvicorn's access log is a child of "uvicorn", so dictConfig resets it (no
    # handlers, propagating, any level), which would switch on what uvicorn's
    # --no-access-log switched off. Whether it is on, and its level, are kept: on,
    # it writes through the same handler as the rest.
    access = logging.Logger.manager.loggerDict.get("uvicorn.access")
    kept = (access.hasHandlers(), access.level) if isinstance(access, logging.Logger) else None
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": formatter},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["stderr"], "level": level},
            # uvicorn's loggers keep their levels but write through the same handler.
            "loggers": {
                name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")
            },
        }
    )
    if isinstance(access, logging.Logger) and kept is not None:
        access.handlers = []
        access.propagate, access.level = kept
