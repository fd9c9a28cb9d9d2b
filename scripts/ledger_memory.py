"""Redis's memory under steady traffic, with and without the ledger's retention.

    .venv/bin/python scripts/ledger_memory.py --retention 30 --duration 180 --rate 40
    .venv/bin/python scripts/ledger_memory.py --retention 0 --duration 180 --rate 40

A local stack (redis-server, both APIs, a Celery worker) on free ports; items
posted to both APIs in turn at ``--rate`` a second for ``--duration`` seconds;
``INFO memory``'s used_memory and the key count sampled every ``--every`` seconds
before, during and for ``--after`` seconds after the traffic. One JSON object on
stdout. ``--retention 0`` keeps every record (the ledger before it could forget).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.local import LocalStack

logger = logging.getLogger("ledger_memory")


def sample(r: redis.Redis, phase: str, t0: float, sent: int) -> dict[str, Any]:
    info = r.info("memory")
    return {
        "t": round(time.time() - t0, 1),
        "phase": phase,
        "used_memory": int(info["used_memory"]),
        "keys": int(r.dbsize()),
        "sent": sent,
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retention", type=float, default=30.0)
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--after", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-memory-") as workdir:
        stack = LocalStack(
            Path(workdir),
            ledger_retention_seconds=args.retention,
            # A task left unfinished would be kept this long: the same bound here.
            ledger_unfinished_retention_seconds=args.retention,
            notification_delay_seconds=0,
        )
        try:
            stack.start_all(("redis", "bg-api", "celery-api", "worker"))
            r = redis.Redis.from_url(stack.settings.redis_url, socket_timeout=5)
            urls = [f"{stack.url('bg')}/items/", f"{stack.url('celery')}/items/"]
            samples, sent, refused = [], 0, 0
            t0 = time.time()
            samples.append(sample(r, "before", t0, sent))
            next_sample = time.monotonic() + args.every
            start = time.monotonic()
            with httpx.Client(timeout=10) as client:
                while (elapsed := time.monotonic() - start) < args.duration:
                    due = start + sent / args.rate
                    if (wait := due - time.monotonic()) > 0:
                        time.sleep(wait)
                    got = client.post(urls[sent % 2], json={"name": "m", "price": 1})
                    refused += got.status_code != 202
                    sent += 1
                    if time.monotonic() >= next_sample:
                        samples.append(sample(r, "during", t0, sent))
                        next_sample += args.every
            end = time.monotonic() + args.after
            while time.monotonic() < end:
                time.sleep(min(args.every, max(end - time.monotonic(), 0)))
                samples.append(sample(r, "after", t0, sent))
            during = [s["used_memory"] for s in samples if s["phase"] == "during"]
            report = {
                "retention_seconds": args.retention,
                "rate": args.rate,
                "duration_s": args.duration,
                "sent": sent,
                "refused": refused,
                "achieved_rate": round(sent / elapsed, 1),
                "used_memory_before": samples[0]["used_memory"],
                "used_memory_peak_during": max(during) if during else None,
                "used_memory_end_of_traffic": during[-1] if during else None,
                "used_memory_after": samples[-1]["used_memory"],
                "keys_after": samples[-1]["keys"],
                "samples": samples,
            }
            json.dump(report, sys.stdout, indent=1)
            sys.stdout.write("\n")
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
