"""One ``Settings`` for every process (``shared.settings``): what the environment
gives it, and how it reaches a child process."""

from __future__ import annotations

import pytest

from harness.compose import settings_from_env
from shared.settings import Settings, explicit_settings


@pytest.mark.parametrize("value", ["0.2", "3"])
def test_notification_delay_accepts_floats(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFICATION_DELAY_SECONDS", value)
    assert Settings().notification_delay_seconds == float(value)


def test_settings_reach_a_child_process_and_come_back_the_same() -> None:
    settings = explicit_settings(
        notification_delay_seconds=0.2, celery_acks_late=False, threadpool_tokens=None
    )
    env = settings.to_env()
    assert env["NOTIFICATION_DELAY_SECONDS"] == "0.2" and env["CELERY_ACKS_LATE"] == "false"
    assert "THREADPOOL_TOKENS" not in env  # None: the library's own default
    assert settings_from_env({**env, "PATH": "/bin"}) == settings
