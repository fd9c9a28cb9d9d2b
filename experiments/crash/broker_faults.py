"""Faults between the workers and their broker in a crash scenario: a worker cut off
its broker while it runs a task (``cut_while_running``), and the broker's leading
process killed for good under steady traffic (``fail_over``), with a ``Supervisor``
doing what a restart policy does for a worker that exits by itself meanwhile."""

from __future__ import annotations

import logging
import threading
import time

from experiments.crash.outcome import Outcome, Say
from experiments.crash.scenarios import Params, Scenario
from experiments.traffic import Traffic, submit
from harness.procs import Timeout, wait_until
from harness.target import Target, read_records
from shared.models import TaskRecord, TaskState
from shared.services import IMPLEMENTATIONS

logger = logging.getLogger(__name__)


def cut_while_running(
    sc: Scenario,
    p: Params,
    target: Target,
    since: float,
    pairs: list[list[str]],
    out: Outcome,
    say: Say,
) -> float:
    """Cut the service off its broker while it runs a notification; submit as many
    requests again during the cut and after the heal (into ``pairs``); the cut's time."""
    assert sc.fault.service is not None
    service = sc.fault.service
    notifications = [pair[0] for pair in pairs]

    def cut_one_runs() -> list[TaskRecord] | None:
        records = read_records(target, notifications, since)
        mine = [
            r
            for r in records
            if r.state == TaskState.running and r.runner and target.service_of(r.runner) == service
        ]
        return mine or None

    delay = target.settings.notification_delay_seconds
    running = wait_until(cut_one_runs, 15 + 3 * delay, f"{service} running a notification", 0.05)
    out.running_ids_at_kill = [r.task_id for r in running]
    out.running_at_kill = len(running)
    broker = target.settings.broker
    seconds = sc.fault.cut(p, "redis" if broker == "redis" else "rabbitmq")
    out.cut_seconds = seconds
    say(f"{service} runs {len(running)} notification(s): cut off the broker for {seconds:g}s")
    t0 = time.time()
    target.cut(service)
    try:
        pairs += submit(target, sc.implementation, sc.requests_of(p))
        time.sleep(max(0.0, t0 + seconds - time.time()))  # the cut's length is the scenario
    finally:
        target.heal(service)
    out.healed_after = time.time() - t0
    say(f"healed after {out.healed_after:.1f}s; {sc.requests_of(p)} more requests")
    pairs += submit(target, sc.implementation, sc.requests_of(p))
    return t0


def _primary(target: Target) -> str | None:
    """The broker's leading process now; None while no process says so (an election,
    or a query that did not get through)."""
    try:
        return target.broker_primary()
    except (RuntimeError, OSError):
        return None


def fail_over(
    sc: Scenario, p: Params, target: Target, out: Outcome, say: Say
) -> tuple[float, list[str], list[str]]:
    """Steady traffic; the broker's leading process SIGKILLed for good after
    ``p.steady`` seconds; ``p.steady`` seconds more of it after the new leader. The
    kill's time, every task the API accepted, and those it accepted after the kill."""
    impl = sc.implementation
    traffic = Traffic(impl, target.url(impl), p.rate, prefix="failover")
    thread = traffic.start()
    worker = IMPLEMENTATIONS[impl].runs_the_work
    supervisor = Supervisor(target, [s for s in target.services if s.startswith(worker)])
    try:
        time.sleep(p.steady)  # the scenario's steady state, before the kill
        victim = wait_until(lambda: _primary(target), 120, "the broker's leading process", 0.5)
        out.killed = victim
        say(f"{len(traffic.accepted)} tasks accepted so far; SIGKILL {victim}, for good")
        t0 = time.time()
        target.kill(victim)
        out.stopped_after = time.time() - t0

        def promoted() -> str | None:
            found = _primary(target)
            return found if found != victim else None

        supervisor.start()
        new = wait_until(promoted, 90, "a new leader", 0.1)
        out.promoted_after = time.time() - t0
        say(f"{new} leads {out.promoted_after:.1f}s after the kill; traffic goes on")
        time.sleep(p.steady)  # as long again, after the failover
    finally:
        traffic.stop.set()
        thread.join(15)
        supervisor.stop()
    out.worker_exits = [at - t0 for at in supervisor.exits]
    if supervisor.exits:
        say(
            f"a worker exited by itself {len(supervisor.exits)} time(s); "
            "the supervisor started it again"
        )
    answered = [(at, status) for sent, at, status in traffic.answers if sent >= t0]
    # Refused (a 503) or not answered in time: every request sent after the kill
    # that the API did not accept.
    out.refused = sum(1 for _, status in answered if status != 202)
    # From the kill until the API accepted a request again after it first failed one
    # (by the answers' times: a request that waits out the failover is accepted when
    # it is answered); none failed: publishing never stopped.
    first_failed = min((at for at, status in answered if status != 202), default=t0)
    ok = [at for at, status in answered if status == 202 and at >= first_failed]
    out.publishing_again_after = min(ok) - t0 if ok else None
    after_kill = [task_id for at, ids in traffic.log if at >= t0 for task_id in ids]
    return t0, list(traffic.accepted), after_kill


class Supervisor:
    """What a restart policy does (compose's ``restart: unless-stopped``, systemd's
    ``Restart=always``): a worker that exits by itself is started again. The times it
    found one gone (``exits``: once per exit, not per attempt to start it)."""

    def __init__(self, target: Target, services: list[str], every: float = 0.2) -> None:
        self.target, self.services, self.every = target, services, every
        self.exits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        down: set[str] = set()
        while not self._stop.wait(self.every):
            for service in self.services:
                if self._stop.is_set():
                    return  # never a start after stop(): the stack is closing
                if self.target.is_up(service):
                    down.discard(service)
                    continue
                if service not in down:
                    down.add(service)
                    self.exits.append(time.time())
                try:
                    self.target.start(service, timeout=60)
                    down.discard(service)
                except (Timeout, RuntimeError, OSError) as exc:
                    logger.warning("the supervisor could not start %s: %s", service, exc)

    def stop(self) -> None:
        """Stop it, waiting out a start in progress (each is bounded: 60 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
