"""When a broker hands an unacknowledged message back: each implementation's rule.

The verdict (``shared.verdict``) reads these to tell a dead run *awaiting
redelivery* from a *lost* one; the crash experiment and the lab read them to say
after how long a task comes back. Each implementation with a broker declares its
own (``ImplementationSpec.redelivery``, "module:function"); ``Redelivery.of`` is
Celery's, read from its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.services import IMPLEMENTATIONS, Implementation, declared
from shared.settings import Settings


@dataclass(frozen=True)
class Redelivery:
    """When the broker gives an unacknowledged message back. ``of``: Celery's; each
    implementation with a broker declares its own (``shared.services``)."""

    broker: str  # "redis": after a timeout, at a live worker's scan; else at close
    visibility_timeout: float
    restore_interval: float
    # False: the running task was acknowledged (or popped) already: a death loses it.
    acks_late: bool = True
    # A retry's message waits with a worker until it is due (Celery's ETA), and so comes
    # back with the rest; False: it waits elsewhere (taskiq's schedule source).
    holds_retries: bool = True
    why_lost: str = "its worker died; stock acks had acknowledged it as it started"
    # True: the timeout counts from the run's death (its last heartbeat: RQ's started
    # job registry), not from its delivery (kombu's visibility timeout).
    from_death: bool = False
    # What a dead run waits for (the reason its verdict gives meanwhile).
    pending: str = "its worker died; the broker hands it back"

    @classmethod
    def of(cls, settings: Settings) -> Redelivery:
        """The rules a stack running with ``settings`` has."""
        return cls(
            broker=settings.broker,
            visibility_timeout=settings.celery_visibility_timeout,
            restore_interval=settings.celery_restore_interval,
            acks_late=settings.celery_acks_late,
        )

    def due(self, started_at: float, died_at: float) -> float:
        """When a run started at ``started_at`` that died at ``died_at`` is back in the queue."""
        if self.broker == "redis":
            # kombu restores a message whose delivery is older than the visibility
            # timeout, at a scan that a live worker runs every restore interval.
            since = died_at if self.from_death else started_at
            return max(since + self.visibility_timeout, died_at) + self.restore_interval
        # AMQP: the broker requeues a consumer's unacked messages when its connection closes.
        return died_at


def declared_redeliveries(settings: Settings) -> dict[Implementation, Redelivery]:
    """Each implementation's own rule, as its declaration names it ("module:function")."""
    return {
        impl: declared(spec.redelivery)(settings)
        for impl, spec in IMPLEMENTATIONS.items()
        if spec.redelivery is not None
    }
