"""The soak's plan, pure, from the declaration (``shared.services``): what each
implementation offers the faults, what the faults hit in turn, how many come, and
how many tasks a work runner takes at once. Unit-tested; ``experiments.soak`` runs it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from experiments.reporting.soak import API, BROKER, LEDGER, PARTITION, WORK
from harness.stacks import NEEDED_SERVICES
from shared.models import Implementation
from shared.services import IMPLEMENTATIONS, Delivery, service


@dataclass(frozen=True)
class Role:
    """What one implementation offers the faults, as its declaration says."""

    implementation: Implementation
    title: str
    api: str
    work: str  # the service whose processes run its tasks
    delivery: Delivery

    @property
    def cut(self) -> bool:
        """Its work runner reaches a broker, so a partition can cut it off."""
        return self.delivery == Delivery.broker

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "api": self.api,
            "runs_the_work": self.work,
            "delivery": self.delivery.value,
            "partitioned": self.cut,
        }


def plan_for(implementations: Sequence[Implementation]) -> dict[Implementation, Role]:
    """Each implementation's role, from its declaration, in the order given."""
    return {
        impl: Role(impl, s.title, s.api, s.runs_the_work, s.delivery)
        for impl in implementations
        for s in (IMPLEMENTATIONS[impl],)
    }


def faults_for(broker: str) -> list[str]:
    """What the faults hit, in turn: every API, every work runner, the broker; on
    RabbitMQ, Redis too (the ledger's store); then the work runners' way to their
    broker (a partition). The same cycle whatever the implementations: each fault
    hits every one of them at the same moment."""
    cycle = [API, WORK, BROKER]
    if broker != LEDGER:
        cycle.append(LEDGER)
    cycle.append(PARTITION)
    return cycle


def planned_faults(duration: float, every: float) -> int:
    """One fault at every multiple of ``every`` strictly inside the traffic. Each comes
    at its time or, on a loaded machine, as soon as the one before is back, so the
    count does not depend on how fast services restart; the traffic runs on until the
    last fault is back, and its real length is reported."""
    return max(0, math.ceil(duration / every) - 1)


def stack_services(implementations: Sequence[Implementation]) -> tuple[str, ...]:
    """What the selected implementations need running, each service once."""
    return tuple(dict.fromkeys(s for impl in implementations for s in NEEDED_SERVICES[impl]))


def partitioned(plan: Mapping[Implementation, Role]) -> tuple[str, ...]:
    """The services a partition cuts: each broker implementation's work runner (its
    first copy: the others go on taking tasks meanwhile)."""
    return tuple(dict.fromkeys(r.work for r in plan.values() if r.cut))


def copies(name: str, services: Sequence[str]) -> list[str]:
    """``name`` and its numbered copies ("worker", "worker-2", ...) among ``services``."""
    out = []
    for s in services:
        base, _, number = s.rpartition("-")
        if s == name or (base == name and number.isdigit()):
            out.append(s)
    return out


def hits(impl: Implementation, services: Sequence[str]) -> bool:
    """Does a fault on these services hit ``impl``: one of its own, or one every
    implementation uses (Redis: every ledger)."""
    return any(service(s).implementation in (None, impl) for s in services)


def worker_concurrency(rate: float, delay: float) -> int:
    """Tasks one work runner runs at once: enough for the whole traffic with a quarter
    to spare, so that one copy alone carries it while another is down (and an
    implementation with one copy keeps up at all)."""
    return max(2, math.ceil(1.25 * rate * delay))
