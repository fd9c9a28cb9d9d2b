"""The scale report (``python -m experiments scale``): its markdown and its chart.

``runs`` is keyed by implementation (its value), then by the number of processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.perf import base
from experiments.reporting.tables import markdown_table
from shared.services import IMPLEMENTATIONS, Delivery, Implementation, delivery_of


def title_of(impl: str) -> str:
    """A measured implementation's title (one no longer declared: its value)."""
    return IMPLEMENTATIONS[Implementation(impl)].title if impl in IMPLEMENTATIONS else impl


def label_of(impl: str) -> str:
    """An implementation with what its processes are."""
    if impl not in IMPLEMENTATIONS:
        return impl
    return f"{title_of(impl)} ({base.unit_of(impl)})"


def _at_once(impl: str, runs: dict[str, Any]) -> str:
    """How many notifications one of its processes runs at once, in words."""
    title = title_of(impl)
    if impl not in IMPLEMENTATIONS:
        return f"{title} runs {', '.join(str(r['at_once']) for r in runs.values())} at once"
    if delivery_of(impl) == Delivery.in_process:
        first = next(iter(runs.values()))
        tokens = first["at_once"] // first["processes"]
        return f"{title} runs up to {tokens} sync tasks per process in AnyIO's thread pool"
    if base.one_task_per_process(impl):
        return f"{title}'s {base.pool_of(impl)} pool runs one task per process"
    return f"{title}'s worker runs as many tasks at once as its concurrency"


def _alternatives(impls: list[str]) -> str:
    """What each worker that runs one task per process could run instead."""
    return "".join(
        f"; {title_of(i)}'s `--pool threads` or `gevent` would run I/O-bound tasks many at "
        "once per process"
        for i in impls
        if i in IMPLEMENTATIONS and base.one_task_per_process(i)
    )


def render(data: dict[str, Any]) -> str:
    rows = [
        [
            label_of(side),
            r["processes"],
            r["at_once"],
            f"{r['done']}/{r['requests']}",
            r["accepted_after_s"],
            r["span_s"],
            r["per_s"],
            r["speedup"],
            r["ideal_span_s"],
        ]
        for side, by_count in data["runs"].items()
        for r in by_count.values()
    ]
    table = markdown_table(
        [
            "side",
            "processes",
            "notifications at once",
            "done",
            "all accepted after, s",
            "first request → last done, s",
            "notifications/s",
            "× one process",
            "floor (sleeps only), s",
        ],
        rows,
    )
    c = data["config"]
    sides = [side for side, runs in data["runs"].items() if runs]
    at_once = "; ".join(_at_once(side, data["runs"][side]) for side in sides)
    notes = (
        f"{c['requests']} `POST /send-notification/...` per run, a notification being a "
        f"{c['delay']:g} s sleep (I/O-bound), sent by {c['http_concurrency']} clients in a "
        "closed loop; each run on a fresh stack. When *all accepted after* is close to the "
        "span, the API's intake (and this client, on the same CPUs) is the bound, not the "
        f"processes that run the tasks. *at once*: {at_once}. The comparison is each side "
        f"with its defaults{_alternatives(sides)}. {data['conditions']['cpus']} CPUs for "
        "everything."
    )
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax,) = charts.figure(1, 1, size=(8, 4.5))
    for side, runs in data["runs"].items():
        if not runs:
            continue
        xs = [r["processes"] for r in runs.values()]
        ys = [r["per_s"] for r in runs.values()]
        color = base.color(side) if side in IMPLEMENTATIONS else "#777777"
        ax.plot(xs, ys, marker="o", color=color, label=label_of(side))
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.0f}", (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
    ax.set_xlabel("processes (or a worker's concurrency)")
    ax.set_xticks(data["config"]["processes"])
    ax.set_ylabel("notifications done per second (log)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"I/O-bound notifications ({data['config']['delay']:g} s each) vs processes")
    charts.save(fig, path, data)
