"""The soak's fault plan: a fixed count, whatever the machine's speed, and what each
fault hits, read from the declaration of the implementations."""

from __future__ import annotations

import pytest

from experiments.__main__ import command_parser
from experiments.reporting.soak import COLUMNS, render
from experiments.soak_plan import (
    copies,
    faults_for,
    hits,
    partitioned,
    plan_for,
    planned_faults,
    stack_services,
    worker_concurrency,
)
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, services_of


def test_a_fault_at_every_multiple_strictly_inside_the_traffic() -> None:
    assert planned_faults(20, 4) == 4  # at 4, 8, 12, 16 s
    assert planned_faults(180, 6) == 29  # the reference run's 29
    assert planned_faults(21, 4) == 5
    assert planned_faults(3, 4) == 0


def test_the_cycle_hits_the_apis_the_work_the_broker_and_a_partition() -> None:
    # The same four kinds however many implementations run: each fault hits every one.
    assert faults_for("redis") == ["api", "work", "broker", "partition"]
    assert faults_for("rabbitmq")[-2:] == ["redis", "partition"]


def test_the_plan_is_the_declaration_one_entry_per_implementation() -> None:
    plan = plan_for(tuple(IMPLEMENTATIONS))
    assert list(plan) == list(IMPLEMENTATIONS)
    for impl, role in plan.items():
        spec = IMPLEMENTATIONS[impl]
        assert (role.api, role.work, role.delivery) == (
            spec.api,
            spec.runs_the_work,
            spec.delivery,
        )
        # A partition cuts a work runner off its broker: only where the broker redelivers.
        assert role.cut == (spec.delivery == Delivery.broker)
        assert role.to_dict()["runs_the_work"] == spec.runs_the_work
    assert partitioned(plan) == tuple(
        s.runs_the_work for s in IMPLEMENTATIONS.values() if s.delivery == Delivery.broker
    )


def test_the_stack_runs_what_each_selected_implementation_needs() -> None:
    for impl in IMPLEMENTATIONS:
        services = stack_services((impl,))
        assert "redis" in services  # the ledger
        assert IMPLEMENTATIONS[impl].api in services
        assert IMPLEMENTATIONS[impl].runs_the_work in services
    both = stack_services(tuple(IMPLEMENTATIONS))
    assert len(both) == len(set(both))


def test_a_work_runner_s_copies_are_its_numbered_services_only() -> None:
    running = ("redis", "worker", "taskiq-worker", "worker-2", "bg-api", "worker-api")
    assert copies("worker", running) == ["worker", "worker-2"]
    assert copies("taskiq-worker", running) == ["taskiq-worker"]
    assert copies("bg-api", running) == ["bg-api"]


def test_a_fault_hits_the_implementation_it_belongs_to_and_redis_hits_every_one() -> None:
    for impl in IMPLEMENTATIONS:
        assert hits(impl, ["redis"])
        for other in IMPLEMENTATIONS:
            own = services_of(other)[0]
            assert hits(impl, [own]) == (other == impl), (impl, own)
    worker = IMPLEMENTATIONS[Implementation.celery].runs_the_work
    assert hits(Implementation.celery, [f"{worker}-2"])


def test_one_work_runner_carries_the_whole_traffic() -> None:
    assert worker_concurrency(6, 0.5) == 4  # 3 tasks at a time, a quarter to spare
    assert worker_concurrency(4, 0.3) == 2
    assert worker_concurrency(0.5, 0.1) == 2


def test_the_report_has_a_row_and_a_column_per_implementation() -> None:
    plan = plan_for(tuple(IMPLEMENTATIONS))
    lost = ["lost_held_by_a_killed_process", "lost_never_started", "lost_otherwise"]
    counts = dict.fromkeys([*COLUMNS, *lost, "in_flight_just_before_its_kills"], 0)
    fault = {
        "kind": "kill",
        "services": ["redis"],
        "in_flight": {i.value: 1 for i in plan},
        "held": {},
        "down_s": 1.0,
    }
    data = {
        "config": {
            "duration_s": 20,
            "fault_every_s": 4,
            "rate_per_implementation": 4,
            "delay": 0.3,
            "broker": "redis",
            "workers": 2,
            "worker_concurrency": 2,
            "redelivery_horizon_s": 5,
            "plan": {i.value: r.to_dict() for i, r in plan.items()},
            "fault_cycle": faults_for("redis"),
            "cut_s": 7,
        },
        "implementations": {i.value: {**counts, "lost": 0} for i in plan},
        "faults": [fault],
        "settle": "settled",
        "targets": [{"target": "t", "measured": 1, "met": True}],
    }
    text = render(data)
    for role in plan.values():
        assert f"| {role.title} |" in text
        assert f"{role.title} in flight then" in text
    assert "side" not in text.replace("inside", "")


@pytest.mark.parametrize("flag", ["--fault-every", "--duration"])
def test_a_period_or_duration_of_zero_is_refused_at_the_command_line(flag: str) -> None:
    parser, _ = command_parser("soak")
    with pytest.raises(SystemExit):
        parser.parse_args([flag, "0"])
    assert parser.parse_args([flag, "2.5"]) is not None


def test_every_declared_implementation_is_soaked_unless_told_otherwise() -> None:
    parser, _ = command_parser("soak")
    assert parser.parse_args([]).implementations == tuple(IMPLEMENTATIONS)
    chosen = parser.parse_args(["--implementations", "celery,bg"]).implementations
    assert chosen == (Implementation.celery, Implementation.bg)
