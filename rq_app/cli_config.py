"""``rq worker -c rq_app.cli_config``: the settings RQ's command line reads from a
module (upper-case names). Its Redis comes from the project's settings
(``RQ_BROKER_URL``, or ``REDIS_URL``), as every other process's does; importing it
reads them (a refused setting stops the worker here)."""

from __future__ import annotations

from rq_app.queue import QUEUE
from shared.settings import get_settings

REDIS_URL = get_settings().rq_url
QUEUES = [QUEUE]
