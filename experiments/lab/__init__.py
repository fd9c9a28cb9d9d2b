"""The lab: one page that runs the comparison live, BackgroundTasks | Celery.

- ``state``: the lab itself: one target, the actions, the poll that turns what the
  target shows into a snapshot (every task's verdict from ``shared.verdict``);
- ``app``: the web app: the page, the actions, the snapshots over server-sent events;
- ``cli``: ``python -m experiments lab``;
- ``static/``: the page (no build step, no framework).
"""
