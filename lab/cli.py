"""``python -m lab`` (``python -m experiments lab``, ``make lab``): the page on
http://127.0.0.1:8000, a column for each implementation it runs (``--implementations``).

Against either target: local processes it starts itself (Redis with its
append-only file on, as in compose; each implementation's declared services), or a
running ``docker compose`` project (``--target compose``, driven by
``docker compose kill/stop/start`` from here).

Safety: binds 127.0.0.1 unless told otherwise; controls only the services whose
declared controls allow it (``state.controls_of``), of the target it was given; stops
the processes it started by PID or process group when it exits (Ctrl-C and SIGTERM
included).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import socket
import tempfile
import threading
import webbrowser
from collections.abc import Iterator
from pathlib import Path

from experiments.common import (
    add_implementations_argument,
    add_target_arguments,
    say,
    where_from,
)
from harness.local import LocalStack
from harness.stacks import BROKERS, NEEDED_SERVICES
from harness.target import Target
from lab.state import Lab, LabSettings
from shared.services import (
    DEFAULT_IMPLEMENTATIONS,
    IMPLEMENTATIONS,
    Implementation,
    horizon_settings,
)
from shared.settings import explicit_settings

logger = logging.getLogger(__name__)

# The demo: a notification takes 5 s (time to kill something mid-run); a dead
# worker's message comes back 10 s after its delivery (whichever broker holds it).
DEMO = {
    "notification_delay_seconds": 5.0,
    "horizon_seconds": 10.0,  # each implementation's declared horizon (shared.services)
    "horizon_scan_seconds": 0.5,
    "beat_interval_seconds": 60.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LabSettings()
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the page's port (default 8000)")
    add_target_arguments(parser, reports=False)
    add_implementations_argument(
        parser, DEFAULT_IMPLEMENTATIONS, "the implementations the lab runs, a column each"
    )
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    parser.add_argument(
        "--fail-attempts",
        type=int,
        default=d.fail_attempts,
        metavar="N",
        help="what 'make the next notifications fail' sets NOTIFICATION_FAIL_FIRST_ATTEMPTS to "
        f"(default {d.fail_attempts})",
    )
    parser.add_argument("--poll-interval", type=float, default=d.poll_interval, metavar="S")
    local = parser.add_argument_group("local target (the lab starts every process)")
    local.add_argument(
        "--notification-delay",
        type=float,
        default=DEMO["notification_delay_seconds"],
        metavar="S",
    )
    local.add_argument(
        "--visibility-timeout",
        type=float,
        default=DEMO["horizon_seconds"],
        metavar="S",
        help="how long a dead worker's task waits in its broker before it is handed out "
        "again: each implementation's horizon setting (see docs/settings.md) "
        f"(default {DEMO['horizon_seconds']:g})",
    )
    local.add_argument(
        "--restore-interval",
        type=float,
        default=DEMO["horizon_scan_seconds"],
        metavar="S",
        help="how often that horizon is checked, where a scan checks it "
        f"(default {DEMO['horizon_scan_seconds']:g})",
    )
    local.add_argument(
        "--beat-interval", type=float, default=DEMO["beat_interval_seconds"], metavar="S"
    )
    local.add_argument("--worker-concurrency", type=int, default=2, metavar="N")
    local.add_argument(
        "--broker",
        choices=BROKERS,
        default="redis",
        help="the broker of the implementations whose needs name one (a rabbitmq-server "
        "of its own: Debian's package)",
    )


def build_target(args: argparse.Namespace, workdir: Path) -> Target:
    where = where_from(args)
    if where.kind == "compose":
        return where.attach()
    settings = explicit_settings(
        notification_delay_seconds=args.notification_delay,
        **horizon_settings(args.visibility_timeout, args.restore_interval),
        beat_interval_seconds=args.beat_interval,
    )
    # AOF on, as in compose: restarting Redis keeps the queue and the ledger.
    return LocalStack(
        workdir,
        settings,
        appendonly=True,
        worker_concurrency=args.worker_concurrency,
        broker=args.broker,
    )


def services_to_start(
    implementations: tuple[Implementation, ...], broker_service: str
) -> list[str]:
    """What a local lab starts: Redis first (every ledger), then each implementation's
    declared needs ("broker": the stack's broker service) and the service that sends
    its periodic task, each once."""
    wanted = ["redis"]
    for impl in implementations:
        periodic = IMPLEMENTATIONS[impl].periodic
        for name in (*NEEDED_SERVICES[impl], *([periodic] if periodic else [])):
            wanted.append(broker_service if name == "broker" else name)
    return list(dict.fromkeys(wanted))


def missing_apis(target: Target, implementations: tuple[Implementation, ...]) -> list[str]:
    """The chosen implementations whose API the target does not reach (a compose
    project started without their profile)."""
    missing = []
    for impl in implementations:
        try:
            target.url(impl.value)
        except KeyError:
            missing.append(f"{impl.value} ({IMPLEMENTATIONS[impl].api})")
    return missing


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    # SIGTERM's default ends the process on the spot, skipping the cleanup that
    # stops the children; raise SystemExit instead (uvicorn re-raises the signal
    # it caught once it has shut down).
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from lab.app import create_app

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the lab binds %s: anyone who reaches it can kill processes", args.host)
    try:  # fail before starting five processes, not after
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        say(f"lab: cannot serve on {args.host}:{args.port}: {exc} (try --port)")
        return 2
    made_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="lab-")) if made_workdir else args.workdir
    with _sigterm_as_exit():
        target = build_target(args, workdir)
        try:
            local = target.name == "local"
            implementations: tuple[Implementation, ...] = args.implementations
            if local:
                names = ",".join(implementations)
                say(f"lab: starting {names} as local processes in {workdir} ...")
                assert isinstance(target, LocalStack)
                target.start_many(services_to_start(implementations, target.broker_service), 90)
            elif missing := missing_apis(target, implementations):
                say(
                    f"lab: the compose project publishes no API of {', '.join(missing)}: "
                    "start it with that implementation's profile (docker compose --profile "
                    "NAME up), or leave it out of --implementations"
                )
                return 2
            lab = Lab(
                target,
                LabSettings(
                    implementations=implementations,
                    fail_attempts=args.fail_attempts,
                    poll_interval=args.poll_interval,
                ),
            )
            url = f"http://{args.host}:{args.port}"
            stops = "the lab and what it started" if local else "the lab; the stack keeps running"
            say(f"lab: open {url}  (Ctrl-C stops {stops})")
            config = uvicorn.Config(
                create_app(lab),
                host=args.host,
                port=args.port,
                log_level="warning",
                # Open event streams would hold a graceful shutdown forever.
                timeout_graceful_shutdown=2,
            )
            if args.open:
                threading.Timer(1.0, webbrowser.open, args=(url,)).start()
            uvicorn.Server(config).run()
        except KeyboardInterrupt:
            pass
        finally:
            say("lab: stopping ...")
            target.close()
            if made_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0
