"""The dispatch measurement itself, with nothing but what the services have:
Celery, kombu and redis-py, and ``experiments.stats`` (standard library), so it
also runs in a one-off container of the stack's image: ``python -m
experiments.perf.dispatch_measure``, JSON out.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import redis

from experiments.stats import ratio, summary

QUEUE = "dispatch-bench"
TASK = "logs.write"
TARGET_RATIO = 3.0


class _Senders:
    """The three Celery-side variants every broker is measured with: ``send_task``
    without and with the task-sent event, and what the API does per task (the
    ledger write, then the publish: the Celery route's hand-over minus HTTP and the
    handover's account)."""

    KWARGS: ClassVar[dict[str, str]] = {"message": "item created: 노트북 (1,500,000.00)"}

    def __init__(self, broker_url: str, ledger_url: str) -> None:
        from celery_app.config import create_celery
        from shared.ledger import Ledger, connect
        from shared.models import Implementation
        from shared.settings import explicit_settings

        settings = explicit_settings(redis_url=ledger_url, celery_broker_url=broker_url)
        # As the API makes it, with the task-sent event on and off (CELERY_SEND_SENT_EVENT).
        self.celery = create_celery(settings, publisher=True)
        self.celery.conf.task_send_sent_event = True
        self.quiet = create_celery(settings, publisher=True)
        self.quiet.conf.task_send_sent_event = False
        self.ledger_client = connect(ledger_url)
        self.ledger = Ledger(self.ledger_client, Implementation.celery)

    def send(self, app: Any, task_id: str | None = None) -> object:
        """One message through ``app``, as the API publishes one."""
        task_id = task_id or str(uuid.uuid4())
        return app.send_task(TASK, kwargs=self.KWARGS, task_id=task_id, queue=QUEUE)

    def send_one(self) -> object:
        return self.send(self.celery)

    def variants(self) -> dict[str, Callable[[], object]]:
        from shared.models import TaskKind

        def schedule() -> object:
            [task_id] = self.ledger.record_new(TaskKind.log)
            return self.send(self.celery, task_id)

        return {
            "send_task, no sent-event": lambda: self.send(self.quiet),
            "send_task": self.send_one,
            "API schedule()": schedule,
        }

    def close(self) -> None:
        self.ledger_client.close()
        self.celery.close()
        self.quiet.close()


def _callables(url: str) -> tuple[dict[str, Callable[[], object]], int, Callable[[], None]]:
    senders = _Senders(url, url)
    # The payload of the raw LPUSH is as long as the message Celery actually sends.
    raw = redis.Redis.from_url(url)
    senders.send_one()
    message = raw.lindex(QUEUE, 0) or b""
    payload = b"x" * len(message)
    fns: dict[str, Callable[[], object]] = {
        "lpush": lambda: raw.lpush(QUEUE, payload),
        **senders.variants(),
    }

    def close() -> None:
        raw.delete(QUEUE)
        raw.close()
        senders.close()

    return fns, len(message), close


def _time(
    fns: dict[str, Callable[[], object]], calls: int, between: Callable[[], object]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per variant: every call's duration, and the CPU this process spent on them.

    Interleaved blocks of 100, so a noisy neighbour hits every variant alike;
    ``between`` runs after each round (emptying the bench queue)."""
    for fn in fns.values():  # connections, pools, declarations: not measured
        for _ in range(50):
            fn()
    times: dict[str, list[float]] = {v: [] for v in fns}
    cpu: dict[str, float] = dict.fromkeys(fns, 0.0)
    block = 100
    for _ in range(max(1, calls // block)):
        for name, fn in fns.items():
            c0 = time.process_time()
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            cpu[name] += time.process_time() - c0
        between()
    return times, cpu


def measure_amqp(broker_url: str, ledger_url: str, calls: int) -> dict[str, Any]:
    """The same hand-over with RabbitMQ as the broker (the ledger stays in Redis).

    The floor is a raw ``basic_publish`` (py-amqp, the client kombu uses) of a
    persistent message as long as Celery's, with publisher confirms: what Celery
    does here too (``confirm_publish``), so both wait for the broker's "got it"."""
    import amqp

    senders = _Senders(broker_url, ledger_url)
    rest = broker_url.split("://", 1)[1]
    creds, _, hostpart = rest.rpartition("@")
    user, _, password = creds.partition(":")
    host, _, vhost = hostpart.partition("/")
    raw = amqp.Connection(host, userid=user, password=password, virtual_host=vhost or "/")
    raw.connect()
    channel = raw.channel()
    channel.queue_declare(QUEUE, durable=True, auto_delete=False)
    # A message as long as the one Celery publishes (headers and JSON body together).
    senders.send_one()
    message = channel.basic_get(QUEUE, no_ack=True)
    size = len(message.body) + len(str(message.properties)) if message else 600
    payload = b"x" * size
    fns: dict[str, Callable[[], object]] = {
        # Waits for the broker's ack, as Celery's publish does with confirm_publish.
        "basic_publish": lambda: channel.basic_publish_confirm(
            amqp.Message(payload, delivery_mode=2), routing_key=QUEUE
        ),
        **senders.variants(),
    }
    try:
        times, cpu = _time(fns, calls, lambda: channel.queue_purge(QUEUE))
    finally:
        channel.queue_delete(QUEUE)
        raw.close()
        senders.close()
    stats = {name: summary(ts, scale=1e6) for name, ts in times.items()}  # microseconds
    for name in stats:
        stats[name]["client_cpu_us"] = 1e6 * cpu[name] / max(len(times[name]), 1)
    floor = stats["basic_publish"]["p50"]
    return {
        "message_bytes": size,
        "calls": calls,
        "variants": stats,
        "ratios": {name: {"p50": ratio(v["p50"], floor)} for name, v in stats.items()},
    }


def _commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def measure(url: str, calls: int) -> dict[str, Any]:
    fns, message_bytes, close = _callables(url)
    admin = redis.Redis.from_url(url)
    try:
        times, cpu = _time(fns, calls, lambda: admin.delete(QUEUE))
        # Redis commands per call, one variant at a time.
        commands: dict[str, dict[str, float]] = {}
        n = min(calls, 500)
        for name, fn in fns.items():
            before = _commandstats(admin)
            for _ in range(n):
                fn()
            after = _commandstats(admin)
            delta = {k: (after[k] - before.get(k, 0)) / n for k in after}
            # INFO itself is one command on the admin connection.
            delta["info"] = delta.get("info", 0) - 1 / n
            commands[name] = {k: round(v, 3) for k, v in delta.items() if v > 0.001}
        admin.delete(QUEUE)
        profile, top, constructions = _profile(fns["send_task"], n)
        # kombu's Redis channel builds a new redis.Redis client object for each
        # command it sends (conn_or_acquire); redis-py fills ~170 response callbacks
        # per instance. Timed on its own, since it shows up at the top of the profile.
        t = time.perf_counter()
        for _ in range(n):
            redis.Redis(connection_pool=admin.connection_pool)
        construct_us = 1e6 * (time.perf_counter() - t) / n
    finally:
        close()
        admin.close()
    stats = {name: summary(ts, scale=1e6) for name, ts in times.items()}  # microseconds
    for name in stats:
        stats[name]["client_cpu_us"] = 1e6 * cpu[name] / max(len(times[name]), 1)
        stats[name]["redis_commands"] = sum(commands[name].values())
    lpush = stats["lpush"]["p50"]
    return {
        "message_bytes": message_bytes,
        "calls": calls,
        "variants": stats,
        "commands": commands,
        "profile": profile,
        "top_functions": top,
        "redis_clients_per_send_task": constructions,
        "redis_client_construction_us": construct_us,
        "ratios": {
            name: {"p50": ratio(s["p50"], lpush), "mean": ratio(s["mean"], stats["lpush"]["mean"])}
            for name, s in stats.items()
        },
        "targets": [
            {
                "target": f"send_task p50 ≤ {TARGET_RATIO:g}× LPUSH p50",
                "measured": ratio(stats["send_task"]["p50"], lpush),
                "met": ratio(stats["send_task"]["p50"], lpush) <= TARGET_RATIO,
            }
        ],
    }


def _profile(
    fn: Callable[[], object], n: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Where ``send_task`` spends its own time (tottime): by package, the top
    functions, and how many redis.Redis objects it constructs per call."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    st = pstats.Stats(prof)
    raw_stats: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw_stats.values()) or 1.0
    groups: dict[str, float] = {}
    functions = []
    constructions = 0.0
    for (filename, line, func), (_cc, nc, tottime, _ct, _callers) in raw_stats.items():
        groups[_package(filename)] = groups.get(_package(filename), 0.0) + tottime
        short = re.sub(r".*(site-packages|python3\.\d+)/", "", filename)
        functions.append((tottime, f"{short}:{line}({func})", nc / n))
        if short == "redis/client.py" and func == "__init__":
            constructions = nc / n
    by_package = [
        {"where": k, "share": v / total, "us_per_call": 1e6 * v / n}
        for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
    ][:8]
    top = [
        {"function": name, "share": tt / total, "calls_per_send": round(calls, 1)}
        for tt, name, calls in sorted(functions, reverse=True)[:8]
    ]
    return by_package, top, constructions


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins (json, socket I/O, uuid, ...)"
    m = re.search(r"site-packages/([^/]+)/", filename)
    if m:
        return m.group(1)
    m = re.search(r"python3\.\d+/(?:([^/]+)/|([^/]+)\.py)", filename)
    if m:
        return f"stdlib {m.group(1) or m.group(2)}"
    return Path(filename).parent.name or filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.perf.dispatch_measure")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--amqp-url", default=None, help="also measure RabbitMQ as the broker")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    data = measure(args.redis_url, args.calls)
    if args.amqp_url:
        data["rabbitmq"] = measure_amqp(args.amqp_url, args.redis_url, args.calls)
    print(json.dumps(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
