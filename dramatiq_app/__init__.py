"""The dramatiq implementation: a FastAPI app that hands its work to dramatiq
(``broker.enqueue(<actor>.message(...))``, the ledger's task id as the message id), a
worker that runs it (``dramatiq dramatiq_app.tasks``) and, since dramatiq has no
scheduler of its own, APScheduler sending the periodic task
(``python -m dramatiq_app.scheduler``, as dramatiq's docs recommend).

The broker is Redis or RabbitMQ, as ``DRAMATIQ_BROKER_URL``'s scheme says (empty:
``REDIS_URL``). Both acknowledge a message after its actor ran: a worker killed
mid-task leaves it to come back (RabbitMQ: when its connection closes; Redis: once
its broker heartbeat is ``DRAMATIQ_HEARTBEAT_TIMEOUT_SECONDS`` old, at the next
maintenance pass).
"""
