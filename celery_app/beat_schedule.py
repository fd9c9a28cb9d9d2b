"""Beat's scheduler: Celery's own, plus a mark of life its healthcheck reads."""

from __future__ import annotations

from pathlib import Path

from celery.beat import PersistentScheduler

from celery_app.beat_health import alive_file


class AliveScheduler(PersistentScheduler):
    """``PersistentScheduler`` that touches ``<schedule>.alive`` whenever it syncs.

    ``beat_sync_every=1`` makes that after every task sent, and at start and stop.
    """

    schedule_filename: str  # set by PersistentScheduler.__init__

    def sync(self) -> None:
        super().sync()
        alive_file(Path(self.schedule_filename)).touch()
