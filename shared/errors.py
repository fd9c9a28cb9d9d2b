"""A dependency that does not answer: what a client is told (a 503 that names the
dependency, with ``Retry-After``), and what only the log is told (the exception's
own text: hosts, ports and the driver's message stay on the server)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

Dependency = Literal["broker", "ledger"]

# What a 503 asks a client to wait before it tries again, seconds: about the time a
# restarted Redis or a reconnecting broker takes here (docs/production.md).
RETRY_AFTER_SECONDS = 5


class DependencyUnavailable(RuntimeError):
    """``public``: the sentence a client gets; ``str(exc)``: the detail for the log."""

    dependency: ClassVar[Dependency]

    def __init__(self, public: str, detail: str | None = None) -> None:
        super().__init__(detail or public)
        self.public = public


class LedgerUnavailable(DependencyUnavailable):
    """Redis could not be reached (or is not configured)."""

    dependency = "ledger"


class SchedulerUnavailable(DependencyUnavailable):
    """The job could not be handed over (the broker is down)."""

    dependency = "broker"


def what_was_queued(sent: Sequence[str], maybe: Sequence[str], unsent: Sequence[str]) -> str:
    """The 503's account of a request's tasks: a client must know what will still run."""
    if not sent and not maybe:
        return "nothing was queued"
    parts = []
    if sent:
        parts.append(f"{', '.join(sent)} queued")
    if maybe:
        parts.append(f"{maybe[0]} may have been (the broker did not confirm it in time)")
    if unsent:
        parts.append(f"{', '.join(unsent)} not")
    return "; ".join(parts)
