"""The throughput report (``python -m experiments throughput``): its markdown and its
chart.

``results`` and ``drain`` are keyed by phase: an implementation's value alone (it
runs as this project sets it, and has no stock settings), or followed by its variant,
``reliable`` (this project's settings) or ``stock`` (its library's, where this project
departs from them). A report that predates the ``implementation``/``variant`` fields
and the ``stock``/``worker_pools`` config is read from its keys and the declaration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table, targets_table
from shared.services import IMPLEMENTATIONS, Implementation, stock_settings

RELIABLE, STOCK = "reliable", "stock"


def phase_of(key: str, row: Mapping[str, Any]) -> tuple[str, str]:
    """A phase's implementation (its value) and variant ("" for none)."""
    if "implementation" in row:
        return str(row["implementation"]), str(row.get("variant", ""))
    impl, _, variant = key.partition(" ")
    return impl, variant


def title_of(impl: str) -> str:
    """A measured implementation's title (one no longer declared: its value)."""
    return IMPLEMENTATIONS[Implementation(impl)].title if impl in IMPLEMENTATIONS else impl


def _implementations(
    rows: Mapping[str, Mapping[str, Any]], variant: str | None = None
) -> list[str]:
    found = [phase_of(k, r) for k, r in rows.items()]
    return list(dict.fromkeys(i for i, v in found if variant is None or v == variant))


def setting_value(value: Any) -> str:
    """A setting as its environment variable takes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _stock_text(stock: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        ", ".join(f"{name.upper()}={setting_value(v)}" for name, v in settings.items())
        + f" ({title_of(impl)}'s defaults)"
        for impl, settings in stock.items()
    )


def _workers_text(workers: Iterable[str], pools: Mapping[str, str | None], n: int) -> str:
    parts = []
    for impl in workers:
        pool = pools.get(impl)
        parts.append(f"{title_of(impl)} worker: {f'{pool} pool, ' if pool else ''}concurrency {n}")
    return "; ".join(parts)


def notes(data: dict[str, Any]) -> str:
    cfg = data["config"]
    workers = _implementations(data["drain"]) or [
        i for i in _implementations(data["results"]) if i in IMPLEMENTATIONS and base.works_apart(i)
    ]
    pools = cfg.get("worker_pools") or {i: cfg.get("worker_pool") for i in workers}
    stock_impls = _implementations(data["results"], STOCK)
    stock = cfg.get("stock") or {i: stock_settings(i) for i in stock_impls if i in IMPLEMENTATIONS}
    eventful = [i for i in workers if i in IMPLEMENTATIONS and base.sends_events(i)]
    events = ""
    if eventful:
        who = "" if eventful == workers else f"{', '.join(map(title_of, eventful))}: "
        events = f" ({who}events on)"
    text = (
        f"{cfg['tasks']} tasks per measurement, {cfg['http_concurrency']} HTTP clients "
        f"(closed loop)"
    )
    if workers:
        text += f", {_workers_text(workers, pools, cfg['worker_concurrency'])}"
    if stock:
        text += f"; 'stock' = {_stock_text(stock)}, everything else as the project sets it{events}"
    return (
        f"{text}. Client, API, Redis and worker share {data['conditions']['cpus']} CPUs; "
        f"load average at the start: {data['conditions']['loadavg_1m']}."
    )


def render(data: dict[str, Any]) -> str:
    rows = [
        [phase, r["finished"], r["dispatch_s"], r["span_s"], r["tasks_per_s"], r["worker_span_s"]]
        for phase, r in data["results"].items()
    ]
    table = markdown_table(
        [
            "side",
            "tasks done",
            "dispatch s",
            "first request → last done, s",
            "tasks/s",
            "first start → last done, s",
        ],
        rows,
    )
    if data["drain"]:
        table += "\n\nWorker alone (queued first, then the worker started):\n\n"
        table += markdown_table(
            ["side", "tasks done", "first start → last done, s", "tasks/s"],
            [[p, r["finished"], r["span_s"], r["tasks_per_s"]] for p, r in data["drain"].items()],
        )
    table += "\n\n" + markdown_table(
        ["ratio", "value"], [[k, v] for k, v in data["ratios"].items()]
    )
    if data["targets"]:
        table += "\n\n" + targets_table(data["targets"])
    return f"{table}\n\n{notes(data)}"


def _color(key: str, row: Mapping[str, Any]) -> str:
    impl, variant = phase_of(key, row)
    if impl not in IMPLEMENTATIONS:
        return "#777777"
    return base.color(impl, lighter=0.5 if variant == STOCK else 0.0)


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(11, 4.5))
    results = data["results"]
    phases = list(results)
    charts.grouped_bars(
        ax1,
        phases,
        {"tasks/s": [results[p]["tasks_per_s"] for p in phases]},
        ylabel="tasks per second (first request → last done)",
        fmt="{:.0f}",
        group_colors=[_color(p, results[p]) for p in phases],
    )
    ax1.set_title(f"{data['config']['tasks']} tasks through the API")
    drain = data["drain"]
    drains = list(drain)
    if drains:
        charts.grouped_bars(
            ax2,
            drains,
            {"tasks/s": [drain[p]["tasks_per_s"] for p in drains]},
            ylabel="tasks per second (worker alone)",
            fmt="{:.0f}",
            group_colors=[_color(p, drain[p]) for p in drains],
        )
        ax2.set_title(
            f"workers draining a queue (concurrency {data['config']['worker_concurrency']})"
        )
    else:
        ax2.set_axis_off()
    charts.save(fig, path, data)
