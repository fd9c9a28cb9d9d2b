"""One logging setup for every process: both APIs, the worker and beat.

Time, level, logger, message, on stderr, at ``LOG_LEVEL``. uvicorn configures only
its own loggers, so without this the APIs would drop ``shared.work``'s INFO lines
(an idempotency skip) and print warnings with no time or level; Celery's own setup
is replaced too (``celery_app.worker`` connects this to its ``setup_logging``
signal), so a line from the worker reads like a line from an API.
"""

from __future__ import annotations

import logging.config

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"default": {"format": FORMAT}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "default",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"handlers": ["stderr"], "level": level},
            # uvicorn's loggers keep their levels but write through the same handler.
            # (Not uvicorn.access: uvicorn's --no-access-log switches that one off.)
            "loggers": {
                name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error")
            },
        }
    )
