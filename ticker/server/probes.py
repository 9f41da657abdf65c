"""The event-loop lag probe: how late the loop wakes a task that asked to sleep.

Everything in a node runs on one event loop, so a long pass (a flush of many clients, a
slow scrape, a blocking call someone slipped in) delays every client at once. A task
that sleeps ``interval`` seconds and measures how much longer it took sees exactly that
delay, at the cost of one wake-up per interval.
"""

from __future__ import annotations

import asyncio

from ticker.server.stats import Buckets


async def probe_loop_lag(lag_s: Buckets, interval: float) -> None:
    """Observe the lag (seconds) once per ``interval``, until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        lag_s.observe(max(0.0, loop.time() - start - interval))
