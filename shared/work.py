"""The work itself, written once: both implementations call exactly these functions.

Both are idempotent per task id: a task delivered twice (Celery redelivers an
unacknowledged task after a worker crash, or after its visibility timeout) must
not write its effect twice. The effect is a line in ``LOG_FILE`` that names the
task id.

"Was this task's line already written?" costs the same whatever the size of the
log: beside the log, an index directory holds one small marker file per task
(``<log>.index/<2 hex>/<sha1 of the id>``) with the byte offset where its line
was written; the check reads that marker and the few bytes at that offset. Under
an exclusive lock on the log (several worker processes append to it), a write
first records the offset it is about to write at, then appends the line. A
process killed between the two leaves a marker whose offset holds no such line
(or another task's line, written there later): the check finds no line, and a
redelivery writes it. The log can be truncated or rotated: markers that point
past its end simply read as "not written".

Markers expire with the ledger's records (``LEDGER_RETENTION_SECONDS``): a write
also sweeps one of the 256 marker directories, the one the clock names (a new one
every ``retention / 256`` seconds, whichever process writes), so each is visited
within a retention, however short-lived the processes, and a sweep costs a 256th
of the markers. A task delivered again after its
marker expired (a day, by default) would write its line again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from shared.models import TaskKind
from shared.settings import Settings

logger = logging.getLogger(__name__)

# A line starts with a timestamp, then the tag: the tag is within this many bytes.
_HEAD = 128


class TransientNotificationError(RuntimeError):
    """A failure worth retrying (the mail server timed out, say)."""


def _tag(task_id: str) -> str:
    return f"[{task_id}]"


# How the lines this module writes are read back (the verdict's counts): the tag in
# the log file, and the idempotency skip in the process's own log.
TAG_PATTERN = re.compile(r"\[([^\]\s]+)\]")
SKIP_PATTERN = re.compile(r"task (\S+): .*already \w+, skipping")


def _per_task(pattern: re.Pattern[str], lines: Iterable[str]) -> dict[str, int]:
    """How many lines name each task id (the pattern's first group)."""
    return dict(Counter(m[1] for line in lines if (m := pattern.search(line))))


def count_effect_lines(lines: Iterable[str]) -> dict[str, int]:
    """Lines per task id in a ``LOG_FILE`` (the first ``[...]`` tag of each line)."""
    return _per_task(TAG_PATTERN, lines)


def count_skipped_writes(lines: Iterable[str]) -> dict[str, int]:
    """Per task id, the runs that found their effect already written (process output)."""
    return _per_task(SKIP_PATTERN, lines)


def _skipping(task_id: str, effect: str) -> None:
    """Log a skipped effect ("<what> already <done>"), in the form ``SKIP_PATTERN`` reads."""
    logger.info("task %s: %s, skipping", task_id, effect)


def _marker(log_file: Path, task_id: str) -> Path:
    digest = hashlib.sha1(task_id.encode()).hexdigest()
    return log_file.with_name(log_file.name + ".index") / digest[:2] / digest


def has_effect(log_file: str | Path, task_id: str) -> bool:
    """Is this task's line in the log? Two small reads, whatever the log's size."""
    path = Path(log_file)
    try:
        offset = int(_marker(path, task_id).read_text())
        with path.open("rb") as f:
            f.seek(offset)
            head = f.read(_HEAD + len(task_id)).split(b"\n", 1)[0]
    except (FileNotFoundError, ValueError):
        return False
    return _tag(task_id).encode() in head


# Per log file, in this process: the clock's slot swept last.
_sweeps: dict[Path, int] = {}


def _sweep_markers(log_file: Path, retention: float) -> None:
    """Remove one marker directory's markers older than ``retention`` (0: keep all), if due.
    Called under the log's lock: one sweeper at a time, whatever the thread."""
    if retention <= 0:
        return
    now = time.time()
    slot = int(now // (retention / 256))
    if _sweeps.get(log_file) == slot:
        return
    _sweeps[log_file] = slot
    directory = log_file.with_name(log_file.name + ".index") / f"{slot % 256:02x}"
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return
    with entries:
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < now - retention:
                    os.unlink(entry.path)


def write_log(message: str, *, task_id: str, log_file: str | Path, retention: float = 0.0) -> bool:
    """Append ``message`` to the log file once per task id. Return False if already there.
    ``retention``: markers older than this are swept (``LEDGER_RETENTION_SECONDS``)."""
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if has_effect(path, task_id):
                _skipping(task_id, "log line already written")
                return False
            offset = f.seek(0, os.SEEK_END)
            marker = _marker(path, task_id)
            marker.parent.mkdir(parents=True, exist_ok=True)
            # Intent first (where the line goes), then the line: see the module's docstring.
            partial = marker.with_suffix(".tmp")
            partial.write_text(str(offset))
            partial.replace(marker)
            stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
            f.write(f"{stamp} {_tag(task_id)} {message}\n".encode())
            f.flush()
            _sweep_markers(path, retention)
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def send_notification(email: str, *, task_id: str, attempt: int, settings: Settings) -> bool:
    """The chapter's slow notification: sleep, then 'send' (a line in the log file).

    The first ``NOTIFICATION_FAIL_FIRST_ATTEMPTS`` attempts fail with a transient
    error after the delay, as a timing-out mail server would. Returns False when
    the notification had already been sent by an earlier delivery of this task.
    """
    if has_effect(settings.log_file, task_id):
        _skipping(task_id, f"notification to {email} already sent")
        return False
    if attempt <= settings.notification_crash_first_attempts:
        logger.warning("task %s: attempt %d kills its own process", task_id, attempt)
        os.kill(os.getpid(), signal.SIGKILL)
    if attempt <= settings.notification_hang_first_attempts:
        _hang(task_id, attempt)
    time.sleep(settings.notification_delay_seconds)
    if attempt <= settings.notification_fail_first_attempts:
        raise TransientNotificationError(
            f"mail server timed out (attempt {attempt} of the first "
            f"{settings.notification_fail_first_attempts} that fail)"
        )
    return write_log(
        f"notification sent to {email}",
        task_id=task_id,
        log_file=settings.log_file,
        retention=settings.ledger_retention_seconds,
    )


def _hang(task_id: str, attempt: int) -> None:
    """Stuck for good: no exception ends it, a soft time limit included (as a task
    stuck in a C call or a loop that swallows every error would be); a kill does."""
    logger.warning("task %s: attempt %d hangs", task_id, attempt)
    while True:
        try:
            time.sleep(3600)
        except Exception as exc:
            logger.warning("task %s: %s, and it hangs on", task_id, type(exc).__name__)


def compute(rounds: int) -> int:
    """CPU-bound and deterministic: ``rounds`` steps of a linear congruential generator,
    in pure Python (it holds the GIL the whole time, as most Python computation does).
    About 65 ms per million rounds on the reference machine."""
    x = 1
    for _ in range(rounds):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def heavy(rounds: int, *, task_id: str, log_file: str | Path, retention: float = 0.0) -> bool:
    """The heavy job: compute, then record the result once (idempotent like the others)."""
    if has_effect(log_file, task_id):
        _skipping(task_id, "heavy result already written")
        return False
    result = compute(rounds)
    return write_log(
        f"heavy: {rounds} rounds -> {result:#010x}",
        task_id=task_id,
        log_file=log_file,
        retention=retention,
    )


def perform(
    kind: TaskKind, payload: dict[str, str], *, task_id: str, attempt: int, settings: Settings
) -> bool:
    """Run one job by kind: the single entry point both implementations call."""
    if kind == TaskKind.notification:
        return send_notification(
            payload["email"], task_id=task_id, attempt=attempt, settings=settings
        )
    retention = settings.ledger_retention_seconds
    if kind in (TaskKind.log, TaskKind.beat):
        return write_log(
            payload["message"], task_id=task_id, log_file=settings.log_file, retention=retention
        )
    if kind == TaskKind.heavy:
        return heavy(
            int(payload["rounds"]), task_id=task_id, log_file=settings.log_file, retention=retention
        )
    raise ValueError(f"unknown job kind {kind!r}")
