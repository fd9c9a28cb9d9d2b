"""The soak's fault plan: a fixed count, whatever the machine's speed."""

from __future__ import annotations

import pytest

from experiments.__main__ import command_parser
from experiments.soak import faults_for, planned_faults


def test_a_fault_at_every_multiple_strictly_inside_the_traffic() -> None:
    assert planned_faults(20, 4) == 4  # at 4, 8, 12, 16 s
    assert planned_faults(180, 6) == 29  # the reference run's 29
    assert planned_faults(21, 4) == 5
    assert planned_faults(3, 4) == 0


def test_the_cycle_hits_both_apis_the_work_the_broker_and_a_partition() -> None:
    assert faults_for("redis") == ["bg-api", "celery-api", "worker", "broker", "partition"]
    assert faults_for("rabbitmq")[-2:] == ["redis", "partition"]


@pytest.mark.parametrize("flag", ["--fault-every", "--duration"])
def test_a_period_or_duration_of_zero_is_refused_at_the_command_line(flag: str) -> None:
    parser, _ = command_parser("soak")
    with pytest.raises(SystemExit):
        parser.parse_args([flag, "0"])
    assert parser.parse_args([flag, "2.5"]) is not None
