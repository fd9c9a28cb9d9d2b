"""The experiments' routes that both apps have: baselines, not part of the comparison's contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter

from shared.http import TOO_LARGE, UNAVAILABLE, EmailPath
from shared.models import NotificationAccepted

F = TypeVar("F", bound=Callable[..., Any])

router = APIRouter(tags=["experiments"])


def accepted(email: str, task_ids: list[str]) -> NotificationAccepted:
    """A capacity rung's answer: what the contract's route answers, with its task ids."""
    return NotificationAccepted(email=email, message="handed over", task_ids=task_ids)


def capacity_rung(
    on: APIRouter, name: str, description: str, *, can_fail: bool = False
) -> Callable[[F], F]:
    """A capacity rung's route on ``on``: ``POST /capacity/<name>/{email}``, answered as
    the contract's route is (``python -m experiments capacity`` finds them by path)."""
    return on.post(
        f"/capacity/{name}/{{email}}",
        status_code=202,
        response_model=NotificationAccepted,
        responses={**TOO_LARGE, **UNAVAILABLE} if can_fail else TOO_LARGE,
        description=description,
    )


@router.post(
    "/send-notification/{email}/bare",
    response_model=NotificationAccepted,
    responses=TOO_LARGE,
    description="The same validation and answer with no task at all: the latency baseline.",
)
async def send_notification_bare(email: EmailPath) -> NotificationAccepted:
    return NotificationAccepted(email=email, message="nothing scheduled", task_ids=[])
