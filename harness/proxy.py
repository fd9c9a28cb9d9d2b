"""A TCP forwarder between a worker and its broker, that can be frozen: a partition.

``python -m harness.proxy --listen PORT --target HOST:PORT`` forwards every
connection made to PORT to the target, byte for byte (the standard library only:
the compose stack runs this file as it is, ``docker-compose.partition.yml``).
``Partition`` runs one in a process group of its own; ``cut()`` stops it
(SIGSTOP) and ``heal()`` lets it go on (SIGCONT). While it is stopped, every
connection through it stays open and nothing crosses it, either way: from the
worker's side and the broker's, the other end has gone silent without closing
anything, which is what a network partition looks like to an application. (The
one difference: the stopped proxy's kernel still acknowledges the TCP segments
sent to it, so no TCP retransmission timeout fires; on Linux that one takes about
15 minutes by default, longer than any cut measured here, and Celery, kombu and
RabbitMQ detect a dead peer by their own timeouts and heartbeats, not by it.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(listen: int, host: str, port: int, bind: str = "127.0.0.1") -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(host, port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    server = await asyncio.start_server(handle, bind, listen)
    async with server:
        await server.serve_forever()


class Partition:
    """A proxy on a free port to ``host:port``, in ``directory``: ``address`` is where
    the cut-off side connects; ``cut`` and ``heal`` freeze and release it."""

    def __init__(self, directory: Path, host: str, port: int) -> None:
        from harness.ports import free_port
        from harness.procs import Proc

        self.port = free_port()
        self.target = (host, port)
        argv = [sys.executable, "-m", "harness.proxy", "--listen", str(self.port),
                "--target", f"{host}:{port}"]  # fmt: skip
        self.proc = Proc(f"proxy-{port}", argv, {}, directory / f"proxy-{port}.out")
        self.cut_at: float | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Partition:
        from harness.procs import wait_until

        self.proc.start()
        wait_until(self._listening, 10, f"the proxy on {self.port} to listen", 0.05)
        return self

    def _listening(self) -> bool:
        import socket

        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def cut(self) -> None:
        self.proc.send(signal.SIGSTOP, group=True)

    def heal(self) -> None:
        self.proc.send(signal.SIGCONT, group=True)

    def stop(self) -> None:
        self.heal()  # a stopped process would not see the SIGTERM
        self.proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.proxy")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--bind", default="127.0.0.1", help="the address to listen on")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, host, int(port), args.bind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
