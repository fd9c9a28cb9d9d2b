"""The one table of services (``shared.services``) against the files that run them:
``docker-compose.yml`` (and the RabbitMQ override) and the ``Procfile`` run every
service the table has, with its command and its options, on its port and port
variable, with a healthcheck that probes what the table says. Pure: the files
are read, nothing is run."""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from shared.services import (
    IMPLEMENTATIONS,
    PYTHON_SERVICES,
    SERVICES,
    Delivery,
    Implementation,
    Probe,
    declared,
    delivery_of,
    horizon_settings,
    implementation_of,
    service,
    stock_settings,
)
from shared.settings import explicit_settings
from tests.unit.conftest import REPO


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = {}
    for name in ("docker-compose.yml", "docker-compose.rabbitmq.yml"):
        data = yaml.safe_load((REPO / name).read_text(encoding="utf-8"))
        for key, value in data["services"].items():
            services[key] = {**services.get(key, {}), **value}
    return services


def procfile() -> dict[str, list[str]]:
    """Each line's command, after ``exec`` and any ``env NAME=value`` in front of it."""
    out = {}
    for line in (REPO / "Procfile").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, command = line.partition(":")
        argv = shlex.split(command)
        assert argv[0] == "exec", line
        argv = argv[1:]
        if argv[0] == "env":
            argv = argv[1:]
            while "=" in argv[0]:
                argv = argv[1:]
        out[name.strip()] = argv
    return out


def runs_in_order(argv: Sequence[str], command: Sequence[str]) -> bool:
    """Every word of ``command`` is in ``argv``, in the same order (``argv`` may add its own)."""
    rest = iter(argv)
    return all(word in rest for word in command)


def port_option(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--port":
            return argv[i + 1]
        if arg.startswith("--port="):
            return arg.split("=", 1)[1]
    return None


@pytest.mark.parametrize("name", list(SERVICES))
def test_compose_runs_each_service_as_the_table_says(name: str) -> None:
    spec = SERVICES[name]
    found = compose_services()
    assert name in found, f"docker-compose.yml has no {name}"
    argv = [str(a) for a in found[name]["command"]]
    assert runs_in_order(argv, spec.command), (name, argv, spec.command)
    if spec.port_variable is not None:
        ports = [str(p) for p in found[name].get("ports", [])]
        assert any(f"${{{spec.port_variable}:-{spec.port}}}:{spec.port}" in p for p in ports), ports
    if spec.probe == Probe.http:
        assert port_option(argv) == str(spec.port), argv
        check = " ".join(map(str, found[name]["healthcheck"]["test"]))
        assert f"127.0.0.1:{spec.port}{spec.ready}" in check, check


@pytest.mark.parametrize("name", PYTHON_SERVICES)
def test_the_procfile_runs_each_python_service_as_the_table_says(name: str) -> None:
    spec = SERVICES[name]
    lines = procfile()
    assert name in lines, f"the Procfile has no {name}"
    assert runs_in_order(lines[name], spec.command), (name, lines[name])
    if spec.port_variable is not None:
        assert port_option(lines[name]) == f"${{{spec.port_variable}:-{spec.port}}}"


def test_the_procfile_and_compose_run_no_python_service_the_table_lacks() -> None:
    assert set(procfile()) == set(PYTHON_SERVICES)
    python = {k for k, v in compose_services().items() if "image" not in v or "app" in v["image"]}
    assert python - set(SERVICES) == set()


def test_each_side_names_services_of_its_own_and_a_delivery_model() -> None:
    for impl, side in IMPLEMENTATIONS.items():
        assert implementation_of(side.api) == impl and SERVICES[side.api].probe == Probe.http
        assert service(side.runs_the_work).runs_work
        assert {s for s in side.needs if s != "broker"} <= set(SERVICES)
    assert delivery_of(Implementation.bg) == Delivery.in_process
    assert delivery_of("celery") == Delivery.broker
    assert implementation_of("worker-2") == Implementation.celery  # a numbered copy is its original
    with pytest.raises(KeyError, match="unknown service"):
        service("nginx")


def test_a_worker_runs_with_events_for_flower_and_without_mingle_or_gossip() -> None:
    # The table's options reach compose and the Procfile alike (the local stacks add theirs).
    for argv in (compose_services()["worker"]["command"], procfile()["worker"]):
        assert {"-E", "--without-mingle", "--without-gossip"} <= set(map(str, argv))
        assert not [a for a in map(str, argv) if re.match(r"--loglevel", a)]  # LOG_LEVEL decides


def test_the_image_holds_every_declared_implementations_package() -> None:
    # Every Python service runs from the one image; the verdict imports each
    # declared implementation's rule, so each package must be in it.
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^COPY \. \./$", dockerfile, re.M), "the image copies its context"
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def in_context(path: str) -> bool:
        """Docker's rule: the last pattern that matches decides; "!" lets it in."""
        verdict = True
        for pattern in patterns:
            if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
                verdict = pattern.startswith("!")
        return verdict

    for spec in IMPLEMENTATIONS.values():
        assert in_context(spec.package), spec.package
    assert in_context("shared") and not in_context("tests") and not in_context(".env")


def test_each_declared_horizon_brings_a_dead_workers_task_back_within_it() -> None:
    # What the soak and the lab's demo rely on: one horizon, every broker implementation.
    settings = explicit_settings(**horizon_settings(7.0, 0.5))
    for impl, spec in IMPLEMENTATIONS.items():
        if spec.redelivery is None:
            assert spec.horizon is None, impl  # nothing comes back: nothing to bound
            continue
        assert spec.horizon is not None, impl
        rule = declared(spec.redelivery)(settings)
        assert rule.acks_late and rule.due(0.0, 0.0) <= 7.0 + 0.5, impl


def test_stock_settings_change_when_a_dead_workers_task_comes_back() -> None:
    # Where the project departs from its library, and the verdict reads the difference.
    project = explicit_settings(**horizon_settings(7.0, 0.5))
    for impl, spec in IMPLEMENTATIONS.items():
        if spec.redelivery is None:
            assert stock_settings(impl) == {}, impl
            continue
        stock = explicit_settings(**{**horizon_settings(7.0, 0.5), **stock_settings(impl)})
        rule, ours = declared(spec.redelivery)(stock), declared(spec.redelivery)(project)
        assert rule != ours, impl
        # Stock Celery loses a running task (acked as it starts); stock taskiq-redis
        # keeps it but has no bound on when it comes back; stock RQ parks it minutes
        # later than the project's settings do.
        assert not rule.acks_late or rule.due(0.0, 0.0) > ours.due(0.0, 0.0), impl
