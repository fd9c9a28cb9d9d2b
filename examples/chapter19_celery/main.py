"""Chapter 19's API on Celery: each route publishes its tasks to the broker.

uvicorn main:app --reload
"""

from fastapi import FastAPI
from pydantic import BaseModel

from tasks import send_notification, write_log

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@app.post("/items/", status_code=202)
def create_item(item: Item) -> dict[str, object]:
    task = write_log.delay(f"item created: {item.name}")
    return {"message": "item created", "item": item, "task_ids": [task.id]}


@app.post("/send-notification/{email}", status_code=202)
def notify(email: str) -> dict[str, object]:
    # Two tasks from one endpoint: any free worker process may take either.
    sent = send_notification.delay(email, "welcome")
    logged = write_log.delay(f"notification scheduled for {email}")
    return {"message": "notification will be sent by a worker", "task_ids": [sent.id, logged.id]}
