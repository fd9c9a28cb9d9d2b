"""``python -m experiments crash``: kill things mid-task and count what survives.

- ``scenarios``: what each scenario kills, with which settings, and what it expects (pure);
- ``runner``: one scenario end to end on a target, counted by ``shared.verdict``;
- ``broker_faults``: a worker cut off its broker, the broker's leader killed for good;
- ``outcome``: what one scenario measured, the record the report reads;
- ``cli``: the command line.

Its table and notes are drawn by ``experiments.reporting.crash``, with every other report.
"""
