"""The feed process of ``ticker serve --workers N``: the feeds, the numbering bus, the workers.

This process serves no client. It runs the feeds into the one bus that stamps ``q`` and
``t`` under the node's epoch, and ``FanOut`` hands each batch to every worker. It starts
N worker processes (the same command line, marked by ``WORKER_ENV``), each given its own
listening sockets, bound here on the same port with ``SO_REUSEPORT`` so the kernel
spreads connections over them, and its end of a Unix socket pair. It watches them: a
worker that dies (or is cut off for not reading) is started again with capped, jittered
backoff; its listening sockets stay open here meanwhile, so connections that arrive then
wait for it instead of being refused. SIGTERM or SIGINT stops every worker (they close
their clients with 1001) and kills what is left after ``STOP_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from feeds.base import FeedAdapter
from ticker.core.backoff import Backoff
from ticker.core.bus import Bus
from ticker.server.books import BookService
from ticker.server.delayed import DelayPump
from ticker.server.fanout import FanOut, WorkerLink
from ticker.server.metrics import Metrics, NodeCollector
from ticker.server.node import supervise
from ticker.server.settings import Settings, url_host
from ticker.server.stats import Stats

log = logging.getLogger("ticker.workers")

WORKER_ENV = "TICKER_WORKER_OF"
"""Set in a worker's environment: ``INDEX:PIPE_FD:LISTEN_FD[,...]:PRIVATE_FD:PORT[,...]``
(the private loopback ports of every worker, in order: ``ticker/server/owners.py``)."""
STOP_S = 4.0
"""How long workers get to close their clients after SIGTERM before they are killed."""
RESTART_BACKOFF_S = (0.5, 10.0)
"""A dead worker's first restart delay and the cap it doubles up to."""
STEADY_S = 10.0
"""A worker that ran this long before it died is restarted after the first delay again."""


class Worker:
    """One worker slot: its listening sockets (kept across restarts) and its process."""

    def __init__(self, index: int, sockets: Sequence[socket.socket]) -> None:
        self.index = index
        self.sockets = list(sockets)
        self.private = socket.create_server(("127.0.0.1", 0))
        """Where the other workers pass it its sessions' requests."""
        self.process: asyncio.subprocess.Process | None = None
        self.link: WorkerLink | None = None
        self.restarts = 0
        self.backoff = Backoff(*RESTART_BACKOFF_S)


class Workers:
    """Starts the worker processes, restarts the ones that die, stops them all."""

    def __init__(
        self, command: Sequence[str], fanout: FanOut, groups: Sequence[Sequence[socket.socket]]
    ) -> None:
        self.command = list(command)
        self.fanout = fanout
        self.slots = [Worker(i, group) for i, group in enumerate(groups)]
        self.stopping = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start every worker and watch each in a task of its own."""
        for slot in self.slots:
            await self._try_spawn(slot)
        self._tasks = [
            asyncio.create_task(self._watch(slot), name=f"worker:{slot.index}")
            for slot in self.slots
        ]

    async def _spawn(self, slot: Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fds = [sock.fileno() for sock in slot.sockets]
        ports = ",".join(str(s.private.getsockname()[1]) for s in self.slots)
        fds = ",".join(map(str, listen_fds))
        marker = f"{slot.index}:{theirs.fileno()}:{fds}:{slot.private.fileno()}:{ports}"
        try:
            slot.process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *listen_fds, slot.private.fileno()),
                env={**os.environ, WORKER_ENV: marker},
            )
        finally:
            theirs.close()
        slot.link = await self.fanout.join(ours, slot.index)
        log.info("worker %d started (pid %d)", slot.index, slot.process.pid)

    async def _watch(self, slot: Worker) -> None:
        """Wait for the worker to die or fall behind; start it again unless stopping."""
        while True:
            started = time.monotonic()
            why = await self._gone(slot) if slot.process is not None else "could not start"
            if self.stopping:
                return
            if time.monotonic() - started >= STEADY_S:
                slot.backoff.reset()
            delay = slot.backoff.delay()
            log.error(
                "worker %d %s; restarting it in %.1f s (only its clients reconnect)",
                slot.index,
                why,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if self.stopping:
                return
            slot.restarts += 1
            await self._try_spawn(slot)

    async def _try_spawn(self, slot: Worker) -> None:
        """Start the worker; one that cannot be started is tried again by its watch."""
        try:
            await self._spawn(slot)
        except OSError as exc:
            slot.process = None
            log.error("worker %d could not be started: %s", slot.index, exc)

    async def _gone(self, slot: Worker) -> str:
        """Until the worker has exited (killed first if its link is lost, unless it is
        stopping: then it closes its clients in its own time); what happened to it."""
        process, link = slot.process, slot.link
        assert process is not None and link is not None
        exited = asyncio.ensure_future(process.wait())
        ends: list[asyncio.Future[Any]] = [exited, link.lost]
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done() and not self.stopping:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # cut off for not reading, or its link broke
        code = await exited
        link.close()
        if link.cut:
            return f"(pid {process.pid}) was cut off: it fell behind the feed"
        return f"(pid {process.pid}) exited with {code}"

    async def stop(self) -> None:
        """SIGTERM to every worker; SIGKILL to what is still running after ``STOP_S``."""
        self.stopping = True
        self._wake.set()
        running = [s.process for s in self.slots if s.process and s.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_S)
            for process in running:
                if process.returncode is None:
                    log.warning("worker (pid %d) did not stop in time: killed", process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late, timeout=1.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class WorkersCollector(Collector):
    """The feed process's own figures: workers running and restarted, the fan-out."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        """Read now from the slots and the fan-out."""
        workers, fanout = self.workers, self.workers.fanout
        running = GaugeMetricFamily(
            "ticker_workers_running", "Worker processes linked to the feed process now."
        )
        running.add_metric([], len(fanout.links))
        yield running
        restarts = CounterMetricFamily(
            "ticker_worker_restarts",
            "Times a worker died and was started again.",
            labels=["worker"],
        )
        behind = GaugeMetricFamily(
            "ticker_worker_behind_bytes",
            "Bytes of batches written to a worker's socket that it has not read yet.",
            labels=["worker"],
        )
        for slot in workers.slots:
            restarts.add_metric([str(slot.index)], slot.restarts)
            transport = slot.link.transport if slot.link is not None else None
            behind.add_metric(
                [str(slot.index)], transport.get_write_buffer_size() if transport else 0
            )
        yield restarts
        yield behind
        yield CounterMetricFamily(
            "ticker_fanout_batches",
            "Batches the feed process wrote to its workers.",
            value=fanout.batches,
        )
        yield CounterMetricFamily(
            "ticker_fanout_bytes",
            "Bytes of batch frames the feed process built (each written to every worker).",
            value=fanout.bytes,
        )


async def _metrics_site(
    fanout: FanOut, settings: Settings, sockets: Sequence[socket.socket]
) -> web.AppRunner:
    """``/metrics`` of the whole node on ``--metrics-port``, served by this process."""

    async def metrics(request: web.Request) -> web.Response:
        body = await fanout.gather()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    host = settings.metrics_host or settings.host
    log.info(
        "metrics of every worker on http://%s:%s/metrics", url_host(host), settings.metrics_port
    )
    return runner


async def serve(
    settings: Settings,
    bus: Bus,
    feeds: Sequence[FeedAdapter],
    command: Sequence[str],
    groups: Sequence[Sequence[socket.socket]],
    metrics_sockets: Sequence[socket.socket],
) -> None:
    """Run the feed process until SIGTERM or SIGINT, then stop everything."""
    books = None  # the feeds' books: numbered here, applied the same by every worker
    if settings.book_interval_s:
        books = BookService(interval_s=settings.book_interval_s, status=bus.status.set)
    supervisors = supervise(feeds, bus, settings, books)
    metrics = Metrics()
    stats = Stats(metrics=settings.metrics)
    delays = DelayPump(bus, settings.delay_max_bytes)
    metrics.registry.register(NodeCollector(stats, bus, supervisors, delays, lambda: ()))
    ttl = settings.publish.idempotency_ttl_s if settings.publish is not None else 600.0
    fanout = FanOut(bus, supervisors, metrics.registry, ttl, books)
    workers = Workers(command, fanout, groups)
    metrics.registry.register(WorkersCollector(workers))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        workers.stopping = True  # before any worker's exit is seen: none is restarted
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    await workers.start()
    tasks = [asyncio.create_task(s.run(), name=f"feed:{s.adapter.name}") for s in supervisors]
    runner = await _metrics_site(fanout, settings, metrics_sockets) if metrics_sockets else None
    log.info("%d workers serving on port %d", len(groups), settings.port)
    try:
        await stop.wait()
    finally:
        log.info("stopping %d workers", len(groups))
        await workers.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if books is not None:
            await books.stop()
        await fanout.close()
        if runner is not None:
            await runner.cleanup()
