"""``LOG_FORMAT=json`` (``shared.logs``): one JSON object per line, the running task's
id on the lines logged under it, exceptions as a string; text stays the default."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest

from shared.logs import (
    FORMAT,
    JsonFormatter,
    configure_logging,
    current_task_id,
    set_task_id,
    task_context,
)


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own writing JSON lines to a buffer (nothing global touched)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().split("\n") if line]


def test_a_line_is_a_json_object_with_time_level_logger_message(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    logger.warning("ledger %s skipped: %d", "queued", 3)
    [line] = parsed(stream)
    assert set(line) == {"time", "level", "logger", "message"}  # no task: no task_id
    assert line["level"] == "WARNING"
    assert line["logger"] == "tests.logs"
    assert line["message"] == "ledger queued skipped: 3"
    assert line["time"].endswith("Z")  # UTC, ISO 8601
    when = datetime.fromisoformat(line["time"])
    assert when.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - when) < timedelta(minutes=1)


def test_the_task_id_is_on_the_lines_inside_its_context_only(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    logger.info("before")
    with task_context("task-1"):
        logger.info("inside")
        with task_context("task-2"):  # a task that runs another inline
            logger.info("nested")
        logger.info("inside again")
    logger.info("after")
    got = [(line["message"], line.get("task_id")) for line in parsed(stream)]
    assert got == [
        ("before", None),
        ("inside", "task-1"),
        ("nested", "task-2"),
        ("inside again", "task-1"),
        ("after", None),
    ]
    assert current_task_id() is None


def test_the_context_ends_when_the_task_raises(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    with pytest.raises(RuntimeError), task_context("task-1"):
        raise RuntimeError("boom")
    logger.info("after")
    assert "task_id" not in parsed(stream)[0]


def test_set_task_id_in_two_halves_as_celerys_signals_do(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    set_task_id("celery-1")  # task_prerun
    logger.info("Task %s succeeded", "x")
    set_task_id(None)  # task_postrun
    logger.info("idle")
    assert [line.get("task_id") for line in parsed(stream)] == ["celery-1", None]


def test_each_thread_sees_only_its_own_task(lines: tuple[logging.Logger, io.StringIO]) -> None:
    # BackgroundTasks' sync tasks run side by side in the thread pool.
    logger, stream = lines
    inside, go_on = threading.Event(), threading.Event()

    def other() -> None:
        with task_context("in-the-other-thread"):
            inside.set()
            go_on.wait(10)

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    with task_context("here"):
        logger.info("mine")
    logger.info("none")
    go_on.set()
    thread.join(10)
    assert [line.get("task_id") for line in parsed(stream)] == ["here", None]


def test_an_exception_is_one_string_and_the_line_stays_one_line(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    with task_context("task-1"):
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            logger.exception("background task %s failed", "task-1")
    logger.info("a message\nover\u2028lines\u0085")
    text = stream.getvalue()
    assert len(text.splitlines()) == 2  # str.splitlines breaks at U+2028 and U+0085 too
    failed, multi = parsed(stream)
    assert failed["task_id"] == "task-1"
    assert failed["level"] == "ERROR"
    assert failed["exc_info"].startswith("Traceback (most recent call last):")
    assert failed["exc_info"].endswith("ValueError: bad\nvalue")
    assert multi["message"] == "a message\nover\u2028lines\u0085"
    assert "exc_info" not in multi


def test_a_task_id_given_as_extra_wins(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines
    with task_context("running"):
        logger.info("about another task", extra={"task_id": "other"})
    assert parsed(stream)[0]["task_id"] == "other"


def test_celerys_own_lines_name_their_task_outside_it_too() -> None:
    # "Task ... received" is logged by the worker's main process, where no task runs.
    formatter = JsonFormatter()
    args = {"id": "0f1e", "name": "notifications.send", "args": "('a@b.c',)"}

    def record(name: str) -> logging.LogRecord:
        return logging.LogRecord(
            name, logging.INFO, __file__, 1, "Task %(name)s[%(id)s] received", (args,), None
        )

    line = json.loads(formatter.format(record("celery.worker.strategy")))
    assert line["task_id"] == "0f1e"
    assert line["message"] == "Task notifications.send[0f1e] received"
    assert "args" not in line and "a@b.c" not in json.dumps(line)  # the record's args stay out
    assert "task_id" not in json.loads(formatter.format(record("shared.work")))


# --- configure_logging ----------------------------------------------------------------------

NAMES = ("uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def restored() -> Iterator[None]:
    """configure_logging changes the process's logging: put it back (pytest's own
    capture handlers on the root logger included)."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    loggers = {
        n: (lg.handlers[:], lg.propagate, lg.level) for n in NAMES if (lg := logging.getLogger(n))
    }
    try:
        yield
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, (handlers, propagate, level) in loggers.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level


def root_formatter() -> logging.Formatter | None:
    [handler] = logging.getLogger().handlers
    return handler.formatter


@pytest.mark.usefixtures("restored")
def test_text_stays_the_default() -> None:
    configure_logging("INFO")
    formatter = root_formatter()
    assert formatter is not None and not isinstance(formatter, JsonFormatter)
    assert formatter._fmt == FORMAT


@pytest.mark.usefixtures("restored")
def test_json_goes_to_stderr_for_every_logger_uvicorns_included(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    assert isinstance(root_formatter(), JsonFormatter)
    with task_context("t-1"):
        logging.getLogger("shared.work").info("task %s: done", "t-1")
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    logging.getLogger("shared.work").debug("below the level")
    got = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(g["logger"], g.get("task_id")) for g in got] == [
        ("shared.work", "t-1"),
        ("uvicorn.error", None),
    ]


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.usefixtures("restored")
def test_uvicorns_access_log_stays_as_uvicorn_set_it(
    fmt: Literal["text", "json"], capsys: pytest.CaptureFixture[str]
) -> None:
    access = logging.getLogger("uvicorn.access")
    access.handlers[:], access.propagate = [], False  # --no-access-log
    configure_logging("INFO", fmt)
    assert not access.hasHandlers()  # still off
    # On (uvicorn's own handler), at WARNING: on, through ours, at WARNING.
    access.handlers[:], access.level = [logging.StreamHandler(io.StringIO())], logging.WARNING
    configure_logging("INFO", fmt)
    assert access.propagate and access.handlers == [] and access.level == logging.WARNING
    access.warning('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/health", "1.1", 200)
    [line] = capsys.readouterr().err.splitlines()
    if fmt == "json":
        assert json.loads(line)["logger"] == "uvicorn.access"
        line = json.loads(line)["message"]
    assert '"GET /health HTTP/1.1" 200' in line


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        configure_logging("INFO", "xml")  # type: ignore[arg-type]
