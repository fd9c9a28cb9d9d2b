"""The lab: a web app that runs the comparison live, one column per implementation.

Each column is an implementation declared in ``shared.services``: its processes, the
actions on them (kill, stop, restart, make notifications fail), its counters, its
timeline and its task table; the page chooses which columns it shows.

- ``state``: the lab itself: one target, the actions, the poll that turns what the
  target shows into a snapshot (every task's verdict from ``shared.verdict``);
- ``views``: how the page shows a task, a column's counters and a redelivery rule;
- ``app``: the web app: the page, the actions, the snapshots over server-sent events;
- ``cli``: ``python -m lab`` (also ``python -m experiments lab``, ``make lab``);
- ``static/``: the page (no build step, no framework).
"""
