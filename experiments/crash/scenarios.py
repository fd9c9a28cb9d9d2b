"""The crash table's scenarios: each implementation's own (``ImplementationSpec.scenarios``),
collected in the declaration's order, and picked by key."""

from __future__ import annotations

from collections.abc import Sequence

from experiments.crash.scenario import (
    NOTHING,
    Action,
    Fault,
    Params,
    Scenario,
    Shape,
    Watch,
    graceful_stop_timeout,
    hang_window,
    loop_window,
)
from shared.services import IMPLEMENTATIONS, Implementation, declared

__all__ = [
    "BY_KEY",
    "NOTHING",
    "SCENARIOS",
    "Action",
    "Fault",
    "Params",
    "Scenario",
    "Shape",
    "Watch",
    "graceful_stop_timeout",
    "hang_window",
    "loop_window",
    "pick",
]

SCENARIOS: tuple[Scenario, ...] = tuple(
    scenario
    for spec in IMPLEMENTATIONS.values()
    if spec.scenarios is not None
    for scenario in declared(spec.scenarios)
)
BY_KEY = {s.key: s for s in SCENARIOS}


def pick(
    names: str | Sequence[str] | None,
    implementations: Sequence[Implementation] | None = None,
) -> list[Scenario]:
    """Scenarios by key ("key,other-key"); None or "all": every one. Only those
    of ``implementations``, when given."""
    items = ["all"] if names is None else names.split(",") if isinstance(names, str) else names
    chosen: list[Scenario] = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            chosen += SCENARIOS
        elif name in BY_KEY:
            chosen.append(BY_KEY[name])
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(BY_KEY)}")
    wanted = set(implementations or IMPLEMENTATIONS)
    return [s for s in dict.fromkeys(chosen) if s.implementation in wanted]
