"""The dramatiq app's routes for the experiments, beside its contract: the shared
baseline (``bare``) only, so far (no capacity ladder of its own)."""

from __future__ import annotations

from fastapi import APIRouter

from shared import experiment_routes

router = APIRouter(tags=["experiments"])
router.include_router(experiment_routes.router)
