"""The RQ implementation: a FastAPI app that hands its work to RQ
(``queue.enqueue(<function>, ..., job_id=<the ledger's id>)``), and ``rq worker
--with-scheduler`` that runs it, one job at a time, each in a forked work horse.

Run: ``uvicorn rq_app.main:app`` and ``rq worker --with-scheduler -c rq_app.cli_config
-w rq_app.worker.RecordingWorker -S json rq`` (the Procfile's ``rq-*`` lines). RQ never
hands a started job out again: a job whose worker died is moved to the
FailedJobRegistry (abandoned, requeued by hand), or run again while its ``Retry``
has retries left.
"""
