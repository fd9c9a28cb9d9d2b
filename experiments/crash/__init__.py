"""``python -m experiments crash``: kill things mid-task and count what survives.

- ``scenarios``: what each scenario kills, with which settings, and what it expects (pure);
- ``runner``: one scenario end to end on a target, counted by ``shared.verdict``;
- ``broker_faults``: a worker cut off its broker, the broker's leader killed for good;
- ``outcome``: what one scenario measured, the record the report reads;
- ``report``: the table and the notes;
- ``cli``: the command line.
"""
