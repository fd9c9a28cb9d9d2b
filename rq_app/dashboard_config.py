"""``rq-dashboard --config rq_app.dashboard_config``: the dashboard's Redis from the
project's settings (``RQ_BROKER_URL``, or ``REDIS_URL``), and no dashboard without a
password. rq-dashboard serves every page (and its job actions: requeue, delete)
to anyone unless ``RQ_DASHBOARD_USERNAME`` is set, so this refuses to start
without it and ``RQ_DASHBOARD_PASSWORD`` (production: nor with the placeholder)."""

from __future__ import annotations

import os

from shared.settings import PLACEHOLDER, get_settings

_settings = get_settings()
_user = os.environ.get("RQ_DASHBOARD_USERNAME", "")
_password = os.environ.get("RQ_DASHBOARD_PASSWORD", "")
if not _user or not _password:
    raise SystemExit(
        "rq-dashboard refuses to start without RQ_DASHBOARD_USERNAME and RQ_DASHBOARD_PASSWORD"
    )
if _settings.environment == "production" and PLACEHOLDER in _password:
    raise SystemExit(f"ENVIRONMENT=production: RQ_DASHBOARD_PASSWORD holds {PLACEHOLDER!r}")

RQ_DASHBOARD_REDIS_URL = _settings.rq_url
