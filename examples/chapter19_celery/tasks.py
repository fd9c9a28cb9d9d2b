"""Chapter 19's tasks on Celery: a broker between the API and a worker process.

celery -A tasks worker --beat --loglevel=INFO
"""

import os
import time

from celery import Celery

app = Celery("chapter19", broker=os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],  # never pickle: a message would be code
    task_acks_late=True,  # acknowledged when done: a killed worker's task comes back
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    beat_schedule={  # Beat: one periodic task, every BEAT_SECONDS (30)
        "heartbeat": {
            "task": "tasks.write_log",
            "schedule": float(os.environ.get("BEAT_SECONDS", "30")),
            "args": ["beat heartbeat"],
        }
    },
)


@app.task
def write_log(message: str) -> None:
    with open("log.txt", mode="a", encoding="utf-8") as log:
        log.write(f"{message}\n")


@app.task(bind=True, max_retries=3)
def send_notification(self, email: str, message: str) -> None:
    time.sleep(2)  # a slow mail server
    if self.request.retries < int(os.environ.get("FAIL_FIRST", "0")):
        raise self.retry(countdown=1)  # it timed out: try again in a second, at most 3 times
    write_log(f"notification sent to {email}: {message}")
