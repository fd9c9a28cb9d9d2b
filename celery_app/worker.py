"""The Celery app the worker, beat and Flower run: ``celery -A celery_app.worker worker``.

Its configuration is ``celery_app.config``'s, from the settings this process
reads (the environment, then ``.env``); its tasks are ``celery_app.tasks``.
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging

from celery_app.config import create_celery
from shared.logs import configure_logging
from shared.settings import get_settings


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Celery's own logging setup is replaced by the one both APIs use (LOG_LEVEL)."""
    configure_logging(get_settings().log_level)


app = create_celery(get_settings())
