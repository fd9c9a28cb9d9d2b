"""The latency report: its table, notes and chart, drawn from ``reports/latency.json``
(``python -m experiments latency`` measures it). The modes and targets are the
report's vocabulary: the experiment imports them from here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table, targets_table
from shared.services import IMPLEMENTATIONS, Delivery, Implementation

# What handing the task over may cost the response, p50 against the same app's
# bare: held in process memory, next to nothing; handed to a broker, its round trip.
TARGETS: dict[Delivery, float] = {Delivery.in_process: 1.10, Delivery.broker: 1.5}
# The instrument must not distort what it measures: each implementation with its
# ledger at most this much slower than without it, at c = 1.
LEDGER_TARGET = 1.10

# Each implementation's modes: its app's bare route (the baseline), the route, and
# the route on a second API process with LEDGER_ENABLED=false.
BARE, ROUTE, NO_LEDGER = "bare", "route", "no ledger"
VARIANTS = (BARE, ROUTE, NO_LEDGER)
VARIANT_LABELS = {
    BARE: "bare (no task)",
    ROUTE: "the route",
    NO_LEDGER: "the route, no ledger",
}
# The work done before answering, on the first app that serves it.
INLINE = "inline"
RATIOS = ("route/bare p50", "route/bare p99", "no ledger/bare p50", "route/no ledger p50")


def _title(impl: str) -> str:
    return IMPLEMENTATIONS[Implementation(impl)].title


def render(data: dict[str, Any]) -> str:
    rows = []
    inline = data["inline"]
    levels = list(data["config"]["intervals"])
    for level in levels:
        for entry in data["implementations"].values():
            for variant, s in entry["levels"].get(level, {}).items():
                rows.append(
                    [
                        level,
                        entry["title"],
                        VARIANT_LABELS[variant],
                        s["n"],
                        s["p50"],
                        s["p95"],
                        s["p99"],
                        s["errors"],
                    ]
                )
        if inline is not None and level in inline["levels"]:
            s = inline["levels"][level]
            label = "inline (the work before answering)"
            rows.append(
                [
                    level,
                    _title(inline["implementation"]),
                    label,
                    s["n"],
                    s["p50"],
                    s["p95"],
                    s["p99"],
                    s["errors"],
                ]
            )
    headers = [
        "concurrency",
        "implementation",
        "mode",
        "requests",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
    ]
    table = markdown_table(headers, rows)
    ratio_rows = [
        [level, entry["title"], *(entry["ratios"][level][k] for k in RATIOS)]
        for level in levels
        for entry in data["implementations"].values()
        if level in entry["ratios"]
    ]
    table += "\n\n" + markdown_table(["concurrency", "implementation", *RATIOS], ratio_rows)
    if inline is not None:
        table += "\n\n" + markdown_table(
            ["concurrency", "inline p50 / delay"],
            [[lv, r] for lv, r in inline["p50/delay"].items()],
        )
    table += "\n\n" + targets_table(data["targets"])
    cfg = data["config"]
    cpu = [
        s["client_cpu_ms_per_request"]
        for entry in data["implementations"].values()
        for st in entry["levels"].values()
        for s in st.values()
    ]
    notes = (
        f"NOTIFICATION_DELAY_SECONDS={cfg['delay']:g}; bursts of c simultaneous requests "
        f"every {', '.join(f'{v * 1000:.0f} ms (c={k})' for k, v in cfg['intervals'].items())}; "
        f"{cfg['rounds']} interleaved rounds. *route/bare*: the route's p50 (p99) over its own "
        "app's bare route; *no ledger*: the same route on a second API process with "
        "LEDGER_ENABLED=false. The load client (asyncio + httpx, keep-alive) "
        f"runs on the same {data['conditions']['cpus']} CPUs as the servers and spent "
        f"{min(cpu):.2f}–{max(cpu):.2f} ms of CPU per request; ratios against `bare` "
        "cancel most of that out. Load average at the start: "
        f"{data['conditions']['loadavg_1m']}."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    impls = data["implementations"]
    inline = data["inline"]
    fig, (ax1, ax2) = charts.figure(1, 2, size=(7 + 2 * len(impls), 4.8))
    levels = list(data["config"]["intervals"])
    shade = {BARE: 0.7, ROUTE: 0.0, NO_LEDGER: 0.45}
    series: dict[str, list[float]] = {}
    colors: dict[str, str] = {}
    for impl, entry in impls.items():
        for variant in VARIANTS:
            if variant in entry["levels"][levels[0]]:
                name = f"{impl} {variant}"
                series[name] = [entry["levels"][lv][variant]["p50"] for lv in levels]
                colors[name] = base.color(impl, lighter=shade[variant])
    if inline is not None:
        series[INLINE] = [inline["levels"][lv]["p50"] for lv in levels]
        colors[INLINE] = charts.COLORS["inline"]
    charts.grouped_bars(
        ax1,
        [f"c={lv}" for lv in levels],
        series,
        ylabel="p50 response time, ms (log)",
        colors=colors,
        log=True,
        fmt="{:.1f}",
        annotate=len(series) <= 8,
    )
    ax1.legend(fontsize=7, ncol=2)
    ax1.set_title("p50 response time per mode")
    ratios: dict[str, list[float]] = {}
    ratio_colors: dict[str, str] = {}
    for impl, entry in impls.items():
        for key, lighter, label in (
            ("route/bare p50", 0.0, f"{entry['title']} / bare"),
            ("no ledger/bare p50", 0.45, f"{entry['title']}, no ledger / bare"),
        ):
            ratios[label] = [entry["ratios"][lv][key] for lv in levels]
            ratio_colors[label] = base.color(impl, lighter=lighter)
    charts.grouped_bars(
        ax2,
        [f"c={lv}" for lv in levels],
        ratios,
        ylabel="p50 ratio to the same app's bare endpoint",
        colors=ratio_colors,
        fmt="{:.2f}×",
        annotate=len(ratios) <= 6,
    )
    values = [v for vs in ratios.values() for v in vs if v == v]
    limits = {TARGETS[IMPLEMENTATIONS[Implementation(i)].delivery] for i in impls}
    ax2.set_ylim(0, max([*values, *limits, 2.0]) * 1.35)  # room for the legend
    for delivery, limit in TARGETS.items():
        names = [
            e["title"]
            for i, e in impls.items()
            if IMPLEMENTATIONS[Implementation(i)].delivery == delivery
        ]
        if names:
            charts.target_line(ax2, limit, f"{', '.join(names)} target {limit:.2f}×")
    ax2.set_title("the price of scheduling the task (p50 ratio)")
    charts.save(fig, path, data, extra=f"delay {data['config']['delay']:g}s")
