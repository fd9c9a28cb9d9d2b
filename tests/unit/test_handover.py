"""The Celery API's account of a failed publish (``celery_app.handover``)."""

from __future__ import annotations


def _raised(exc: Exception, cause: Exception) -> Exception:
    """``exc`` as ``raise exc from cause`` leaves it (how kombu re-raises)."""
    exc.__cause__ = cause
    return exc


def test_a_failed_publish_tells_refused_from_unanswered() -> None:
    from kombu.exceptions import OperationalError

    from celery_app.handover import _maybe_sent
    from shared.errors import what_was_queued

    nacked = _raised(OperationalError(""), RuntimeError("MessageNacked"))
    unanswered = _raised(OperationalError("timed out"), TimeoutError("timed out"))
    assert not _maybe_sent(nacked) and not _maybe_sent(ConnectionRefusedError())
    assert _maybe_sent(unanswered)
    assert what_was_queued([], [], ["a", "b"]) == "nothing was queued"
    assert what_was_queued(["a"], [], ["b"]) == "a queued; b not"
    assert what_was_queued([], ["a"], ["b"]) == (
        "a may have been (the broker did not confirm it in time); b not"
    )
    assert what_was_queued(["a"], ["b"], []) == (
        "a queued; b may have been (the broker did not confirm it in time)"
    )
