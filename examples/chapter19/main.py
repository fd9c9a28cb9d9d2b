"""Chapter 19's program: work that runs after the response, with BackgroundTasks.

uvicorn main:app --reload
"""

import time

from fastapi import BackgroundTasks, FastAPI
from pydantic import BaseModel

app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


def write_log(message: str) -> None:
    with open("log.txt", mode="a", encoding="utf-8") as log:
        log.write(f"{message}\n")


def send_notification(email: str, message: str) -> None:
    time.sleep(2)  # a slow mail server: the client does not wait for it
    write_log(f"notification sent to {email}: {message}")


@app.post("/items/")
async def create_item(item: Item, background_tasks: BackgroundTasks) -> dict[str, object]:
    background_tasks.add_task(write_log, f"item created: {item.name}")
    return {"message": "item created", "item": item}


@app.post("/send-notification/{email}")
async def notify(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    # Two tasks from one endpoint: they run one after the other, in this order.
    background_tasks.add_task(send_notification, email, "welcome")
    background_tasks.add_task(write_log, f"notification scheduled for {email}")
    return {"message": "notification will be sent in the background"}
