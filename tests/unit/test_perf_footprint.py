"""The footprint experiment's sides, from the declaration alone (no process)."""

from __future__ import annotations

from experiments.perf.footprint import LEDGER_REDIS, Side, sides_for, stack_services
from harness.stacks import BROKERS
from shared.services import IMPLEMENTATIONS, SERVICES, Delivery, Implementation, services_of

ALL = tuple(IMPLEMENTATIONS)


def takes_the_stack_broker(impl: Implementation) -> bool:
    return "broker" in IMPLEMENTATIONS[impl].needs


def test_every_implementation_on_the_first_broker_and_the_broker_takers_on_each() -> None:
    plan = sides_for(ALL, BROKERS)
    first, *others = BROKERS
    assert [s.implementation for s in plan[first]] == list(ALL)
    for broker in others:
        assert [s.implementation for s in plan[broker]] == [
            i for i in ALL if takes_the_stack_broker(i)
        ]
    # The committed report's keys: the first broker's sides by value, the others' "on" it.
    assert [s.key for s in plan["redis"]] == [i.value for i in ALL]
    takers = [f"{i.value} on rabbitmq" for i in ALL if takes_the_stack_broker(i)]
    assert [s.key for s in plan["rabbitmq"]] == takers


def test_a_side_counts_its_own_services_and_the_broker_it_hands_its_tasks_to() -> None:
    # What a RabbitMQ stack runs: the ledger's Redis, RabbitMQ and the epmd it starts.
    present = [LEDGER_REDIS, "rabbitmq", "epmd", *(s for i in ALL for s in services_of(i))]
    for impl in ALL:
        side = Side(impl, "rabbitmq", first=False)
        counted = side.processes("rabbitmq", present)
        own = [s for s in services_of(impl) if SERVICES[s].python]
        assert counted[: len(own)] == own
        broker = counted[len(own) :]
        if takes_the_stack_broker(impl):
            assert broker == ["rabbitmq", "epmd"]
        elif IMPLEMENTATIONS[impl].delivery == Delivery.broker:
            assert broker == [LEDGER_REDIS]  # its broker is the ledger's Redis
        else:
            assert broker == []  # it holds its tasks in process memory


def test_a_stack_runs_its_sides_services_once_and_a_broker_only_for_those_that_take_it() -> None:
    in_process = [i for i in ALL if IMPLEMENTATIONS[i].delivery == Delivery.in_process]
    alone = stack_services([Side(i, "redis", first=True) for i in in_process])
    assert "broker" not in alone
    every = stack_services(sides_for(ALL, BROKERS)["redis"])
    assert every[:2] == (LEDGER_REDIS, "broker")
    assert len(every) == len(set(every))
    assert {s for i in ALL for s in services_of(i) if SERVICES[s].python} <= set(every)
