"""Celery's redelivery, as settings: what brings a dead worker's task back within a
horizon. Declared in ``shared.services``; no Celery import (a harness reads it)."""

from __future__ import annotations

from typing import Any


def horizon(seconds: float, scan: float) -> dict[str, Any]:
    """On Redis: the visibility timeout and kombu's unacked scan. (RabbitMQ requeues
    at once when the dead worker's connection closes: these change nothing there.)"""
    return {"celery_visibility_timeout": seconds, "celery_restore_interval": scan}


def stock() -> dict[str, Any]:
    """Celery as it ships: a task acknowledged as it starts (a worker's death loses it),
    four messages prefetched per process. This project: acks_late, one."""
    return {"celery_acks_late": False, "celery_prefetch_multiplier": 4}
