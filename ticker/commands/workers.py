"""``ticker serve --workers N``: the flag, the flags it cannot go with, and a worker's start.

The feed process (``ticker/server/primary.py``) starts each worker with its own command
line and ``WORKER_ENV`` naming the descriptors it inherited: its end of the Unix socket
to the feed process and its listening sockets. A worker is then a node like any other,
whose broker is that socket (``ticker/cluster/workers.py``).
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace

from aiohttp import web

from ticker.cluster.workers import WorkerBroker
from ticker.commands.argtypes import positive
from ticker.commands.envparser import EnvParser
from ticker.server.owners import Owners
from ticker.server.primary import WORKER_ENV
from ticker.server.settings import Settings

WORKER_HEADER = "Ticker-Worker"
"""On every response of a worker: which one answered (``/readyz`` says its pid too)."""

NOT_WITH = (
    ("redis", "a node of a cluster is one process per node for now: drop --workers"),
    ("record", "record as a client instead (ticker record URL --out FILE), or drop --workers"),
)
"""Flags ``--workers`` above 1 refuses, and what to do instead."""


def add_workers_option(parser: EnvParser) -> None:
    """``--workers`` (``TICKER_WORKERS``) on ``serve``."""
    parser.add_option(
        "--workers",
        type=positive(int, "number of workers (1 or more)"),
        default=1,
        help="processes serving clients on --port (SO_REUSEPORT), all fed by one feed "
        "process: use the machine's cores (docs/scaling.md#workers-every-core-of-one-machine)",
    )


def workers_agree(args: argparse.Namespace, parser: EnvParser) -> str | None:
    """``--workers`` above 1 with a flag it cannot serve yet is refused, not ignored."""
    if args.workers == 1:
        return None
    workers = parser.given(args, "workers")
    for dest, instead in NOT_WITH:
        flag = parser.given(args, dest)
        if flag:
            return f"{workers} above 1 cannot go with {flag}: {instead}"
    return None


@dataclass(frozen=True, slots=True)
class WorkerOf:
    """This process is worker ``index`` of a feed process: the descriptors it inherited."""

    index: int
    pipe_fd: int
    listen_fds: tuple[int, ...]
    private_fd: int
    ports: tuple[int, ...]
    """Every worker's private port, by index."""

    def settings(self, settings: Settings) -> Settings:
        """The worker's settings: its session ids start with its index."""
        return replace(settings, session_prefix=f"{self.index}-")

    def owners(self, settings: Settings, *, tls: bool) -> Owners:
        """Where this worker passes the requests for the other workers' sessions."""
        return Owners(self.index, self.ports, settings.poll_hold_s, tls=tls)

    def sockets(self) -> list[socket.socket]:
        """The listening sockets the feed process bound for this worker, its private one
        last."""
        return [socket.socket(fileno=fd) for fd in (*self.listen_fds, self.private_fd)]

    def broker(self) -> WorkerBroker:
        """The node's broker: the socket to the feed process."""
        return WorkerBroker(socket.socket(fileno=self.pipe_fd), self.index)

    def mark(self, app: web.Application) -> None:
        """Every response says which worker answered (``Ticker-Worker``)."""
        index = str(self.index)

        async def mark(request: web.Request, response: web.StreamResponse) -> None:
            response.headers[WORKER_HEADER] = index

        app.on_response_prepare.append(mark)


def worker_of(environ: Mapping[str, str] = os.environ) -> WorkerOf | None:
    """The worker this process is, or None (the feed process, or a single process)."""
    marker = environ.get(WORKER_ENV)
    if marker is None:
        return None
    index, pipe_fd, listen_fds, private_fd, ports = marker.split(":")
    return WorkerOf(
        int(index),
        int(pipe_fd),
        tuple(int(fd) for fd in listen_fds.split(",")),
        int(private_fd),
        tuple(int(port) for port in ports.split(",")),
    )
