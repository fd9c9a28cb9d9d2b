"""Starting, stopping and observing a stack: what the tests and the experiments share.

- ``procs``: one child process in a process group of its own, bounded waits.
- ``ports``: free TCP ports below the kernel's ephemeral range, a slice per xdist worker.
- ``servers``: a redis-server (and a rabbitmq-server) of its own on free ports in a directory.
- ``target``: the ``Target`` interface every caller drives, whatever runs the stack.
- ``local``: ``LocalStack``, the stack as local processes (the default target); its
  broker (Redis, a RabbitMQ, a Sentinel group or a cluster) in ``local_broker``, the
  last two from ``ha``; a partition's proxy in ``proxy``.
- ``compose``: every ``docker compose`` command, and the parsers of their answers;
  ``compose_target``: ``ComposeTarget``, a running compose project driven as a target.
- ``stacks``: ``open_stack``, either target from one description.
- ``observe``: what a target shows (ledger, runners, effects) turned into ``shared.verdict`` input.
- ``dev``: ``make dev``, the Procfile's services under honcho, for a person at a terminal.
"""
