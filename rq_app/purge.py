"""Drop RQ's waiting jobs: ``python -m rq_app.purge`` (its declared ``purge``,
``shared.services``), run where its worker runs, between measurements.

``Queue.empty()`` deletes the queued jobs and their data (``rq empty`` does the
same from the command line). A started job stays its worker's; scheduled ones
(a retry's, the periodic task's) stay in the ScheduledJobRegistry.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from rq_app.queue import QUEUE, connect, open_queue
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def purge(settings: Settings) -> int:
    """Empty RQ's queue on ``settings.rq_url``; how many jobs were dropped."""
    connection = connect(settings)
    try:
        return int(open_queue(connection, settings).empty())  # type: ignore[no-untyped-call]
    finally:
        connection.close()


def main(argv: Sequence[str] = ()) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=logging.INFO)
    if argv:
        logger.error("usage: python -m rq_app.purge (the settings say where)")
        return 2
    dropped = purge(get_settings())
    logger.info("rq: dropped %d waiting job(s) from %r", dropped, QUEUE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
