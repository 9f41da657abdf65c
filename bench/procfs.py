"""What the harness reads from /proc about a server: CPU time and resident memory.

Read from outside the server so that every server (Python or node) is measured the same
way, and nothing in the servers has to cooperate.
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of every thread of ``pid``, in seconds (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float | None:
    """``cpu_seconds`` of ``pid`` and every process below it (a server of several
    processes, ``ticker serve --workers N``: its workers); None once ``pid`` is gone."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(tree_cpu_seconds(child) or 0.0 for child in children(pid))


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (of each of its threads)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return found


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def core_jiffies(core: int) -> tuple[int, int, int] | None:
    """(busy, steal, total) jiffies of one CPU from /proc/stat: with a process's own CPU
    time, they show whether something else ran on its core (a shared machine's noise)."""
    prefix = f"cpu{core} ".encode()
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(prefix):
                    v = [int(x) for x in line.split()[1:9]]
                    user, nice, system, idle, iowait, irq, softirq, steal = v
                    busy = user + nice + system + irq + softirq
                    return busy, steal, busy + steal + idle + iowait
    except (OSError, ValueError):
        return None
    return None
