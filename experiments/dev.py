"""``make dev`` (``python -m experiments dev``): the six services as local processes.

The same services and ports as ``docker-compose.yml``, without Docker: a
redis-server of its own when nothing answers at ``REDIS_URL`` (only for a local
URL), then the Procfile's five Python services under honcho. Ctrl-C (SIGINT) or
SIGTERM stops them all: honcho sends SIGTERM to each service's process group and
SIGKILL five seconds later; the redis-server goes last.

Settings: the environment wins over ``.env``, which wins over ``.env.example``
(its values are the demo values compose uses). Runtime files (Redis's AOF,
beat's schedule, redis.log) go to ``--state-dir``, which ignores itself in git.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import redis
from honcho.environ import parse, parse_procfile
from honcho.manager import Manager
from honcho.printer import Printer

from experiments.processes import REPO_ROOT

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", ""}
DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--procfile", type=Path, default=REPO_ROOT / "Procfile")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="runtime files: Redis's AOF, beat's schedule (default: $DEV_STATE_DIR or .dev)",
    )


def service_env(state_dir: Path) -> dict[str, str]:
    """Every service's environment: .env.example < .env < the process environment."""
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


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(url: str, state_dir: Path) -> subprocess.Popen[bytes]:
    """A redis-server for ``url`` (local only), AOF on as in compose; waits for PING."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or (parts.hostname or "") not in LOCAL_HOSTS:
        raise SystemExit(f"nothing answers at REDIS_URL={url} and it is not local: start it first")
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            f"nothing answers at REDIS_URL={url} and redis-server is not on PATH: "
            "apt-get install redis-server (or brew install redis), or point REDIS_URL at one"
        )
    port = parts.port or 6379
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(state_dir)]
    argv += ["--appendonly", "yes", "--save", ""]
    if parts.password:
        argv += ["--requirepass", parts.password]
    log = (state_dir / "redis.log").open("ab")
    # Its own session: Ctrl-C reaches honcho, not Redis, which stops after the services.
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + 15
    while not redis_answers(url):
        if proc.poll() is not None:
            raise SystemExit(f"redis-server exited ({proc.returncode}): see {state_dir}/redis.log")
        if time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"redis-server did not answer PING on port {port} within 15s")
        time.sleep(0.1)
    print(f"dev: started redis-server on 127.0.0.1:{port} (pid={proc.pid})", flush=True)
    return proc


def stop(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM (Redis writes its AOF and exits), SIGKILL after ``grace``; by PID only."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


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
    processes = parse_procfile(args.procfile.read_text(encoding="utf-8")).processes
    redis_proc = None
    try:
        if redis_answers(env["REDIS_URL"]):
            print(f"dev: using the Redis at {env['REDIS_URL']}", flush=True)
        else:
            redis_proc = start_redis(env["REDIS_URL"], state_dir)
        print(
            "dev: http://127.0.0.1:{}/docs (BackgroundTasks)  http://127.0.0.1:{}/docs (Celery)  "
            "http://127.0.0.1:{}/ (Flower, user {})  Ctrl-C stops everything".format(
                env.get("BG_API_PORT", "8001"),
                env.get("CELERY_API_PORT", "8002"),
                env.get("FLOWER_PORT", "5555"),
                env.get("FLOWER_USER", "admin"),
            ),
            flush=True,
        )
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
            stop(redis_proc)
            print(f"dev: redis-server stopped (pid={redis_proc.pid})", flush=True)
