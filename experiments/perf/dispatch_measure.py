"""The dispatch measurement itself: each implementation's broker publish against
the cheapest write of a message as long as its own, with nothing but what the
services have (the implementation's own package, redis-py, and ``experiments.stats``:
standard library), so it also runs in a one-off container of the stack's image:
``python -m experiments.perf.dispatch_measure``, JSON out.

What is timed is the implementation's to say: its package's ``dispatch_bench``
module (found from the declaration, ``<package>.dispatch_bench``) makes a bench per
broker (``redis_bench(url)``, and ``amqp_bench(broker_url, ledger_url)`` where it
publishes to RabbitMQ too) whose ``variants()`` are the calls, the floor first, and
names the variant held to the target and profiled (``PROFILED``) and the Redis
client class it builds (``CLIENT_CLASS``); ``describe(entry)`` words where that
call's CPU goes. Everything else is measured here the same way for every one.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import importlib.util
import inspect
import json
import pstats
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import redis

from experiments.stats import ratio, summary
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

TARGET_RATIO = 3.0
BENCH_MODULE = "{}.dispatch_bench"


class Bench(Protocol):
    """One implementation's calls on one broker (its package's ``dispatch_bench``)."""

    floor: str  # the raw write's variant
    profiled: str  # the library's publish: held to the target, profiled
    message_bytes: int

    def variants(self) -> dict[str, Callable[[], object]]:
        """Every variant's call, the floor first."""
        ...

    def between(self) -> None:
        """Empty what the calls filled (after each round)."""
        ...

    def close(self) -> None: ...


def bench_module(impl: Implementation | str) -> ModuleType | None:
    """The implementation's ``dispatch_bench`` module; None: it declares none."""
    name = BENCH_MODULE.format(IMPLEMENTATIONS[Implementation(impl)].package)
    if importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


def publishers() -> tuple[Implementation, ...]:
    """The declared implementations that hand their tasks to a broker and declare a bench."""
    return tuple(
        impl
        for impl, spec in IMPLEMENTATIONS.items()
        if spec.delivery == Delivery.broker and bench_module(impl) is not None
    )


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


def on_amqp(impl: Implementation | str) -> bool:
    """Does the implementation's bench publish to RabbitMQ too?"""
    return hasattr(bench_module(impl), "amqp_bench")


def measure_amqp(
    impl: Implementation | str, broker_url: str, ledger_url: str, calls: int
) -> dict[str, Any] | None:
    """The same hand-over with RabbitMQ as the broker (the ledger stays in Redis);
    None: the implementation declares no bench there."""
    module = bench_module(impl)
    if module is None or not on_amqp(impl):
        return None
    bench: Bench = module.amqp_bench(broker_url, ledger_url)
    try:
        fns = bench.variants()
        times, cpu = _time(fns, calls, bench.between)
    finally:
        bench.close()
    stats = {name: summary(ts, scale=1e6) for name, ts in times.items()}  # microseconds
    for name in stats:
        stats[name]["client_cpu_us"] = 1e6 * cpu[name] / max(len(times[name]), 1)
    floor = stats[bench.floor]["p50"]
    return {
        "message_bytes": bench.message_bytes,
        "calls": calls,
        "variants": stats,
        "ratios": {name: {"p50": ratio(v["p50"], floor)} for name, v in stats.items()},
    }


def _commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


def _client_class(reference: str) -> type:
    module, _, name = reference.rpartition(".")
    found: type = getattr(importlib.import_module(module), name)
    return found


def _construction_us(cls: type, url: str, n: int) -> float:
    """What building one client object of ``cls`` on an existing pool costs, alone."""
    pool = cls.from_url(url).connection_pool  # type: ignore[attr-defined]
    t = time.perf_counter()
    for _ in range(n):
        cls(connection_pool=pool)
    return 1e6 * (time.perf_counter() - t) / n


def measure(impl: Implementation | str, url: str, calls: int) -> dict[str, Any]:
    """One implementation's publish on Redis (broker and ledger on ``url``)."""
    impl = Implementation(impl)
    module = bench_module(impl)
    if module is None:
        raise ValueError(f"{impl}: its package declares no dispatch bench")
    bench: Bench = module.redis_bench(url)
    client_class = _client_class(module.CLIENT_CLASS)
    admin = redis.Redis.from_url(url)
    try:
        fns = bench.variants()
        times, cpu = _time(fns, calls, bench.between)
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
        bench.between()
        profile, top, constructions = _profile(fns[bench.profiled], n, client_class)
        # A client library may build a new client object per command it sends (its
        # bench's CLIENT_CLASS); redis-py fills ~170 response callbacks per instance.
        # Timed on its own: it shows up at the top of a profile.
        construct_us = _construction_us(client_class, url, n)
    finally:
        bench.close()
        admin.close()
    stats = {name: summary(ts, scale=1e6) for name, ts in times.items()}  # microseconds
    for name in stats:
        stats[name]["client_cpu_us"] = 1e6 * cpu[name] / max(len(times[name]), 1)
        stats[name]["redis_commands"] = sum(commands[name].values())
    floor = stats[bench.floor]
    measured = ratio(stats[bench.profiled]["p50"], floor["p50"])
    return {
        "title": IMPLEMENTATIONS[impl].title,
        "floor": bench.floor,
        "profiled": bench.profiled,
        "message_bytes": bench.message_bytes,
        "calls": calls,
        "variants": stats,
        "commands": commands,
        "profile": profile,
        "top_functions": top,
        "redis_clients_per_call": constructions,
        "redis_client_construction_us": construct_us,
        "ratios": {
            name: {"p50": ratio(s["p50"], floor["p50"]), "mean": ratio(s["mean"], floor["mean"])}
            for name, s in stats.items()
        },
        "targets": [
            {
                "target": f"{bench.profiled} p50 ≤ {TARGET_RATIO:g}× {bench.floor.upper()} p50",
                "measured": measured,
                "met": measured <= TARGET_RATIO,
            }
        ],
    }


def _profile(
    fn: Callable[[], object], n: int, client_class: type
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Where ``fn`` spends its own time (tottime): by package, the top functions, and
    how many ``client_class`` objects it constructs per call."""
    # The constructor itself (under its decorators): its file holds other classes'
    # ``__init__`` too.
    client_file = client_class.__module__.replace(".", "/") + ".py"
    client_line = inspect.unwrap(client_class.__init__).__code__.co_firstlineno  # type: ignore[misc]
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
        if (short, line, func) == (client_file, client_line, "__init__"):
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
    parser.add_argument(
        "--implementations",
        default=",".join(publishers()),
        help="comma-separated (default: every one that publishes to a broker)",
    )
    args = parser.parse_args(argv)
    found: dict[str, dict[str, Any]] = {}
    for name in filter(None, (n.strip() for n in args.implementations.split(","))):
        entry = measure(name, args.redis_url, args.calls)
        if args.amqp_url and (
            rabbit := measure_amqp(name, args.amqp_url, args.redis_url, args.calls)
        ):
            entry["rabbitmq"] = rabbit
        found[Implementation(name).value] = entry
    # The data is this command's output (the caller reads its last line), not a log.
    sys.stdout.write(json.dumps({"implementations": found}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
