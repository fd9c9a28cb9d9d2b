"""``make dev`` (``python -m harness.dev``, or ``python -m experiments dev``): the
services as local processes.

The same services and ports as ``docker-compose.yml``, without Docker: a
redis-server of its own when nothing answers at ``REDIS_URL`` (only for a local
URL), then the Procfile's Python services of the chapter's two implementations
(``--implementations`` picks others, by their declared names) under honcho. Ctrl-C (SIGINT) or
SIGTERM stops them all: honcho sends SIGTERM to each service's process group and
SIGKILL five seconds later; the redis-server goes last.

Settings: the environment wins over ``.env``, which wins over ``.env.example``
(its values are the demo values compose uses). Runtime files (Redis's AOF,
beat's schedule, redis.log) go to ``--state-dir``, which ignores itself in git.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from experiments.common import add_implementations_argument
from harness.procs import REPO_ROOT, Proc
from harness.servers import RedisServer
from shared.services import (
    DEFAULT_IMPLEMENTATIONS,
    IMPLEMENTATIONS,
    Probe,
    implementation_of,
    service,
)
from shared.settings import Settings, redact


def urls(processes: Mapping[str, object], env: Mapping[str, str]) -> str:
    """Where each process that answers HTTP is: an API's /docs, a UI's page."""
    apis = {spec.api: spec.title for spec in IMPLEMENTATIONS.values()}
    out = []
    for name in processes:
        s = service(name)
        if s.probe != Probe.http or s.port_variable is None:
            continue
        port = env.get(s.port_variable, str(s.port))
        page = "docs" if name in apis else ""
        out.append(f"http://127.0.0.1:{port}/{page} ({apis.get(name, name)})")
    return "  ".join(out)


LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
# What the services themselves fall back to when REDIS_URL is unset.
DEFAULT_REDIS_URL: str = Settings.model_fields["redis_url"].default


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--procfile", type=Path, default=REPO_ROOT / "Procfile")
    add_implementations_argument(
        parser, DEFAULT_IMPLEMENTATIONS, "which implementations' Procfile lines to run"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="runtime files: Redis's AOF, beat's schedule (default: $DEV_STATE_DIR or .dev)",
    )


def service_env(state_dir: Path) -> dict[str, str]:
    """Every service's environment: .env.example < .env < the process environment."""
    from honcho.environ import parse

    env: dict[str, str] = {}
    for name in (".env.example", ".env"):
        path = REPO_ROOT / name
        if path.is_file():
            env.update(parse(path.read_text(encoding="utf-8")))
    env.update(os.environ)
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env["DEV_STATE_DIR"] = str(state_dir)
    # The venv's uvicorn and celery first, whichever way this was started.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"  # through honcho's pipes, line by line
    return env


def redis_server_for(url: str, state_dir: Path) -> RedisServer:
    """The redis-server to start for ``url`` (local only), AOF on as in compose."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "") not in LOCAL_HOSTS:
        raise SystemExit(
            f"nothing answers at REDIS_URL={redact(url)} and it is not local: start it first"
        )
    return RedisServer(
        parts.port or 6379,
        state_dir,
        appendonly=True,
        appendfsync="everysec",
        password=parts.password,
    )


def start_redis(server: RedisServer, state_dir: Path) -> Proc:
    """Start it in a process group of its own (Ctrl-C reaches honcho, not Redis,
    which stops after the services); wait for PING."""
    try:
        argv = server.argv()
    except RuntimeError as exc:
        raise SystemExit(
            f"nothing answers at REDIS_URL and {exc} (or brew install redis), "
            "or point REDIS_URL at one"
        ) from exc
    proc = Proc("redis", argv, dict(os.environ), state_dir / "redis.log").start()
    try:
        server.wait_ready(proc, 15)
    except Exception as exc:
        proc.stop()
        raise SystemExit(f"redis-server did not answer PING: see {state_dir}/redis.log") from exc
    print(f"dev: started redis-server on 127.0.0.1:{server.port} (pid={proc.pid})", flush=True)
    return proc


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    # Until honcho takes over the signals, SIGTERM unwinds like Ctrl-C (Redis is stopped).
    signal.signal(signal.SIGTERM, _interrupt)
    state_dir = args.state_dir or Path(os.environ.get("DEV_STATE_DIR") or REPO_ROOT / ".dev")
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ".gitignore").write_text("*\n")
    env = service_env(state_dir)
    from honcho.environ import parse_procfile
    from honcho.manager import Manager
    from honcho.printer import Printer

    wanted = set(args.implementations)
    processes = {
        name: cmd
        for name, cmd in parse_procfile(args.procfile.read_text(encoding="utf-8")).processes.items()
        if implementation_of(name) in wanted
    }
    redis_proc = None
    server = redis_server_for(env["REDIS_URL"], state_dir)
    try:
        if server.answers():
            print(f"dev: using the Redis at {redact(env['REDIS_URL'])}", flush=True)
        else:
            redis_proc = start_redis(server, state_dir)
        print(f"dev: {urls(processes, env)}  Ctrl-C stops everything", flush=True)
        manager = Manager(Printer(sys.stdout))
        for name, cmd in processes.items():
            manager.add_process(name, cmd, env=env, cwd=str(REPO_ROOT))
        # Returns once every service has stopped: after Ctrl-C/SIGTERM (honcho
        # terminates them all), or as soon as one of them exits on its own.
        manager.loop()
        return int(manager.returncode or 0)
    except KeyboardInterrupt:
        return 130
    finally:
        if redis_proc is not None:
            # SIGTERM (Redis writes its AOF and exits), SIGKILL to its group after 10 s.
            redis_proc.stop(grace=10)
            print(f"dev: redis-server stopped (pid={redis_proc.pid})", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.dev", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
