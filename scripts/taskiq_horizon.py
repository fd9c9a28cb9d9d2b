"""How long a SIGKILLed taskiq worker's task waits before another worker runs it.

    .venv/bin/python scripts/taskiq_horizon.py      # stock: idle 600 s, claims on traffic
    .venv/bin/python scripts/taskiq_horizon.py --idle-timeout 15 --claim-when-idle

A local stack (redis-server, taskiq-api, taskiq-worker) on free ports. One
notification; its worker SIGKILLed while it runs and started again at once; then
an item every ``--traffic-every`` seconds (0: none) until the notification
succeeds or ``--deadline`` passes. One JSON object on stdout: when it was killed,
when it ran again, and the wait.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.local import LocalStack

logger = logging.getLogger("taskiq_horizon")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-timeout", type=float, default=600.0)
    parser.add_argument("--claim-when-idle", action="store_true")
    parser.add_argument("--traffic-every", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=900.0)
    parser.add_argument("--delay", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskiq-horizon-") as workdir:
        stack = LocalStack(
            Path(workdir),
            notification_delay_seconds=args.delay,
            taskiq_idle_timeout_seconds=args.idle_timeout,
            taskiq_claim_when_idle=args.claim_when_idle,
        )
        try:
            stack.start_all(("redis", "taskiq-api", "taskiq-worker"))
            url = stack.url("taskiq")
            got = httpx.post(f"{url}/send-notification/h@example.com", timeout=10)
            task_id = got.json()["task_ids"][0]
            ledger = stack.ledger()
            deadline = time.monotonic() + 60
            while (record := ledger.records_of([task_id]).get(task_id)) is None or (
                record.state != "running"
            ):
                if time.monotonic() > deadline:
                    raise SystemExit("the notification never ran")
                time.sleep(0.05)
            stack.kill("taskiq-worker")
            killed_at = time.time()
            stack.start("taskiq-worker")
            sent, next_item = 0, time.monotonic()
            end = time.monotonic() + args.deadline
            while time.monotonic() < end:
                record = ledger.records_of([task_id]).get(task_id)
                if record is not None and record.state == "succeeded":
                    break
                if args.traffic_every > 0 and time.monotonic() >= next_item:
                    httpx.post(f"{url}/items/", json={"name": "t", "price": 1}, timeout=10)
                    sent += 1
                    next_item += args.traffic_every
                time.sleep(0.5)
            record = ledger.records_of([task_id]).get(task_id)
            runs = record.runs if record else []
            again = runs[1].started_at if len(runs) > 1 else None
            report = {
                "idle_timeout_s": args.idle_timeout,
                "claim_when_idle": args.claim_when_idle,
                "traffic_every_s": args.traffic_every,
                "state": record.state if record else None,
                "attempts": record.attempts if record else None,
                "killed_at": killed_at,
                "ran_again_after_s": round(again - killed_at, 1) if again else None,
                "items_sent": sent,
            }
            json.dump(report, sys.stdout, indent=1)
            sys.stdout.write("\n")
        finally:
            stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
