"""BackgroundTasks's rows of the crash table (``ImplementationSpec.scenarios``)."""

from __future__ import annotations

from experiments.crash.scenario import Fault, Scenario, Shape, graceful_stop_timeout
from shared.services import Implementation

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="bg-kill",
        column="api-kill",
        title="bg-api SIGKILL",
        implementation=Implementation.bg,
        fault=Fault("kill", "bg-api"),
        expected="every task in flight is lost: it lived only in the killed process",
    ),
    Scenario(
        key="bg-kill-one-process",
        title="one of two bg-api processes SIGKILL",
        implementation=Implementation.bg,
        fault=Fault(
            "kill",
            "bg-api",
            restart=False,
        ),
        expected="only the tasks held by the killed process are lost; the other process's "
        "complete (uvicorn starts a new process in its place)",
        stack=Shape(bg_workers=2),
    ),
    Scenario(
        key="bg-term",
        title="bg-api SIGTERM (graceful)",
        implementation=Implementation.bg,
        fault=Fault(
            "terminate",
            "bg-api",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: uvicorn waits for running background tasks before it exits",
    ),
    Scenario(
        key="bg-term-timeout",
        title="bg-api SIGTERM, shutdown timeout < task",
        implementation=Implementation.bg,
        fault=Fault(
            "terminate",
            "bg-api",
            stop_timeout=lambda p: float(p.grace),
        ),
        expected="every task in flight is lost once the shutdown timeout cuts it off",
        stack=Shape(
            # Local: uvicorn's --timeout-graceful-shutdown. Compose: `docker compose
            # stop -t grace`, i.e. SIGKILL after the grace period.
            graceful_timeout=lambda p: p.grace,
        ),
    ),
)
