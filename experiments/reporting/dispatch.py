"""The dispatch report (``python -m experiments dispatch``): its markdown and its chart.

A report holds one entry per implementation that publishes to a broker
(``implementations``): its variants (the floor first), the Redis commands each
sends, a profile of its publish, its target, and the same on RabbitMQ where it
was measured there. What its publish's CPU goes on is the implementation's own
package's to word (``<package>.dispatch_bench.describe``). A report written before
the experiment iterated over the declaration holds one implementation's entry at
its top level: it renders as the declared implementation whose bench profiles a
variant it has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.perf.dispatch_measure import TARGET_RATIO, bench_module, publishers
from experiments.reporting.tables import markdown_table, targets_table


def entries(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each measured implementation's entry, by its value."""
    if "implementations" in data:
        found: dict[str, dict[str, Any]] = data["implementations"]
        return found
    variants = list(data["variants"])
    for impl in publishers():
        module = bench_module(impl)
        if module is not None and module.PROFILED in variants:
            entry = {
                **data,
                "floor": variants[0],
                "profiled": module.PROFILED,
                "redis_clients_per_call": data["redis_clients_per_send_task"],
            }
            return {impl.value: entry}
    raise ValueError(f"a dispatch report whose variants no bench declares: {variants}")


def _describe(impl: str, entry: dict[str, Any]) -> str:
    module = bench_module(impl)
    text: str = module.describe(entry) if module is not None else ""
    return text


def _section(impl: str, entry: dict[str, Any]) -> str:
    floor, profiled = entry["floor"], entry["profiled"]
    rows = [
        [
            name,
            s["p50"],
            s["p95"],
            s["p99"],
            s["client_cpu_us"],
            entry["ratios"][name]["p50"],
            ", ".join(f"{k} {v:g}" for k, v in entry["commands"][name].items()),
        ]
        for name, s in entry["variants"].items()
    ]
    table = markdown_table(
        [
            "variant",
            "p50 µs",
            "p95 µs",
            "p99 µs",
            "client CPU µs",
            f"p50 / {floor.upper()}",
            "Redis commands per call",
        ],
        rows,
    )
    table += f"\n\nWhere `{profiled}`'s own time goes (cProfile, grouped by package):\n\n"
    table += markdown_table(
        ["where", "share", "µs per call"],
        [[p["where"], f"{100 * p['share']:.0f} %", p["us_per_call"]] for p in entry["profile"]],
    )
    table += "\n\nIts hottest functions (own time):\n\n" + markdown_table(
        ["function", "share", f"calls per {profiled}"],
        [
            [f"`{t['function']}`", f"{100 * t['share']:.0f} %", t["calls_per_send"]]
            for t in entry["top_functions"]
        ],
    )
    table += "\n\n" + targets_table(entry["targets"])
    rabbit = entry.get("rabbitmq")
    if rabbit:
        rabbit_floor = next(iter(rabbit["variants"]))
        table += (
            "\n\nThe same hand-over with **RabbitMQ** as the broker (publisher confirms; the "
            f"ledger stays in Redis), against a raw `{rabbit_floor}` of a persistent "
            f"{rabbit['message_bytes']}-byte message with confirms:\n\n"
        )
        table += markdown_table(
            ["variant", "p50 µs", "p95 µs", "p99 µs", "client CPU µs", f"p50 / {rabbit_floor}"],
            [
                [
                    name,
                    v["p50"],
                    v["p95"],
                    v["p99"],
                    v["client_cpu_us"],
                    rabbit["ratios"][name]["p50"],
                ]
                for name, v in rabbit["variants"].items()
            ],
        )
        redis_send = entry["variants"][profiled]["p50"]
        rabbit_send = rabbit["variants"][profiled]["p50"]
        table += (
            f"\n\n`{profiled}` p50: {redis_send:.0f} µs on Redis, {rabbit_send:.0f} µs on "
            f"RabbitMQ ({rabbit_send / redis_send:.2f}×)."
        )
    st = entry["variants"][profiled]
    rtt = entry["variants"][floor]["p50"]
    notes = (
        f"{entry['calls']} timed calls per variant (interleaved blocks of 100), a "
        f"{entry['message_bytes']}-byte message. One {floor.upper()} round trip: {rtt:.0f} µs "
        f"at p50; {profiled} makes {st['redis_commands']:g} Redis calls and spends "
        f"{st['client_cpu_us']:.0f} µs of CPU in this process per call: "
        f"{_describe(impl, entry)}"
    )
    return f"{table}\n\n{notes}"


def render(data: dict[str, Any]) -> str:
    found = entries(data)
    several = len(found) > 1
    sections = [
        (f"**{e.get('title', impl)}**\n\n" if several else "") + _section(impl, e)
        for impl, e in found.items()
    ]
    return "\n\n".join(sections) + (
        f" Load average at the start: {data['conditions']['loadavg_1m']}."
    )


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    found = entries(data)
    fig, axes = charts.figure(len(found), 2, size=(12, 4.5 * len(found)))
    for row, (impl, entry) in enumerate(found.items()):
        ax1, ax2 = axes[2 * row], axes[2 * row + 1]
        who = f"{entry.get('title', impl)}: " if len(found) > 1 else ""
        floor, profiled = entry["floor"], entry["profiled"]
        variants = entry["variants"]
        names = list(variants)
        rtt = variants[floor]["p50"]
        wire = [min(variants[n]["redis_commands"] * rtt, variants[n]["p50"]) for n in names]
        # New client objects: at most one per Redis command a call sends (none for the floor).
        per = entry["redis_client_construction_us"]
        build = [
            0.0
            if n == floor
            else min(sum(entry["commands"][n].values()), entry["redis_clients_per_call"]) * per
            for n in names
        ]
        rest = [
            max(variants[n]["p50"] - w - b, 0.0) for n, w, b in zip(names, wire, build, strict=True)
        ]
        ys = range(len(names))
        left2 = [w + b for w, b in zip(wire, build, strict=True)]
        ax1.barh(
            ys, wire, color="#9ecae1", label=f"Redis round trips (commands × {floor.upper()} p50)"
        )
        ax1.barh(ys, build, left=wire, color="#fdd0a2", label="new Redis client objects")
        ax1.barh(ys, rest, left=left2, color="#fd8d3c", label="other Python in the caller")
        for y, n in zip(ys, names, strict=True):
            p50 = variants[n]["p50"]
            ax1.annotate(
                f"{p50:.0f} µs ({entry['ratios'][n]['p50']:.1f}×)",
                (p50, y),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
            )
        ax1.axvline(rtt * TARGET_RATIO, color="#d62728", linestyle="--", linewidth=1)
        ax1.annotate(
            f"target {TARGET_RATIO:g}× {floor.upper()}",
            (rtt * TARGET_RATIO, len(names) - 0.5),
            color="#d62728",
            fontsize=7,
        )
        ax1.set_yticks(list(ys), names)
        ax1.invert_yaxis()
        ax1.set_xlabel("p50 per call, µs")
        ax1.legend(fontsize=7, loc="upper right")
        ax1.set_title(f"{who}one hand-over, where the time goes")
        prof = entry["profile"]
        ax2.barh(range(len(prof)), [p["us_per_call"] for p in prof], color="#fd8d3c")
        ax2.set_yticks(range(len(prof)), [p["where"] for p in prof], fontsize=8)
        ax2.invert_yaxis()
        ax2.set_xlabel(f"µs per {profiled}, cProfile own time (profiling inflates it)")
        ax2.set_title(f"{who}{profiled}'s own time by package")
    charts.save(fig, path, data)
