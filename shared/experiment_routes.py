"""The experiments' routes that both apps have: baselines, not part of the comparison's contract."""

from __future__ import annotations

from fastapi import APIRouter

from shared.http import TOO_LARGE, EmailPath
from shared.models import NotificationAccepted

router = APIRouter(tags=["experiments"])


@router.post(
    "/send-notification/{email}/bare",
    response_model=NotificationAccepted,
    responses=TOO_LARGE,
    description="The same validation and answer with no task at all: the latency baseline.",
)
async def send_notification_bare(email: EmailPath) -> NotificationAccepted:
    return NotificationAccepted(email=email, message="nothing scheduled", task_ids=[])
