"""The taskiq implementation: a FastAPI app that hands its work to taskiq
(``await <task>.kicker().with_task_id(...).kiq(...)``), a worker that runs it, and
taskiq's scheduler for the periodic task and the retries' delays.

Run: ``uvicorn taskiq_app.main:app``, ``taskiq worker taskiq_app.worker:broker
taskiq_app.tasks`` and ``taskiq scheduler taskiq_app.worker:scheduler taskiq_app.tasks``
(the Procfile's ``taskiq-*`` lines). The broker is Redis (taskiq-redis):
``TASKIQ_BROKER`` picks the stream broker (acknowledged after the task ran) or the
quick start's list broker (popped and gone).
"""
